"""Domain geometries: what a surrogate sees of a point, how far apart grid points are, how much area each holds.

A case names its geometry (:data:`GEOMETRIES`); nothing else asks which one it is.

- ``plane``: coordinates ``(x, y)`` scaled to [-1, 1] (the LDNet's xi, paper eq. 15), distances in grid
  units (wrapping around where the domain is periodic), equal cell areas.
- ``sphere``: ``(lon, lat)`` in degrees seen as the unit vector (cos lat cos lon, cos lat sin lon, sin lat),
  so every feature of it is periodic in longitude and regular at the poles; great-circle distances in
  units of the equatorial grid spacing (LETKF radii keep their meaning in grid points); cell areas
  proportional to the Gauss-Legendre weights of the rows (~ cos lat), which area-weighted metrics use.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError


def affine(v, lo, hi, inverse: bool = False):
    """[lo, hi] <-> [-1, 1] per last-axis component (NumPy or torch); a constant component (lo == hi) maps to 0."""
    lo_a, hi_a = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    half = np.where(hi_a > lo_a, 0.5 * (hi_a - lo_a), 1.0)
    mid = 0.5 * (hi_a + lo_a)
    if type(v).__module__.startswith("torch"):
        import torch

        half, mid = (torch.tensor(a, dtype=v.dtype, device=v.device) for a in (half, mid))
    else:
        v = np.asarray(v)
        half, mid = half.astype(v.dtype, copy=False), mid.astype(v.dtype, copy=False)
    return v * half + mid if inverse else (v - mid) / half


class Plane:
    """A rectangle of grid points (optionally periodic in both axes)."""

    name = "plane"
    dim = 2
    weighting = "all weigh the same in every metric"

    def features(self, points, lo, hi):
        """Physical ``(..., 2)`` points ``(x, y)`` -> [-1, 1]^2 by the grid extent ``lo``, ``hi``."""
        return affine(points, lo, hi)

    def distances(self, a, b, shape, period=None) -> np.ndarray:
        """Euclidean distances ``(len(a), len(b))`` between grid-index rows; periodic per axis if ``period``."""
        diff = np.abs(np.asarray(a, dtype=float)[:, None, :] - np.asarray(b, dtype=float)[None, :, :])
        if period is not None:
            diff = np.minimum(diff, np.asarray(period, dtype=float) - diff)
        return np.sqrt((diff**2).sum(axis=-1))

    def cell_weights(self, shape) -> np.ndarray:
        """Relative cell areas ``(ny, nx)``, mean 1."""
        return np.ones(shape)


def gauss_latitudes(nlat: int) -> np.ndarray:
    """Latitudes [rad] of the Gauss-Legendre rows, north to south."""
    return np.arcsin(-np.polynomial.legendre.leggauss(nlat)[0])


class Sphere:
    """A Gauss-Legendre latitude-longitude grid: rows north to south, columns lon_i = 2 pi i / nx."""

    name = "sphere"
    dim = 3
    weighting = ("each weighted by its cell's area (Gauss-Legendre weight, ~ cos latitude) in rel-RMSE, "
                 "spread/error and CRPS")

    def features(self, points, lo=None, hi=None):
        """``(..., 2)`` points ``(lon, lat)`` in degrees -> ``(..., 3)`` unit vectors (NumPy or torch)."""
        if type(points).__module__.startswith("torch"):
            import torch

            cos, sin, stack = torch.cos, torch.sin, torch.stack
        else:
            points, cos, sin, stack = np.asarray(points, dtype=float), np.cos, np.sin, np.stack
        lon, lat = points[..., 0] * (math.pi / 180), points[..., 1] * (math.pi / 180)
        return stack([cos(lat) * cos(lon), cos(lat) * sin(lon), sin(lat)], -1)

    def distances(self, a, b, shape, period=None) -> np.ndarray:
        """Great-circle distances ``(len(a), len(b))`` between grid-index rows (row, column), in equatorial grid
        spacings."""
        ny, nx = shape
        lat = gauss_latitudes(ny)

        def unit(rows):
            rows = np.asarray(rows, dtype=float)
            points = np.stack([rows[:, 1] * 360.0 / nx, np.degrees(lat[rows[:, 0].astype(int)])], axis=1)
            return self.features(points)

        cosine = np.clip(unit(a) @ unit(b).T, -1.0, 1.0)
        return np.arccos(cosine) / (2 * math.pi / nx)

    def cell_weights(self, shape) -> np.ndarray:
        """Relative cell areas ``(ny, nx)`` (the Gauss-Legendre weights of the rows), mean 1."""
        ny, nx = shape
        w = np.polynomial.legendre.leggauss(ny)[1]
        return np.broadcast_to((w / w.mean())[:, None], (ny, nx)).copy()


GEOMETRIES = {"plane": Plane(), "sphere": Sphere()}


def get(name: str):
    """The geometry called ``name``."""
    if name not in GEOMETRIES:
        raise ConfigError(f"unknown geometry {name!r}; choose one of {', '.join(GEOMETRIES)}")
    return GEOMETRIES[name]

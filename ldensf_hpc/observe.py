"""Observation operators and the observation noise model.

Every operator here observes a subset of state components, so ``H`` is a 0/1
selection matrix: ``apply`` picks components, ``adjoint`` (= ``H^T``) scatters
back, as needed by the likelihood score ``H^T R^-1 (y - H x)``.

State layout: one member has shape ``(F, *spatial)`` (fields first, e.g.
``(F, ny, nx)``) or ``(d,)`` for a single 1-D field such as Lorenz-96; members
are flattened to ``d = F * prod(spatial)`` components, component
``v = f * n_points + p`` being field ``f`` at spatial location ``p``.
Coordinates are grid indices (row, column, ...) as floats; ``xi`` rescales them
to [-1, 1] for encoders. Operators are chosen by name from :data:`OPERATORS`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import geometry
from .backend import array_module
from .errors import ConfigError, InputError


@dataclass(frozen=True, eq=False)
class ObservationOperator:
    """Observe the state components ``index`` of a member of shape ``shape``.

    Parameters
    ----------
    name : operator kind ("grid", "points", "full").
    shape : shape of one member, ``(d,)`` or ``(F, *spatial)``.
    index : ``(m,)`` distinct flat component indices, in ``[0, d)``.
    periodic : whether the spatial domain wraps around (Lorenz-96, Kolmogorov);
        used for distances in localisation.
    geometry : the domain's geometry (:mod:`ldensf_hpc.geometry`): "plane", or "sphere" for a
        latitude-longitude grid (great-circle distances).
    """

    name: str
    shape: tuple[int, ...]
    index: np.ndarray
    periodic: bool = False
    geometry: str = "plane"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        index = np.asarray(self.index)
        if index.ndim != 1 or index.size == 0 or not np.issubdtype(index.dtype, np.integer):
            raise InputError(f"observation index must be a non-empty 1-D integer array, got {index.dtype} {index.shape}")
        if index.min() < 0 or index.max() >= self.d:
            raise InputError(f"observation index out of range [0, {self.d}) for member shape {self.shape}")
        if np.unique(index).size != index.size:
            raise InputError("observation index repeats a state component")
        object.__setattr__(self, "index", index.astype(np.int64))

    @property
    def spatial(self) -> tuple[int, ...]:
        """Spatial grid shape of one field."""
        return self.shape if len(self.shape) == 1 else self.shape[1:]

    @property
    def n_fields(self) -> int:
        return 1 if len(self.shape) == 1 else self.shape[0]

    @property
    def n_points(self) -> int:
        """Spatial locations per field."""
        return int(np.prod(self.spatial))

    @property
    def d(self) -> int:
        return int(np.prod(self.shape))

    @property
    def m(self) -> int:
        return int(self.index.size)

    @property
    def field(self) -> np.ndarray:
        """``(m,)`` field number of each observation."""
        return self.index // self.n_points

    @property
    def coords(self) -> np.ndarray:
        """``(m, ndim)`` grid coordinates of the observed points."""
        return self.state_coords[self.index % self.n_points]

    @property
    def state_coords(self) -> np.ndarray:
        """``(n_points, ndim)`` grid coordinates of every spatial location."""
        grids = np.meshgrid(*(np.arange(n, dtype=float) for n in self.spatial), indexing="ij")
        return np.stack([g.ravel() for g in grids], axis=1)

    @property
    def period(self) -> np.ndarray | None:
        """Domain length per axis (in grid units) when periodic, else None."""
        return np.asarray(self.spatial, dtype=float) if self.periodic else None

    @property
    def layout(self) -> dict:
        """What another operator on the same domain needs: ``periodic`` and ``geometry`` keywords."""
        return {"periodic": self.periodic, "geometry": self.geometry}

    def distances(self, points=slice(None)) -> np.ndarray:
        """Distances ``(L, m)`` in grid units between the state locations ``points`` and the observed points."""
        return geometry.get(self.geometry).distances(self.state_coords[points], self.coords, self.spatial, self.period)

    @property
    def xi(self) -> np.ndarray:
        """Observed coordinates scaled to [-1, 1] per axis."""
        extent = np.maximum(np.asarray(self.spatial, dtype=float) - 1.0, 1.0)
        return 2.0 * self.coords / extent - 1.0

    def apply(self, x):
        """``H x``: ``(K, d)`` or ``(K, *shape)`` states to ``(K, m)`` observations."""
        xp = array_module(x)
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.d:
            raise InputError(f"operator expects states with {self.d} components, got {x.shape[1]}")
        return x[:, xp.asarray(self.index)]

    def adjoint(self, r):
        """``H^T r``: ``(K, m)`` observation-space vectors to ``(K, d)`` states."""
        xp = array_module(r)
        if r.ndim != 2 or r.shape[1] != self.m:
            raise InputError(f"adjoint expects (K, {self.m}) arrays, got {r.shape}")
        out = xp.zeros((r.shape[0], self.d), dtype=r.dtype)
        out[:, xp.asarray(self.index)] = r
        return out


def _field_numbers(shape, fields) -> np.ndarray:
    n_fields = 1 if len(shape) == 1 else shape[0]
    if fields is None:
        return np.arange(n_fields)
    fields = np.atleast_1d(np.asarray(fields))
    if fields.size == 0 or not np.issubdtype(fields.dtype, np.integer) or fields.min() < 0 or fields.max() >= n_fields:
        raise InputError(f"observed fields must be field numbers in [0, {n_fields}), got {fields.tolist()}")
    return np.unique(fields)


def _select(name, shape, points, fields, periodic, geometry="plane") -> ObservationOperator:
    """Operator observing spatial locations ``points`` in each field of ``fields``."""
    shape = tuple(int(n) for n in shape)
    n_points = int(np.prod(shape if len(shape) == 1 else shape[1:]))
    index = (_field_numbers(shape, fields)[:, None] * n_points + np.asarray(points)[None, :]).ravel()
    return ObservationOperator(name, shape, index, periodic, geometry)


def grid_operator(shape, stride: int, fields=None, periodic: bool = False, geometry: str = "plane") -> ObservationOperator:
    """Every ``stride``-th point along each spatial axis, from index 0.

    A 150 x 150 field with ``stride = 15`` gives the paper's 10 x 10 network.
    """
    spatial = tuple(shape) if len(shape) == 1 else tuple(shape[1:])
    if int(stride) < 1:
        raise InputError(f"grid stride must be >= 1, got {stride}")
    picked = np.meshgrid(*(np.arange(0, n, int(stride)) for n in spatial), indexing="ij")
    points = np.ravel_multi_index(tuple(p.ravel() for p in picked), spatial)
    return _select("grid", shape, points, fields, periodic, geometry)


def points_operator(shape, n_points: int, rng: np.random.Generator, fields=None,
                    periodic: bool = False, geometry: str = "plane") -> ObservationOperator:
    """``n_points`` distinct spatial locations drawn once from ``rng`` (sorted)."""
    total = int(np.prod(shape if len(shape) == 1 else shape[1:]))
    if not 1 <= int(n_points) <= total:
        raise InputError(f"number of observed points must be in [1, {total}], got {n_points}")
    points = np.sort(rng.choice(total, size=int(n_points), replace=False))
    return _select("points", shape, points, fields, periodic, geometry)


def moving_points(shape, n_points: int, n_times: int, rng: np.random.Generator, fields=None,
                  periodic: bool = False, geometry: str = "plane") -> list[ObservationOperator]:
    """Moving sensors: one :func:`points_operator` per observation time, positions drawn afresh each time."""
    if int(n_times) < 1:
        raise InputError(f"moving sensors need at least one observation time, got {n_times}")
    return [points_operator(shape, n_points, rng, fields, periodic, geometry) for _ in range(int(n_times))]


def full_operator(shape, fields=None, periodic: bool = False, geometry: str = "plane") -> ObservationOperator:
    """Identity on the chosen fields (all fields by default)."""
    total = int(np.prod(shape if len(shape) == 1 else shape[1:]))
    return _select("full", shape, np.arange(total), fields, periodic, geometry)


OPERATORS = {"grid": grid_operator, "points": points_operator, "full": full_operator}


def make_operator(name: str, shape, **options) -> ObservationOperator:
    """Build the operator registered as ``name`` for members of shape ``shape``."""
    if name not in OPERATORS:
        raise ConfigError(f"unknown observation operator {name!r}; choose one of {', '.join(OPERATORS)}")
    return OPERATORS[name](shape, **options)


def noise_std(operator: ObservationOperator, truth, level: float) -> np.ndarray:
    """Observation noise standard deviation per observation, ``(m,)``.

    ``sigma = level * std_f``, where ``std_f`` is the standard deviation of field
    ``f`` over all times and grid points of the truth trajectory ``truth``
    (``(T, *shape)``; a single state ``shape`` also works). For data normalised
    to unit standard deviation per field, ``level = 0.1`` is the paper's 10 % noise.
    """
    if not level >= 0:
        raise InputError(f"noise level must be >= 0, got {level}")
    return level * field_std(operator, truth)[operator.field]


def field_std(operator: ObservationOperator, truth) -> np.ndarray:
    """``(F,)`` standard deviation of each field over all times and grid points of ``truth`` (``(T, *shape)``)."""
    truth = np.asarray(truth)
    if truth.shape[-len(operator.shape):] != operator.shape:
        raise InputError(f"truth shape {truth.shape} does not end with the member shape {operator.shape}")
    per_field = truth.reshape(-1, operator.n_fields, operator.n_points).transpose(1, 0, 2)
    return per_field.reshape(operator.n_fields, -1).std(axis=1)


def observe(operator: ObservationOperator, state, std, rng: np.random.Generator):
    """Noisy observation ``y = H x + std * z`` of one truth state (``(d,)`` or ``shape``).

    ``z ~ N(0, I)`` is drawn from ``rng`` on the host, so NumPy and CuPy give the same ``y``.
    """
    xp = array_module(state)
    clean = operator.apply(state.reshape(1, -1))[0]
    z = rng.standard_normal(operator.m)
    return clean + xp.asarray(std) * xp.asarray(z, dtype=clean.dtype)

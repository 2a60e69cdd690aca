"""Atmospheric modelling (LEVDA paper §4.1): forced shallow water on the rotating sphere, unknown forcing.

The parameters are the forcing amplitude and width ``(hf0, sigma)``; fields ``(h, u, v)`` on the
Gauss-Legendre grid (rows north to south). All trajectories start from the Galewsky jet (the authors
start from ERA5 500 hPa data, which cannot be fetched here); ``warmup_frames`` frames of burn-in are
dropped so that the forcing shapes the flow, then ``n_frames`` are kept ``steps_per_frame`` steps apart.
"""
from __future__ import annotations

import numpy as np

from ..models.planet_swe import PlanetSWE, PlanetSWEConfig
from . import Case, ModelCase, Plotting


class Atmosphere(ModelCase):
    name = "atmosphere"
    label = "forced shallow water on the sphere"
    model_class = PlanetSWE
    config_class = PlanetSWEConfig
    periodic = False  # the sphere wraps in longitude only: its distances are the geometry's
    geometry = "sphere"
    plotting = Plotting(field=1, label="zonal wind u [m/s]")
    preset = Case.preset  # presets/atmosphere/<preset>.yaml

    def coordinates(self, model, ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
        """Longitudes ``x`` [degrees east] and the Gauss-Legendre latitudes ``y`` [degrees north, north to south]."""
        return np.degrees(model.lon), np.degrees(model.lat)

"""Lorenz-96 (dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F), RK4, batched over members."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import array_module
from ..errors import ConfigError, SolverError


@dataclass
class Lorenz96Config:
    d: int = 40
    forcing: float = 8.0
    dt: float = 0.01


class Lorenz96:
    """Chaotic testbed for filter cross-checks; state ``(K, d)``, no parameters."""

    name = "lorenz96"
    param_names: tuple[str, ...] = ()

    def __init__(self, cfg):
        if cfg.d < 4:
            raise ConfigError(f"Lorenz-96 needs d >= 4, got {cfg.d}")
        if not cfg.dt > 0:
            raise ConfigError(f"Lorenz-96 time step must be positive, got {cfg.dt}")
        self.cfg = cfg
        self.dt = cfg.dt
        self.field_names = ("x",)

    def tendency(self, x):
        xp = array_module(x)
        return (xp.roll(x, -1, axis=-1) - xp.roll(x, 2, axis=-1)) * xp.roll(x, 1, axis=-1) - x + self.cfg.forcing

    def sample_params(self, rng, n):
        return np.zeros((n, 0))

    def initial_state(self, params, rng=None):
        """Rest state F plus a small perturbation, as in Lorenz & Emanuel (1998)."""
        rng = rng or np.random.default_rng(0)
        x = np.full((len(params), self.cfg.d), self.cfg.forcing)
        return x + 0.01 * rng.standard_normal(x.shape)

    def step(self, state, params=None, n_steps: int = 1):
        x, dt = state, self.dt
        xp = array_module(x)
        for _ in range(n_steps):
            k1 = self.tendency(x)
            k2 = self.tendency(x + 0.5 * dt * k1)
            k3 = self.tendency(x + 0.5 * dt * k2)
            k4 = self.tendency(x + dt * k3)
            x = x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        if not bool(xp.all(xp.isfinite(x))):
            raise SolverError("Lorenz-96 state became NaN/Inf")
        return x

    def to_fields(self, state):
        return state

    def from_fields(self, fields):
        return fields

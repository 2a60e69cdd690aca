"""Truth solvers sharing one batched protocol.

Every model is built by a factory from its config section and exposes

- ``sample_params(rng, n) -> (n, p)`` parameter draws from the prior,
- ``initial_state(params, rng) -> state`` batched over members ``K = len(params)``,
- ``step(state, params, n_steps) -> state`` advancing all members,
- ``to_fields(state) -> (K, F, ny, nx)`` physical fields (stored, filtered),
- ``from_fields(fields) -> state``, optionally ``with_clock(state, like) -> state`` (a forced model:
  ``state`` at the model time of ``like``, which fields do not hold; see :func:`with_clock`), and attributes ``name``, ``field_names``,
  ``param_names``, ``dt`` (seconds or model time per step), ``grid`` (dict).

Filters, data generation and MPI sharding only ever call these. Each model's config
section (a dataclass) lives beside it; the case registry (:mod:`ldensf_hpc.cases`)
pairs a case name with its model, section and frame schedule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..backend import array_module
from ..errors import InputError


class Model(Protocol):
    name: str
    field_names: tuple[str, ...]
    param_names: tuple[str, ...]
    dt: float

    def sample_params(self, rng: np.random.Generator, n: int) -> np.ndarray: ...

    def initial_state(self, params, rng: np.random.Generator | None = None): ...

    def step(self, state, params, n_steps: int = 1): ...

    def to_fields(self, state): ...

    def from_fields(self, fields): ...


@dataclass(frozen=True)
class FrameSchedule:
    """Stored frames: after ``warmup_steps`` solver steps, ``n_frames`` frames ``steps_per_frame`` apart."""

    warmup_steps: int
    steps_per_frame: int
    n_frames: int


def trajectory(model, state, params, n_frames: int, steps_per_frame: int):
    """Run ``n_frames`` frames and return fields ``(K, n_frames + 1, F, ny, nx)`` incl. the start."""
    xp = array_module(state)
    frames = [model.to_fields(state)]
    for _ in range(n_frames):
        state = model.step(state, params, steps_per_frame)
        frames.append(model.to_fields(state))
    return xp.stack(frames, axis=1)


def with_clock(model, state, like):
    """``state`` (e.g. rebuilt from analysed fields) at the model time of ``like`` if ``model`` keeps one."""
    keep = getattr(model, "with_clock", None)
    return state if keep is None else keep(state, like)


class Standardized:
    """A model whose fields are standardised per field: ``(x - mean_f) / std_f``.

    Filters run on these fields, so observation noise "relative to the normalised
    data" (paper §4) is a plain number and the EnSF pseudo-time diffusion, which
    ends at N(0, I), sees states of unit scale.
    """

    def __init__(self, model, mean, std):
        self.model = model
        self.name, self.param_names, self.dt = model.name, model.param_names, model.dt
        self.field_names = model.field_names
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float64).reshape(-1, 1, 1)
        if np.any(self.std <= 0):
            raise InputError("standardisation needs positive field standard deviations")

    def standardize(self, fields):
        return (fields - self.mean) / self.std

    def unstandardize(self, fields):
        return fields * self.std + self.mean

    def standardize_obs(self, operator, y):
        """Observations ``y (..., m)`` of physical fields -> of standardised fields (``operator.field``)."""
        f = operator.field
        return (y - self.mean.ravel()[f]) / self.std.ravel()[f]

    def sample_params(self, rng, n):
        return self.model.sample_params(rng, n)

    def initial_state(self, params, rng=None):
        return self.model.initial_state(params, rng)

    def step(self, state, params, n_steps: int = 1):
        return self.model.step(state, params, n_steps)

    def to_fields(self, state):
        return self.standardize(self.model.to_fields(state))

    def from_fields(self, fields):
        return self.model.from_fields(self.unstandardize(fields))

    def with_clock(self, state, like):
        return with_clock(self.model, state, like)

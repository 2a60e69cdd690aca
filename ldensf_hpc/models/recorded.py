"""Recorded trajectories without a solver: the "model" of a dataset imported from the user's files.

It knows the fields, parameters, units and grid of the data, so the engine's latent methods
(whose dynamics are the trained LDNet) run on it; it cannot step, so methods that need the
full solver are skipped with that reason (:attr:`Recorded.has_solver`).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


@dataclass
class RecordedConfig:
    """What an imported dataset is (written by ``ldensf import``; not meant to be edited)."""

    source_sha256: str = ""  # of the imported file(s) or in-memory dataset
    fields: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    units: tuple[str, ...] = ()  # of fields, params, then x, y, time
    coordinates: tuple[str, ...] = ("y", "x")  # the source's names of the grid dimensions
    n_frames: int = 2
    dt: float = 1.0  # time between frames (the source's time units)
    dx: float = 1.0  # grid spacing along x (the source's units)
    periodic: bool = False  # the grid wraps around (sensor distances, moving sensors)


class Recorded:
    """The protocol's attributes of recorded data; ``step`` and the prior draws are refused."""

    name = "recorded"
    has_solver = False

    def __init__(self, cfg: RecordedConfig):
        if not cfg.fields or not cfg.params:
            raise ValueError("an imported dataset's section needs its fields and params (made by ldensf import)")
        self.cfg = cfg
        self.field_names, self.param_names = tuple(cfg.fields), tuple(cfg.params)
        self.dt, self.grid = float(cfg.dt), {"dx": float(cfg.dx), "coordinates": list(cfg.coordinates)}
        names = (*self.field_names, *self.param_names, "x", "y", "time")
        self.units = dict(zip(names, cfg.units)) if len(cfg.units) == len(names) else dict.fromkeys(names, "1")

    def _no_solver(self, *_args, **_kwargs):
        raise InputError("this dataset was imported: it has no solver to run (methods with full-solver dynamics "
                         "and data generation need a case with a model)")

    sample_params = initial_state = step = _no_solver

    def to_fields(self, state):
        return state

    def from_fields(self, fields):
        return fields

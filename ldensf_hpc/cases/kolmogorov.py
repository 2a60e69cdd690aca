"""Kolmogorov flow (LD-EnSF paper §4.2): forced 2-D Navier-Stokes on the periodic square, unknown Re.

Velocity fields ``(u, v)`` of the spectral vorticity solver; ``warmup_frames`` frames
are dropped, then ``n_frames`` kept ``steps_per_frame`` steps apart.
"""
from __future__ import annotations

from ..errors import ConfigError
from ..models import FrameSchedule
from ..models.kolmogorov import Kolmogorov as KolmogorovFlow
from ..models.kolmogorov import KolmogorovConfig
from . import Case, Plotting


class Kolmogorov(Case):
    name = "kolmogorov"
    label = "Kolmogorov flow"
    model_class = KolmogorovFlow
    config_class = KolmogorovConfig
    periodic = True
    grid_offset = 0.0
    plotting = Plotting(field=0, label="velocity u (nondimensional)")

    def schedule(self, section) -> FrameSchedule:
        """``warmup_frames`` frames dropped, then ``n_frames`` kept, ``steps_per_frame`` steps apart."""
        if section.steps_per_frame < 1 or section.n_frames < 1 or section.warmup_frames < 0:
            raise ConfigError("kolmogorov: steps_per_frame and n_frames must be >= 1 and warmup_frames >= 0")
        return FrameSchedule(section.warmup_frames * section.steps_per_frame, section.steps_per_frame,
                             section.n_frames)

    def units(self, model) -> dict:
        return dict.fromkeys((*model.field_names, *model.param_names, "x", "y", "time"), "nondimensional")

"""Tsunami shallow water (LD-EnSF paper §4.1): a Gaussian bump at an unknown location in a walled basin.

The parameter is the bump centre; fields ``(eta, u, v)`` on an Arakawa C grid, stored
every ``save_every`` of ``n_steps`` solver steps (the initial state included);
``eta`` lives at cell centres, hence the half-cell grid offset.
"""
from __future__ import annotations

from ..errors import ConfigError
from ..models import FrameSchedule
from ..models.shallow_water import ShallowWater, SWEConfig
from . import Case, Plotting


class SWE(Case):
    name = "swe"
    label = "tsunami shallow water"
    model_class = ShallowWater
    config_class = SWEConfig
    periodic = False
    grid_offset = 0.5
    plotting = Plotting(field=0, label="surface elevation eta [m]")

    def schedule(self, section) -> FrameSchedule:
        """Every ``save_every``-th of ``n_steps`` steps, initial state included."""
        if section.save_every < 1 or section.n_steps < section.save_every or section.n_steps % section.save_every:
            raise ConfigError(f"swe.n_steps ({section.n_steps}) must be a positive multiple of swe.save_every "
                              f"({section.save_every})")
        return FrameSchedule(0, section.save_every, section.n_steps // section.save_every + 1)

    def units(self, model) -> dict:
        fields = {"eta": "m", "u": "m/s", "v": "m/s"}
        return {**{f: fields[f] for f in model.field_names}, **dict.fromkeys(model.param_names, "m"),
                "x": "m", "y": "m", "time": "s"}

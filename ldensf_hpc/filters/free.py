"""The free run: the prior ensemble propagated by the solver, never updated (the baseline of every method)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import FULL_SOLVER, Capabilities, Observation, check_inputs
from .cycle import SequentialFilter


@dataclass
class Free(SequentialFilter):
    """No assimilation: the analysis is the forecast (observations are ignored)."""

    name: ClassVar[str] = "free"
    label: ClassVar[str] = "free (no assimilation)"
    capabilities: ClassVar[Capabilities] = Capabilities(parameters=False, irregular_times=True,
                                                        moving_sensors=True, smoother=False, member_sharding=True)
    space: ClassVar[str] = "-"
    dynamics: ClassVar[str] = FULL_SOLVER

    def analyse(self, forecast, obs: Observation, rng=None, rows: slice | None = None):
        check_inputs(forecast, obs)
        return forecast[slice(None) if rows is None else rows]

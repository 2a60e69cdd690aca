"""Data the user brought (``ldensf import``): trajectories from NetCDF, Zarr or HDF5, no solver.

The case section (:class:`~ldensf_hpc.models.recorded.RecordedConfig`) is written by the
import and read back from the dataset by every later command; the prior ensemble is drawn
from the training trajectories (their first frames and parameters), and methods whose
dynamics are the full solver are skipped.
"""
from __future__ import annotations

from ..models import FrameSchedule
from ..models.recorded import Recorded, RecordedConfig
from ..observe import ObservationOperator, grid_operator
from . import Case, Plotting


class Imported(Case):
    name = "imported"
    label = "imported trajectories"
    model_class = Recorded
    config_class = RecordedConfig
    periodic = False
    grid_offset = 0.0
    plotting = Plotting(field=0, label="")

    def schedule(self, section) -> FrameSchedule:
        """Every stored frame of the source, one "step" apart."""
        return FrameSchedule(0, 1, section.n_frames)

    def units(self, model) -> dict:
        return dict(model.units)

    def observation_operator(self, cfg, shape) -> ObservationOperator:
        return grid_operator(shape, cfg.observe.stride, periodic=cfg.model.periodic)

"""Observations from the user's sensor log instead of synthetic ones: fixed or moving sensors, any times.

A log is a table, one row per reading, with the columns ``time``, ``x``, ``y``, ``field``,
``value`` and optionally ``std`` (the reading's noise std; default ``observe.noise`` times the
field's train-split std). It is a CSV file, or a NetCDF/Zarr dataset whose variables of one
dimension are those columns. Coordinates and times are in the dataset's units.

A reading is assigned to the nearest stored frame (the time resolution of the data) and the
nearest grid point; the largest shifts are reported. The first readings must be at the first
stored time (where the prior ensemble starts); no two readings of one field may fall on one
grid point at one time. The readings observe trajectory ``--trajectory`` of the dataset, which
is the one scored.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .observe import ObservationOperator

COLUMNS = ("time", "x", "y", "field", "value")


@dataclass
class SensorLog:
    """Readings grouped by stored frame: ``frames (T,)``, one operator and ``y``/``std`` per frame."""

    source: str
    frames: np.ndarray
    operators: list
    y: list
    std: list  # None per time where the log gives no std
    time_shift: float  # largest |reading time - its frame's time|
    position_shift: float  # largest distance from a reading to its grid point

    def describe(self) -> dict:
        return {"file": self.source, "times": len(self.frames), "readings": int(sum(len(v) for v in self.y)),
                "max_time_shift": self.time_shift, "max_position_shift": self.position_shift}


def read_table(path) -> dict:
    """The log's columns as arrays (``std`` may be missing)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"sensor log {path} does not exist")
    try:
        if path.suffix.lower() == ".csv":
            import pandas as pd

            frame = pd.read_csv(path)
            table = {str(c).strip(): frame[c].to_numpy() for c in frame.columns}
        else:
            import xarray as xr

            ds = xr.open_zarr(path) if path.is_dir() else xr.open_dataset(path, engine="h5netcdf")
            table = {str(n): np.asarray(v.values).ravel() for n, v in ds.variables.items() if v.ndim == 1}
    except Exception as exc:  # any reader failure: not a table we can read
        raise DataError(f"cannot read sensor log {path} (CSV, NetCDF or Zarr): {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    missing = [c for c in COLUMNS if c not in table]
    if missing:
        raise DataError(f"sensor log {path} lacks the column(s) {', '.join(missing)}; it needs "
                        f"{', '.join(COLUMNS)} (and optionally std)")
    return table


def _nearest(axis: np.ndarray, values: np.ndarray, what: str, path) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest grid coordinate and the distance to it; DataError beyond half a cell off the grid."""
    step = abs(axis[1] - axis[0]) if len(axis) > 1 else 1.0
    index = np.abs(values[:, None] - axis[None, :]).argmin(axis=1)
    shift = np.abs(values - axis[index])
    far = np.flatnonzero(shift > 0.5 * step * (1 + 1e-9))
    if far.size:
        raise DataError(f"sensor log {path}: reading {far[0]} has {what} = {values[far[0]]:g}, outside the grid "
                        f"({axis.min():g} .. {axis.max():g})")
    return index, shift


def read_sensor_log(path, field_names, time, x, y, layout: dict | None = None) -> SensorLog:
    """The readings of ``path`` on the grid ``x (nx,)``, ``y (ny,)`` and stored times ``time (n_frames,)``."""
    table = read_table(path)
    try:
        t, px, py, value = (np.asarray(table[c], np.float64) for c in ("time", "x", "y", "value"))
        std = np.asarray(table["std"], np.float64) if "std" in table else None
    except (TypeError, ValueError):
        raise DataError(f"sensor log {path}: time, x, y, value and std must be numbers") from None
    for name, values in (("time", t), ("x", px), ("y", py), ("value", value), ("std", std)):
        if values is not None and not np.all(np.isfinite(values)):
            raise DataError(f"sensor log {path}: column {name} has a NaN or Inf (row {np.argmin(np.isfinite(values))})")
    if std is not None and np.any(std <= 0):
        raise DataError(f"sensor log {path}: std must be > 0 (row {np.argmax(std <= 0)})")
    names = [str(f) for f in table["field"]]
    unknown = sorted(set(names) - set(field_names))
    if unknown:
        raise DataError(f"sensor log {path}: unknown field(s) {unknown}; the dataset's fields are "
                        f"{', '.join(field_names)}")
    field = np.array([field_names.index(f) for f in names], np.int64)
    frame, time_shift = _nearest(np.asarray(time, np.float64), t, "time", path)
    if frame.min() != 0:
        raise DataError(f"sensor log {path}: the first readings are at time {t.min():g}, but the prior starts at the "
                        f"first stored time {time[0]:g}; the log must begin there")
    i, dx = _nearest(np.asarray(x, np.float64), px, "x", path)
    j, dy = _nearest(np.asarray(y, np.float64), py, "y", path)
    shape = (len(field_names), len(y), len(x))
    flat = field * (len(y) * len(x)) + j * len(x) + i
    frames = np.unique(frame)
    operators, ys, stds = [], [], []
    for f in frames:
        rows = np.flatnonzero(frame == f)
        rows = rows[np.argsort(flat[rows], kind="stable")]
        if np.unique(flat[rows]).size != rows.size:
            raise DataError(f"sensor log {path}: two readings of one field fall on one grid point at time "
                            f"{time[f]:g}; average them first")
        operators.append(ObservationOperator("log", shape, flat[rows], **(layout or {})))
        ys.append(value[rows])
        stds.append(None if std is None else std[rows])
    return SensorLog(str(path), frames, operators, ys, stds, float(time_shift.max()),
                     float(np.hypot(dx, dy).max()))

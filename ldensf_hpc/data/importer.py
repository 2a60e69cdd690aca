"""``ldensf import``: the user's trajectories (NetCDF, Zarr, HDF5, or an xarray Dataset) into our store.

The source holds a trajectory dimension, a time coordinate, field variables on a 2-D grid
(``y``/``x`` or ``lat``/``lon``, recognised by name, CF ``standard_name``, ``axis`` or
``units``) and each trajectory's parameters: variables over the trajectory dimension alone,
or one variable ``(trajectory, param)``. It is written as the same sharded, checksummed,
resumable store as ``ldensf generate`` (case ``imported``, whose section records what was
imported and the sha256 of the source), so ``ldensf train`` and ``ldensf run --data`` work on it.

Checked, each with a one-line error: the dimensions and variables exist, shapes agree, time is
strictly increasing and evenly spaced, the grid coordinates are 1-D and monotonic, and every
field and parameter value is finite.
"""
from __future__ import annotations

import hashlib
import time as clock
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ConfigError, DataError
from . import store
from .generate import Summary, generation_config, open_directory

Y_NAMES, X_NAMES = ("y", "lat", "latitude", "nav_lat", "rlat"), ("x", "lon", "longitude", "nav_lon", "rlon")
Y_CF, X_CF = ("latitude", "projection_y_coordinate", "grid_latitude"), (
    "longitude", "projection_x_coordinate", "grid_longitude")


@dataclass
class Layout:
    """Where the parts of an imported dataset are: dimension names, field and parameter variables."""

    trajectory: str
    time: str
    y: str
    x: str
    fields: tuple[str, ...]
    params: tuple[tuple[str, tuple[str, ...]], ...]  # (variable, the parameter names it holds)
    ignored: tuple[str, ...]

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(name for _, names in self.params for name in names)


def open_source(source):
    """The xarray Dataset of ``source`` (a path to NetCDF/HDF5/Zarr, or a Dataset) and its sha256."""
    import xarray as xr

    if isinstance(source, xr.Dataset):
        return source, _dataset_digest(source)
    path = Path(source)
    if not path.exists():
        raise DataError(f"import source {path} does not exist")
    try:
        if path.is_dir():
            try:
                import zarr  # noqa: F401
            except ImportError:
                raise DataError(f"{path} is a directory (a Zarr store?); reading Zarr needs the zarr package: "
                                "pip install zarr") from None
            ds = xr.open_zarr(path)
        else:
            ds = xr.open_dataset(path, engine="h5netcdf")
    except DataError:
        raise
    except Exception as exc:  # any reader failure: the file is not a dataset xarray can read
        raise DataError(f"cannot read {path} as a dataset (NetCDF/HDF5 or Zarr): {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    return ds, _path_digest(path)


def _path_digest(path: Path) -> str:
    if path.is_file():
        return store.sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + store.sha256_file(file).encode())
    return digest.hexdigest()


def _dataset_digest(ds) -> str:
    digest = hashlib.sha256()
    for name in sorted(map(str, ds.variables)):
        v = ds[name]
        digest.update(f"{name}{v.dims}{v.dtype}".encode())
        digest.update(np.ascontiguousarray(v.values).tobytes())
    return digest.hexdigest()


def _grid_dim(ds, dims, names, cf, axis: str, units: str) -> str | None:
    """The dimension among ``dims`` that is the grid's y (or x) by CF attributes of its coordinate, or its name."""
    for dim in dims:
        attrs = ds[dim].attrs if dim in ds.variables else {}
        if attrs.get("standard_name") in cf or attrs.get("axis") == axis or attrs.get("units") == units:
            return dim
    return next((dim for dim in dims if str(dim).lower() in names), None)


def find_layout(ds, trajectory: str = "trajectory", fields=None, params=None) -> Layout:
    """Identify the dimensions, field and parameter variables of ``ds`` (DataError naming what is missing)."""
    if trajectory not in ds.dims:
        raise DataError(f"no trajectory dimension {trajectory!r} (dimensions: {', '.join(map(str, ds.dims))}); "
                        "name it with --trajectory-dim")
    time_dim = next((str(d) for d in ds.dims if str(d).lower() == "time" or
                     (d in ds.variables and (ds[d].attrs.get("standard_name") == "time" or ds[d].attrs.get("axis") == "T"))),
                    None)
    if time_dim is None or time_dim not in ds.variables:
        raise DataError("no time coordinate (a dimension `time`, or one with standard_name time or axis T, "
                        "holding the times)")
    grid = [d for d in ds.dims if d not in (trajectory, time_dim)]
    y = _grid_dim(ds, grid, Y_NAMES, Y_CF, "Y", "degrees_north")
    x = _grid_dim(ds, [d for d in grid if d != y], X_NAMES, X_CF, "X", "degrees_east")
    if y is None or x is None:
        raise DataError(f"no 2-D grid: need y/x or lat/lon dimensions (CF names or axis Y/X), found "
                        f"{', '.join(map(str, grid)) or 'none'}")
    wanted = {trajectory, time_dim, y, x}
    candidates = [str(n) for n, v in ds.data_vars.items() if set(v.dims) == wanted and v.ndim == 4]
    if fields is None:
        fields = candidates
        if not fields:
            raise DataError(f"no field variable over ({trajectory}, {time_dim}, {y}, {x})")
    for name in fields:
        if name not in ds.data_vars:
            raise DataError(f"field variable {name!r} is not in the dataset (variables: {', '.join(map(str, ds.data_vars))})")
        if name not in candidates:
            raise DataError(f"field variable {name!r} has dimensions {ds[name].dims}, expected "
                            f"({trajectory}, {time_dim}, {y}, {x})")
    params = list(params) if params is not None else [
        str(n) for n, v in ds.data_vars.items() if v.dims[:1] == (trajectory,) and v.ndim <= 2
        and not set(v.dims[1:]) & wanted]
    if not params:
        raise DataError(f"no parameter variable: add one over ({trajectory},) per parameter, or one over "
                        f"({trajectory}, param), holding each trajectory's parameters (or name it with --params)")
    layout_params = []
    for name in params:
        if name not in ds.data_vars:
            raise DataError(f"parameter variable {name!r} is not in the dataset")
        v = ds[name]
        if v.dims[:1] != (trajectory,) or v.ndim > 2:
            raise DataError(f"parameter variable {name!r} has dimensions {v.dims}, expected ({trajectory},) or "
                            f"({trajectory}, param)")
        if v.ndim == 1:
            layout_params.append((name, (name,)))
        else:
            dim = v.dims[1]
            labels = ds[dim].values if dim in ds.coords else range(v.shape[1])
            layout_params.append((name, tuple(str(label) for label in labels)))
    used = {*fields, *params}
    ignored = tuple(str(n) for n in ds.data_vars if n not in used)
    return Layout(trajectory, time_dim, str(y), str(x), tuple(fields), tuple(layout_params), ignored)


def _seconds_or_values(values: np.ndarray, units: str) -> tuple[np.ndarray, str]:
    """Times as floats: datetime / timedelta (decoded CF time) in seconds from the first."""
    if np.issubdtype(values.dtype, np.datetime64) or np.issubdtype(values.dtype, np.timedelta64):
        origin = values[0] if np.issubdtype(values.dtype, np.datetime64) else np.timedelta64(0, "s")
        return (values - origin) / np.timedelta64(1, "s"), "s"
    return np.asarray(values, np.float64), units


def _axis(ds, dim: str, what: str) -> np.ndarray:
    values = np.asarray(ds[dim].values if dim in ds.variables else np.arange(ds.sizes[dim]), np.float64)
    steps = np.diff(values)
    if values.ndim != 1 or not np.all(np.isfinite(values)) or not (np.all(steps > 0) or np.all(steps < 0)):
        raise DataError(f"the {what} coordinate {dim!r} must be 1-D, finite and strictly monotonic")
    return values


def coordinates(ds, layout: Layout) -> dict:
    """Time (evenly spaced, increasing), x, y and their units."""
    units = lambda name: str(ds[name].attrs.get("units", "1")) if name in ds.variables else "1"  # noqa: E731
    t, t_units = _seconds_or_values(np.asarray(ds[layout.time].values), units(layout.time))
    steps = np.diff(t)
    if len(t) < 2:
        raise DataError(f"time {layout.time!r} has {len(t)} value(s); at least two frames are needed")
    if not np.all(np.isfinite(t)) or np.any(steps <= 0):
        k = int(np.argmax(~(steps > 0))) if np.any(steps <= 0) else 0
        raise DataError(f"time {layout.time!r} is not strictly increasing (at index {k + 1}); sort the source by time")
    if np.max(np.abs(steps - steps[0])) > 1e-6 * abs(steps[0]):
        raise DataError(f"time {layout.time!r} is not evenly spaced (steps from {steps.min():g} to {steps.max():g} "
                        f"{t_units}); resample the source to a fixed step")
    x, y = _axis(ds, layout.x, "x"), _axis(ds, layout.y, "y")
    return {"time": t, "x": x, "y": y, "dt": float(steps[0]), "dx": float(abs(x[1] - x[0])) if len(x) > 1 else 1.0,
            "units": {"x": units(layout.x), "y": units(layout.y), "time": t_units}}


def _block(ds, layout: Layout, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Fields ``(n, T, F, ny, nx)`` float32 and params ``(n, p)`` of trajectories ``start .. stop - 1``, checked finite."""
    rows = {layout.trajectory: slice(start, stop)}
    order = (layout.trajectory, layout.time, layout.y, layout.x)
    fields = np.stack([np.asarray(ds[f].isel(rows).transpose(*order).values, np.float64) for f in layout.fields], axis=2)
    params = np.concatenate([np.asarray(ds[v].isel(rows).values, np.float64).reshape(stop - start, -1)
                             for v, _ in layout.params], axis=1)
    for name, values in zip(layout.fields, np.moveaxis(fields, 2, 0)):
        bad = np.argwhere(~np.isfinite(values))
        if len(bad):
            raise DataError(f"field {name!r} has a NaN or Inf value (trajectory {start + bad[0][0]}, time index "
                            f"{bad[0][1]}); fill or drop it before importing")
    if not np.all(np.isfinite(params)):
        i, j = np.argwhere(~np.isfinite(params))[0]
        raise DataError(f"parameter {layout.param_names[j]!r} of trajectory {start + i} is NaN or Inf")
    return fields.astype(np.float32), params


def import_dataset(source, out, *, preset: str = "small", trajectory: str = "trajectory", fields=None,
                   params=None, periodic: bool = False, shard_size: int = 4, seed: int = 0):
    """Import ``source`` into the dataset directory ``out`` (resumable: shards that verify are kept).

    Returns the :class:`~ldensf_hpc.data.generate.Summary` and the config of the imported case
    (the ``preset``'s surrogate and observation settings, the section describing the data).
    """
    from ..cases import load_config
    from ..models.recorded import RecordedConfig

    if shard_size < 1:
        raise ConfigError(f"--shard-size must be >= 1, got {shard_size}")
    t0 = clock.perf_counter()
    ds, digest = open_source(source)
    layout = find_layout(ds, trajectory, fields, params)
    axes = coordinates(ds, layout)
    n = int(ds.sizes[layout.trajectory])
    units = [str(ds[f].attrs.get("units", "1")) for f in layout.fields]
    units += [str(ds[v].attrs.get("units", "1")) for v, names in layout.params for _ in names]
    section = RecordedConfig(source_sha256=digest, fields=layout.fields, params=layout.param_names,
                             units=(*units, axes["units"]["x"], axes["units"]["y"], axes["units"]["time"]),
                             coordinates=(layout.y, layout.x), n_frames=len(axes["time"]), dt=axes["dt"],
                             dx=axes["dx"], periodic=bool(periodic))
    cfg = load_config(preset, case="imported", overrides=[f"data.n_trajectories={n}", f"data.shard_size={shard_size}",
                                                          f"data.seed={seed}"])
    cfg.model = section
    root = Path(out).resolve()
    frame_shape = (len(axes["time"]), len(layout.fields), len(axes["y"]), len(axes["x"]))
    manifest, _lock = open_directory(root, cfg.case, generation_config(cfg), n, shard_size, frame_shape,
                                     len(layout.param_names))
    reused, written = 0, 0
    for entry in manifest["shards"]:
        path = root / store.SHARDS / entry["name"]
        try:
            entry["sha256"] = store.verify_shard(path, entry, manifest)
            reused += 1
            continue
        except DataError:
            pass
        block, values = _block(ds, layout, entry["start"], entry["stop"])
        entry["sha256"] = store.write_shard(path, entry["shard"], entry["start"], block, values, manifest["config"])
        written += path.stat().st_size
        store.write_manifest(root, manifest)
    store.write_manifest(root, manifest)
    from ..models.recorded import Recorded

    model = Recorded(section)
    attrs = {"config": cfg.to_dict(), "case": cfg.case, "field_names": list(layout.fields),
             "param_names": list(layout.param_names), "units": model.units, "grid": model.grid,
             "dt": axes["dt"], "seed": int(seed), "version": __version__,
             "source": str(source) if isinstance(source, (str, Path)) else "xarray.Dataset",
             "ignored_variables": list(layout.ignored)}
    store.write_dataset(root, manifest, attrs, axes["time"], axes["x"], axes["y"])
    summary = Summary(root, n, len(manifest["shards"]), reused, written, clock.perf_counter() - t0)
    return summary, cfg, layout

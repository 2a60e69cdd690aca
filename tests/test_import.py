"""``ldensf import`` / ``Case.from_dataset``: the user's NetCDF and Zarr files (CF lat/lon or y/x) into our store,
checked with one-line errors, then trained on and assimilated."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import ldensf_hpc as ld
from ldensf_hpc.cli import main
from ldensf_hpc.data.dataset import TrajectoryStore
from ldensf_hpc.errors import DataError

xr = pytest.importorskip("xarray")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from blob_model import trajectories  # noqa: E402

N, T, n = 8, 9, 16


def tracer_trajectories():
    return trajectories(N, T, n, seed=3)


def cf_latlon() -> xr.Dataset:
    """Fields on (lat, lon) with CF names and units, time in hours, one variable per parameter."""
    c, p, t = tracer_trajectories()
    return xr.Dataset(
        {"tracer": (("trajectory", "time", "lat", "lon"), c, {"units": "kg m-2"}),
         "depth": (("trajectory", "time", "lat", "lon"), 2 * c + 1, {"units": "m"}),
         "source_lon": (("trajectory",), p[:, 0], {"units": "degrees_east"}),
         "source_lat": (("trajectory",), p[:, 1], {"units": "degrees_north"}),
         "station_count": ((), 3)},
        coords={"time": ("time", t, {"units": "hours", "standard_name": "time"}),
                "lat": ("lat", np.linspace(-60, 60, n), {"standard_name": "latitude", "units": "degrees_north"}),
                "lon": ("lon", np.linspace(0, 360, n, endpoint=False), {"standard_name": "longitude",
                                                                         "units": "degrees_east"})})


def yx_params() -> xr.Dataset:
    """Fields on (y, x) in metres, stored as (trajectory, x, y, time): the import transposes; one
    parameter variable (trajectory, param) with the parameter names as its coordinate."""
    c, p, t = tracer_trajectories()
    return xr.Dataset(
        {"c": (("run", "x", "y", "time"), c.transpose(0, 3, 2, 1), {"units": "kg m-2"}),
         "source": (("run", "param"), p)},
        coords={"time": ("time", t, {"units": "s"}), "param": ("param", ["x0", "y0"]),
                "y": ("y", np.arange(n) * 100.0, {"units": "m", "axis": "Y"}),
                "x": ("x", np.arange(n) * 100.0, {"units": "m", "axis": "X"})})


def test_netcdf_with_cf_lat_lon(tmp_path):
    src = tmp_path / "source.nc"
    cf_latlon().to_netcdf(src, engine="h5netcdf")
    assert main(["import", str(src), "--out", str(tmp_path / "data"), "--preset", "tiny", "--shard-size", "3"]) == 0
    store = TrajectoryStore(tmp_path / "data")
    back = cf_latlon()
    assert store.field_names == ("tracer", "depth") and store.param_names == ("source_lon", "source_lat")
    np.testing.assert_array_equal(store.frames(5)[:, 1], back["depth"].values[5].astype(np.float32))
    np.testing.assert_array_equal(store.params, np.stack([back["source_lon"], back["source_lat"]], 1))
    np.testing.assert_array_equal(store.y, back["lat"].values)
    np.testing.assert_array_equal(store.x, back["lon"].values)
    np.testing.assert_allclose(store.time, back["time"].values)  # numbers in the source's units
    attrs = store._h5().attrs
    units = json.loads(attrs["units"])
    assert units == {"tracer": "kg m-2", "depth": "m", "source_lon": "degrees_east", "source_lat": "degrees_north",
                     "x": "degrees_east", "y": "degrees_north", "time": "hours"}
    assert json.loads(attrs["ignored_variables"]) == ["station_count"]


def test_zarr_with_y_x_and_a_parameter_matrix(tmp_path):
    pytest.importorskip("zarr")
    src = tmp_path / "source.zarr"
    yx_params().to_zarr(src, zarr_format=2, consolidated=True)
    case = ld.Case.from_dataset(src, tmp_path / "data", preset="tiny", trajectory="run")
    store = TrajectoryStore(tmp_path / "data")
    c, p, _ = tracer_trajectories()
    np.testing.assert_array_equal(store.frames(2)[:, 0], c[2].astype(np.float32))  # transposed to (time, y, x)
    np.testing.assert_array_equal(store.params, p)
    assert store.param_names == ("x0", "y0") and case.cfg.case == "imported" and case.cfg.model.dx == 100.0
    again = ld.Case.from_dataset(src, tmp_path / "data", preset="tiny", trajectory="run")
    assert again.imported.store.n_reused == again.imported.store.n_shards  # a rerun keeps verified shards


def test_an_in_memory_dataset_and_a_changed_source(tmp_path):
    ld.Case.from_dataset(cf_latlon(), tmp_path / "data", preset="tiny")
    changed = cf_latlon()
    changed["tracer"][0, 0, 0, 0] = 7.0
    with pytest.raises(DataError, match="differs in: imported.source_sha256"):
        ld.Case.from_dataset(changed, tmp_path / "data", preset="tiny")


def _bad(ds: xr.Dataset, what: str) -> xr.Dataset:
    if what == "no parameters":
        return ds.drop_vars(["source_lon", "source_lat"])
    if what == "time not monotonic":
        return ds.assign_coords(time=ds["time"].values[[0, 2, 1, *range(3, T)]])
    if what == "time uneven":
        return ds.assign_coords(time=ds["time"].values ** 1.5)
    if what == "NaN field":
        ds["depth"][4, 6, 2, 2] = np.nan
        return ds
    if what == "NaN parameter":
        ds["source_lat"][3] = np.inf
        return ds
    if what == "no grid":
        return ds.rename({"lat": "a", "lon": "b"}).drop_vars(["a", "b"])
    if what == "no trajectory dim":
        return ds.rename({"trajectory": "sample"})
    raise AssertionError(what)


@pytest.mark.parametrize("what, message", [
    ("no parameters", "no parameter variable"),
    ("time not monotonic", "is not strictly increasing (at index 2)"),
    ("time uneven", "is not evenly spaced"),
    ("NaN field", "field 'depth' has a NaN or Inf value (trajectory 4, time index 6)"),
    ("NaN parameter", "parameter 'source_lat' of trajectory 3 is NaN or Inf"),
    ("no grid", "no 2-D grid"),
    ("no trajectory dim", "no trajectory dimension 'trajectory'"),
])
@pytest.mark.parametrize("fmt", ["nc", "zarr"])
def test_bad_sources_are_one_line_errors(tmp_path, capsys, what, message, fmt):
    src = tmp_path / f"bad.{fmt}"
    bad = _bad(cf_latlon(), what)
    if fmt == "zarr":
        pytest.importorskip("zarr")
        bad.to_zarr(src, zarr_format=2, consolidated=True)
    else:
        bad.to_netcdf(src, engine="h5netcdf")
    assert main(["import", str(src), "--out", str(tmp_path / "data"), "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "data" / "dataset.h5").exists()  # nothing that looks finished


def test_unreadable_sources(tmp_path, capsys):
    (tmp_path / "notes.nc").write_text("not a dataset")
    for source, message in ((tmp_path / "missing.nc", "does not exist"), (tmp_path / "notes.nc", "cannot read")):
        assert main(["import", str(source), "--out", str(tmp_path / "d")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_train_and_run_on_imported_data(tmp_path, capsys):
    src = tmp_path / "source.nc"
    cf_latlon().to_netcdf(src, engine="h5netcdf")
    data = tmp_path / "data"
    assert main(["import", str(src), "--out", str(data), "--preset", "tiny"]) == 0
    assert main(["run", "--data", str(data), "--preset", "tiny", "--workdir", str(tmp_path / "w"), "--quiet",
                 "--methods", "free,ld_ensf,levda", "--noise", "0.1"]) == 0  # the case comes from the dataset
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    results = report["levels"]["0.1"]
    assert report["case"] == "imported" and results["free"] == {
        "skipped": "needs the full solver, and this dataset was imported without one"}
    assert len(results["ld_ensf"]["full_rel_rmse"]) == T and np.isfinite(results["levda"]["full_rel_rmse"]).all()
    capsys.readouterr()
    assert main(["assimilate", "--data", str(data), "--preset", "tiny", "--out", str(tmp_path / "a"),
                 "--filter", "ensf"]) == 2
    assert "EnSF needs the full solver" in capsys.readouterr().err


def test_own_netcdf_example(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    import own_netcdf

    errors = own_netcdf.main(["--workdir", str(tmp_path)])
    assert set(errors) == {"ld_ensf", "levda"} and all(0 < e < 1.5 for e in errors.values())
    assert TrajectoryStore(tmp_path / "data").n_trajectories == 12

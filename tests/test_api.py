"""The Python API (ldensf_hpc.api): the CLI's objects from Python, one code path, xarray/NetCDF results."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ldensf_hpc as ld
from ldensf_hpc.cli import main
from ldensf_hpc.data.dataset import TrajectoryStore
from ldensf_hpc.errors import ConfigError


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    case = ld.Case.load("swe", preset="tiny")
    data = case.generate(root / "data")
    models = case.train(data, root / "models")
    return root, case, data, models


def test_python_pipeline_equals_the_command(pipeline, monkeypatch):
    """ld.assimilate and `ldensf assimilate` run the same code: the same numbers, to the bit."""
    root, case, data, models = pipeline
    result = ld.assimilate(case, "ld_ensf", data, models=models)
    monkeypatch.chdir(root)
    assert main(["assimilate", "--preset", "tiny", "--data", "data", "--out", "cli", "--filter", "ld_ensf",
                 "--models", "models"]) == 0
    written = json.loads((root / "cli" / "assimilate_ld_ensf.json").read_text())
    assert written["full_rel_rmse"] == result.record["full_rel_rmse"]
    assert written["summary"] == result.record["summary"]
    assert result.record["summary"]["mean_full_rel_rmse"] < 1.0


def test_result_as_xarray_and_netcdf(pipeline, tmp_path):
    import xarray as xr

    _, case, data, models = pipeline
    result = ld.assimilate(case, "ld_ensf", data, models=models)
    ds = result.to_xarray()
    store = TrajectoryStore(data)
    T = len(result.record["time"])
    assert ds["eta_mean"].dims == ("time", "y", "x") and ds["eta_mean"].shape == (T, store.ny, store.nx)
    np.testing.assert_array_equal(ds["x"].values, store.x)
    np.testing.assert_array_equal(ds["time"].values, result.record["time"])
    assert ds["eta_mean"].attrs["units"] == "m" and ds["u_spread"].attrs["units"] == "m/s"
    assert ds["time"].attrs["units"] == "s" and ds.attrs["method"] == "ld_ensf"
    assert list(ds["param"].values) == ["bump_x", "bump_y"] and ds["params"].dims == ("time", "member", "param")
    np.testing.assert_array_equal(ds["eta_truth"].values[0], store.frames(result.record["trajectory"])[0, 0])
    assert float(ds["eta_spread"].min()) >= 0
    path = result.to_netcdf(tmp_path / "analysis.nc")
    with xr.open_dataset(path, engine="h5netcdf") as back:
        xr.testing.assert_identical(back.load(), ds)
    assert [p.name for p in tmp_path.iterdir()] == ["analysis.nc"]  # written atomically, no leftovers


def test_case_load_checks_like_the_command():
    with pytest.raises(ConfigError, match="ldnet.lr must be > 0"):
        ld.Case.load("swe", preset="tiny", overrides=["ldnet.lr=-1"])
    assert ld.Case.load("kolmogorov", preset="tiny").name == "kolmogorov"
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        ld.nosuch  # noqa: B018


def test_example_pipeline_runs_on_the_tiny_preset(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "pipeline_from_python.py"
    run = subprocess.run([sys.executable, str(script), "--preset", "tiny", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "time-mean rel-RMSE" in run.stdout and (tmp_path / "ld_ensf.nc").is_file()


def test_changed_surrogate_settings_are_not_reused(pipeline):
    """A finished checkpoint and its summary are reused only for the settings they were trained with."""
    from ldensf_hpc.errors import DataError

    _, case, data, models = pipeline
    assert case.train(data, models).summaries["ldnet"] == case.train(data, models).summaries["ldnet"]  # reused
    changed = ld.Case.load("swe", preset="tiny", overrides=["ldnet.epochs=21"])
    with pytest.raises(DataError, match="trained with another configuration"):
        changed.train(data, models)

"""Sensor logs (ldensf_hpc.sensor_log): the user's readings in place of synthetic observations."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ldensf_hpc as ld
from ldensf_hpc.cli import main
from ldensf_hpc.data.dataset import TrajectoryStore
from ldensf_hpc.experiment import Experiment

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    case = ld.Case.load("swe", preset="tiny")
    return case, case.generate(root / "data")


def synthetic_log(case, data) -> pd.DataFrame:
    """The synthetic observations of the first test trajectory as a log, row by row."""
    experiment = Experiment(case.cfg, data)
    obs = experiment.observations(case.cfg.observe.noise)
    store, rows = TrajectoryStore(data), []
    for frame, op, y, std in zip(experiment.problem.frames, experiment.problem.operators, obs.y, obs.std):
        field, point = np.divmod(op.index, store.ny * store.nx)
        j, i = np.divmod(point, store.nx)
        rows += [(store.time[frame], store.x[a], store.y[b], store.field_names[f], v, s)
                 for a, b, f, v, s in zip(i, j, field, y, std)]
    return pd.DataFrame(rows, columns=["time", "x", "y", "field", "value", "std"])


@pytest.mark.parametrize("fmt", ["csv", "nc"])
def test_a_log_of_the_synthetic_observations_gives_the_synthetic_analysis(data, tmp_path, fmt):
    case, directory = data
    table = synthetic_log(case, directory).sample(frac=1.0, random_state=0)  # any row order
    path = tmp_path / f"log.{fmt}"
    if fmt == "csv":
        table.to_csv(path, index=False)
    else:
        table.to_xarray().drop_vars("index").to_netcdf(path, engine="h5netcdf")
    from_log = ld.assimilate(case, "ensf", directory, observations=path)
    synthetic = ld.assimilate(case, "ensf", directory)
    assert from_log.record["full_rel_rmse"] == synthetic.record["full_rel_rmse"]
    assert from_log.record["sensor_log"]["max_position_shift"] == 0.0 and from_log.record["sensor_log"]["max_time_shift"] == 0.0


def _bad(table: pd.DataFrame, what: str) -> pd.DataFrame:
    table = table.copy()
    if what == "no value":
        return table.drop(columns="value")
    if what == "unknown field":
        table.loc[3, "field"] = "salinity"
    elif what == "outside":
        table.loc[5, "x"] = 1e9
    elif what == "late start":
        table = table[table["time"] > 0]
    elif what == "duplicate":
        table = pd.concat([table, table.iloc[[0]]])
    elif what == "nan":
        table.loc[2, "value"] = np.nan
    elif what == "std":
        table.loc[1, "std"] = 0.0
    elif what == "moved":
        table.loc[0, "x"] += np.diff(np.unique(table["x"]))[0] / 2  # between two sensors of the grid
    elif what == "off times":
        table = table[table["time"] != sorted(set(table["time"]))[1]]
    return table


@pytest.mark.parametrize("what, message", [
    ("no value", "lacks the column(s) value"),
    ("unknown field", "unknown field(s) ['salinity']"),
    ("outside", "reading 5 has x = 1e+09, outside the grid"),
    ("late start", "the log must begin there"),
    ("duplicate", "two readings of one field fall on one grid point"),
    ("nan", "column value has a NaN or Inf (row 2)"),
    ("std", "std must be > 0 (row 1)"),
    ("moved", "pass --set observe.sensors=moving"),
    ("off times", "pass --set observe.irregular=true"),
])
def test_bad_logs_are_one_line_errors(data, tmp_path, capsys, what, message):
    case, directory = data
    path = tmp_path / "log.csv"
    _bad(synthetic_log(case, directory), what).to_csv(path, index=False)
    assert main(["assimilate", "--preset", "tiny", "--data", str(directory), "--out", str(tmp_path / "a"),
                 "--filter", "ensf", "--observations", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_drifting_buoys_example(tmp_path, monkeypatch):
    """examples/sensor_logs.py: moving, off-grid sensors through LD-EnSF's point-set encoder and EnSF."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import sensor_logs

    errors = sensor_logs.main(["--preset", "tiny", "--workdir", str(tmp_path)])
    assert set(errors) == {"ld_ensf", "ensf"} and all(0 < e < 1.5 for e in errors.values())

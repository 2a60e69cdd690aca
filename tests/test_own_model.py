"""A simulator of the user's own (examples/blob_model.py, outside the package) through the whole engine:
named by its import path, generated serially, on Dask and under mpiexec to the same bytes, trained and
assimilated end to end."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from problems import ROUND_OFF

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CASE = "blob_model:Blob"


def ldensf(*args, cwd, launcher=()):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([*launcher, sys.executable, "-m", "ldensf_hpc.cli", *map(str, args)], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return run


def shards(directory: Path) -> dict:
    return {e["name"]: e["sha256"] for e in json.loads((directory / "manifest.json").read_text())["shards"]}


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    root = tmp_path_factory.mktemp("blob")
    ldensf("generate", "--case", CASE, "--preset", "tiny", "--out", "data", "--backend", "serial", cwd=root)
    return root


def test_dask_workers_import_the_model_and_write_the_serial_bytes(serial, tmp_path):
    ldensf("generate", "--case", CASE, "--preset", "tiny", "--out", "data", "--workers", "2", cwd=tmp_path)
    assert shards(tmp_path / "data") == shards(serial / "data")


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec")
def test_mpi_ranks_import_the_model_and_write_the_serial_bytes(serial, tmp_path):
    ldensf("generate", "--case", CASE, "--preset", "tiny", "--out", "data", "--backend", "mpi", cwd=tmp_path,
           launcher=("mpiexec", "-n", "2"))
    assert shards(tmp_path / "data") == shards(serial / "data")


def test_train_and_run_on_the_own_model(serial):
    ldensf("run", "--case", CASE, "--preset", "tiny", "--workdir", ".", "--methods", "free,ensf,ld_ensf",
           "--noise", "0", "--quiet", cwd=serial)
    report = json.loads((serial / "report.json").read_text())
    assert report["case"] == CASE and report["config"][CASE]["n"] == 16  # the case's own tiny preset
    results = report["levels"]["0"]
    mean = {m: sum(results[m]["full_rel_rmse"]) / len(results[m]["full_rel_rmse"]) for m in ("free", "ensf", "ld_ensf")}
    assert mean["ensf"] < mean["free"]  # noise-free observations improve on the free run
    assert results["ld_ensf"]["param_rel_error"][-1] < report["prior_param_rel_error"]


def test_the_model_section_alias_and_clear_errors(serial, tmp_path):
    """``--set model.*`` reaches the case's own section; a bad path or class is one line."""
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES)}
    cmd = [sys.executable, "-m", "ldensf_hpc.cli", "generate", "--preset", "tiny", "--out", str(tmp_path / "x"),
           "--backend", "serial"]
    for args, message in ((["--case", CASE, "--set", "model.n=2"], "model.n must be >= 4, got 2"),
                          (["--case", "no_such_module:Model"], "cannot import case 'no_such_module:Model': "
                                                                 "ModuleNotFoundError"),
                          (["--case", "blob_model:BlobConfig"], "is not a complete subclass of ldensf_hpc.cases.Case"),
                          (["--case", CASE, "--set", "model.nope=1"], "nope")):
        run = subprocess.run(cmd + args, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and message in run.stderr and len(run.stderr.splitlines()) == 1, run.stderr
    assert not (tmp_path / "x").exists()


def test_the_example_runs_from_python(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import blob_model

    errors = blob_model.main(["--workdir", str(tmp_path)])
    assert set(errors) == {"free", "ensf", "ld_ensf"} and all(0 < e < 2 for e in errors.values())


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec")
def test_full_space_ensf_on_the_own_model_is_rank_count_invariant(serial):
    """The EnSF baseline steps the user's model with its members sharded over two MPI ranks: the same numbers
    to float32 round-off (the full-space default precision, problems.ROUND_OFF)."""
    args = ("assimilate", "--case", CASE, "--preset", "tiny", "--data", "data", "--filter", "ensf")
    ldensf(*args, "--out", "one", cwd=serial)
    ldensf(*args, "--out", "two", "--backend", "mpi", cwd=serial, launcher=("mpiexec", "-n", "2"))
    one, two = (json.loads((serial / d / "assimilate_ensf.json").read_text()) for d in ("one", "two"))
    assert two["ranks"] == 2 and one["ranks"] == 1
    np.testing.assert_allclose(two["full_rel_rmse"], one["full_rel_rmse"], rtol=ROUND_OFF["float32"], atol=0)

"""SLURM templates rendered by ``ldensf jobs render`` and run on a real local SLURM.

The cluster is a one-node slurmctld + slurmd started by jobs/slurm/local_cluster.sh
(needs Debian's slurm-wlm and munge, which .ci/run installs). Without them the
SLURM tests are skipped with the reason printed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from ldensf_hpc.cli import main
from ldensf_hpc.jobs import SLURM_TEMPLATES, SlurmJob, render_slurm

ROOT = Path(__file__).resolve().parents[1]
HAVE_SLURM = all(shutil.which(c) or os.path.exists(f"/usr/sbin/{c}") for c in ("slurmctld", "slurmd", "sbatch", "munged"))
NO_SLURM = "SLURM not installed (apt-get install -y slurm-wlm munge)"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.mark.parametrize("template", SLURM_TEMPLATES)
def test_render_fills_every_knob(template):
    text = render_slurm(SlurmJob(template, nodes=3, ntasks_per_node=2, cpus_per_task=4, gpus=1,
                                 partition="gpu", account="proj42", preset="paper"))
    assert "${" not in text and "$$" not in text
    assert "#SBATCH --partition=gpu" in text and "#SBATCH --account=proj42" in text
    assert "#SBATCH --gpus-per-node=1" in text and f"--job-name=ldensf-{template}-swe-paper" in text
    if template not in ("timing", "scaling"):  # the benchmarks choose their own sizes
        assert "--preset paper" in text
    assert "cpus-per-task=4" in text or template == "generate_dask"


def test_render_rejects_bad_knobs(capsys):
    assert main(["jobs", "render", "slurm", "generate", "--nodes", "0"]) == 2
    assert "--nodes must be >= 1" in capsys.readouterr().err
    assert main(["jobs", "render", "slurm", "nosuch"]) == 2
    assert "unknown SLURM template" in capsys.readouterr().err


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if not HAVE_SLURM:
        pytest.skip(NO_SLURM)
    if not IS_ROOT:
        pytest.skip("the local SLURM daemons run as root (SlurmUser=root)")
    state = tmp_path_factory.mktemp("slurm")
    script = ROOT / "jobs" / "slurm" / "local_cluster.sh"
    started = subprocess.run([str(script), "start", str(state)], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.skip(f"could not start a local SLURM: {started.stderr.strip()}")
    env = dict(os.environ, SLURM_CONF=str(state / "slurm.conf"))
    yield env
    subprocess.run([str(script), "stop", str(state)], check=False)


def _wait_for(job_id: str, env: dict, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], env=env, capture_output=True, text=True)
        if not out.stdout.strip():
            break
        time.sleep(1)
    else:
        info = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True).stdout
        pytest.fail(f"SLURM job {job_id} did not finish in {timeout} s:\n{info}")


def _assert_dataset(path: Path, n_trajectories: int):
    with h5py.File(path / "dataset.h5", "r") as f:
        assert f.attrs["complete"]
        fields = f["fields"][...]
        assert fields.shape[0] == n_trajectories and np.isfinite(fields).all()


def test_sbatch_generate_template(slurm, tmp_path):
    script = tmp_path / "gen.sbatch"
    data = tmp_path / "data"
    assert main(["jobs", "render", "slurm", "generate", "--preset", "tiny", "--ntasks-per-node", "2",
                 "--data", str(data), "--out", str(script), "--time", "00:05:00"]) == 0
    job = subprocess.run(["sbatch", "--parsable", "-D", str(tmp_path), str(script)], env=slurm,
                         capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    _wait_for(job, slurm)
    logs = "\n".join(p.read_text() for p in tmp_path.glob("*.out"))
    assert (data / "dataset.h5").exists(), f"job wrote no dataset; log:\n{logs}"
    _assert_dataset(data, 6)


def test_generate_with_dask_jobqueue(slurm, tmp_path):
    data = tmp_path / "data"
    run = subprocess.run([sys.executable, "-m", "ldensf_hpc.cli", "generate", "--case", "swe", "--preset", "tiny",
                          "--out", str(data), "--scheduler", "slurm", "--workers", "1"],
                         env=slurm, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    _assert_dataset(data, 6)

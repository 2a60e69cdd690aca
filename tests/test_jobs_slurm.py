"""SLURM templates rendered by ``ldensf jobs render`` and run on a real local SLURM.

The cluster is a one-node slurmctld + slurmd started by jobs/slurm/local_cluster.sh
(needs Debian's slurm-wlm and munge, which .ci/run installs). Without them the
SLURM tests are skipped with the reason printed.
"""
from __future__ import annotations

import os
import shlex
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


AWKWARD = "sp ace/it's"


@pytest.mark.parametrize("template", SLURM_TEMPLATES)
def test_rendered_scripts_are_valid_bash_with_awkward_paths(template, tmp_path):
    """Paths with spaces and quotes, --config and --set are shell-quoted: bash -n accepts every script
    and the command line splits back into exactly the arguments given."""
    config = tmp_path / AWKWARD / "my config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("data:\n  n_trajectories: 4\n")
    takes_config = template not in ("timing", "scaling")
    job = SlurmJob(template, data=str(tmp_path / AWKWARD / "data"), runs=str(tmp_path / AWKWARD / "runs"),
                   workdir=str(tmp_path / AWKWARD), config=str(config) if takes_config else None,
                   overrides=("observe.noise=0.05",) if template == "assimilate" else ())
    script = tmp_path / "job.sbatch"
    script.write_text(render_slurm(job))
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    command = script.read_text().strip().splitlines()[-1]
    words = shlex.split(command)
    assert f"cd {shlex.quote(job.workdir)}\n" in script.read_text()
    if takes_config:
        assert words[words.index("--config") + 1] == str(config)
        flag = "--out" if template.startswith("generate") else "--data"
        assert words[words.index(flag) + 1] == job.data


def test_render_refuses_what_the_job_could_not_run(capsys, tmp_path):
    for argv, message in [
        (["--time", "banana"], "--time 'banana' is not a SLURM time"),
        (["--set", "swe.n=abc"], "swe.n: expected a number"),
        (["--set", "ldnet.lr=0.1"], "`ldensf generate` does not read ldnet.lr"),
        (["--config", str(tmp_path / "missing.yaml")], "cannot read config file"),
        (["--partition", "gpu; rm -rf ~"], "is not a SLURM name"),
    ]:
        assert main(["jobs", "render", "slurm", "generate", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(["jobs", "render", "slurm", "timing", "--set", "swe.n=64"]) == 2
    assert "takes no --config or --set" in capsys.readouterr().err


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


def test_sbatch_generate_template(slurm, tmp_path, monkeypatch):
    """A rendered job with awkward paths (a space and a quote), a --config file and a --set runs on SLURM."""
    work = tmp_path / AWKWARD
    work.mkdir(parents=True)
    config = work / "my config.yaml"
    config.write_text("data:\n  n_trajectories: 4\n")
    monkeypatch.chdir(work)  # the job's workdir
    script, data = work / "gen.sbatch", work / "da ta"
    assert main(["jobs", "render", "slurm", "generate", "--preset", "tiny", "--ntasks-per-node", "2",
                 "--data", str(data), "--out", str(script), "--time", "00:05:00", "--config", str(config),
                 "--set", "data.shard_size=1"]) == 0
    job = subprocess.run(["sbatch", "--parsable", "-D", str(work), str(script)], env=slurm,
                         capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    _wait_for(job, slurm)
    logs = "\n".join(p.read_text() for p in work.glob("*.out"))
    assert (data / "dataset.h5").exists(), f"job wrote no dataset; log:\n{logs}"
    _assert_dataset(data, 4)
    assert len(list((data / "shards").glob("*.h5"))) == 4  # data.shard_size=1 reached the job


def test_generate_with_dask_jobqueue(slurm, tmp_path):
    data = tmp_path / "data"
    run = subprocess.run([sys.executable, "-m", "ldensf_hpc.cli", "generate", "--case", "swe", "--preset", "tiny",
                          "--out", str(data), "--scheduler", "slurm", "--workers", "1"],
                         env=slurm, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    _assert_dataset(data, 6)

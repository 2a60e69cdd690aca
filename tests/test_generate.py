"""Dataset generation: HDF5 layout, determinism across backends and grouping, resume after kills, bad input.

Reference data come from the serial backend; every other way of generating (Dask
workers, other shard sizes, interrupted and resumed runs) must give the same bytes.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from distributed.diagnostics.plugin import WorkerPlugin

from ldensf_hpc import __version__, cases
from ldensf_hpc.backend import rng_for
from ldensf_hpc.cases import config_from_dict, load_config
from ldensf_hpc.cli import main
from ldensf_hpc.data import store
from ldensf_hpc.data.generate import frame_schedule, generate, simulate
from ldensf_hpc.errors import DataError

CASES = ("swe", "kolmogorov", "atmosphere")
# Slower shards (one trajectory each) so that a run can be killed while it works.
LONG = ("data.n_trajectories=6", "data.shard_size=1", "swe.n_steps=120")


def test_every_case_has_the_shared_presets_and_medium_is_the_papers_grid():
    """tiny, small and paper exist for every registered case; medium (SWE, Kolmogorov) is 150 x 150 with the
    paper's latent frames (51 and 40, DESIGN.md); a case without it is refused naming what it has."""
    from ldensf_hpc.errors import ConfigError

    frames = {"swe": 51, "kolmogorov": 40}
    for case in (name for name in cases.CASES if ":" not in name):
        for preset in cases.PRESETS:
            try:
                cfg = load_config(preset, case=case)
            except ConfigError as exc:
                assert preset == "medium" and case not in frames, exc
                assert str(exc) == f"case {case} has no preset 'medium'; choose one of tiny, small, paper"
                continue
            assert cfg.preset == preset and cfg.case == case
            if preset == "medium":
                schedule = frame_schedule(cfg)
                assert cfg.model.n == 150
                assert len(range(0, schedule.n_frames, cfg.ldnet.frame_every)) == frames[case]


def shard_digests(root: Path) -> dict[str, str]:
    return {p.name: store.sha256_file(p) for p in sorted((root / store.SHARDS).glob("*.h5"))}


def assert_same_dataset(root: Path, reference: Path) -> None:
    """Byte-identical shards, dataset.h5 and manifest."""
    assert shard_digests(root) == shard_digests(reference)
    for name in (store.DATASET, store.MANIFEST):
        assert (root / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Serial reference datasets: tiny presets of both cases and the LONG swe variant."""
    root = tmp_path_factory.mktemp("reference")
    runs = {case: load_config("tiny", case=case) for case in CASES}
    runs["long"] = load_config("tiny", case="swe", overrides=LONG)
    for name, cfg in runs.items():
        generate(cfg, root / name, backend="serial", progress=False)
    return root


@pytest.fixture(scope="module")
def cluster():
    """A two-worker local Dask cluster shared by the Dask tests."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        with Client(c) as client:
            yield c, client


# ------------------------------------------------------------------ layout


@pytest.mark.parametrize("case", CASES)
def test_tiny_dataset_layout_and_contents(reference, case):
    cfg = load_config("tiny", case=case)
    model, schedule = cases.get(cfg.case).model(cfg), frame_schedule(cfg)
    n, T = cfg.data.n_trajectories, schedule.n_frames
    with store.open_dataset(reference / case) as f:
        attrs = dict(f.attrs)
        fields, params, t, x, y = (f[k][()] for k in ("fields", "params", "time", "x", "y"))
        assert f["fields"].is_virtual and f["fields"].dtype == np.float32
    section = cfg.model
    if case == "swe":  # every save_every-th of n_steps steps, initial state included
        assert T == section.n_steps // section.save_every + 1
    else:  # warmup_frames dropped, n_frames kept
        assert T == section.n_frames
    first = model.to_fields(model.initial_state(model.sample_params(rng_for(0, 0), 1)))
    assert fields.shape == (n, T, *first.shape[1:]) and first.shape[1] == len(model.field_names)
    assert params.shape == (n, len(model.param_names))
    np.testing.assert_allclose(np.diff(t), attrs["dt"], rtol=1e-12)
    np.testing.assert_allclose(t[0], schedule.warmup_steps * model.dt, rtol=1e-12, atol=0)
    coordinates = cases.get(case).coordinates(model, *fields.shape[-2:])
    np.testing.assert_array_equal(x, coordinates[0])
    np.testing.assert_array_equal(y, coordinates[1])
    if case != "atmosphere":  # square grids spaced dx; the sphere's are longitudes and Gauss latitudes [degrees]
        np.testing.assert_allclose(np.diff(x), model.grid["dx"], rtol=1e-12)
        np.testing.assert_array_equal(x, y)
    assert attrs["geometry"] == cases.get(case).geometry
    assert config_from_dict(json.loads(attrs["config"])).to_dict() == cfg.to_dict()
    assert attrs["case"] == case and attrs["version"] == __version__ and attrs["seed"] == cfg.data.seed
    assert bool(attrs["complete"])
    assert json.loads(attrs["field_names"]) == list(model.field_names)
    assert json.loads(attrs["param_names"]) == list(model.param_names)
    assert json.loads(attrs["grid"])["dx"] == model.grid["dx"]
    units = json.loads(attrs["units"])
    assert set(units) >= {*model.field_names, *model.param_names, "x", "y", "time"}
    if case == "swe":
        assert (units["eta"], units["u"], units["time"], units["bump_x"]) == ("m", "m/s", "s", "m")
    if case == "atmosphere":  # lat/lon coordinates, rows north to south, and the forcing parameters' units
        assert (units["x"], units["y"], units["u"], units["hf0"], units["sigma"]) == \
            ("degrees_east", "degrees_north", "m/s", "m/h", "rad")
        assert x[0] == 0.0 and np.all(np.diff(y) < 0) and -90 < y[-1] < y[0] < 90
    # The virtual dataset reads each shard's rows; trajectory i is simulate() of i alone.
    for entry in json.loads((reference / case / store.MANIFEST).read_text())["shards"]:
        with h5py.File(reference / case / store.SHARDS / entry["name"]) as shard:
            a, b = entry["start"], entry["stop"]
            np.testing.assert_array_equal(fields[a:b], shard["fields"][()])
            np.testing.assert_array_equal(shard["trajectory"][()], np.arange(a, b))
    for i in (0, n - 1):
        alone, p = simulate(model, schedule, cfg.data.seed, i, i + 1)
        np.testing.assert_array_equal(fields[i], alone[0])
        np.testing.assert_array_equal(params[i], model.sample_params(rng_for(cfg.data.seed, i), 1)[0])
    assert np.all(np.isfinite(fields)) and np.ptp(params, axis=0).min() > 0
    if case == "swe":  # the stored first frame is the bump, peaked at its centre (cell centres x, y)
        for i in range(n):
            j, k = np.unravel_index(np.argmax(fields[i, 0, 0]), fields.shape[-2:])
            assert abs(x[k] - params[i, 0]) <= x[1] - x[0] and abs(y[j] - params[i, 1]) <= x[1] - x[0]


@pytest.mark.parametrize("case", CASES)
def test_trajectories_do_not_depend_on_shard_size(reference, tmp_path, case):
    """Batches of 4 + 2 members give the bits of batches of 2 (member-wise batch independence)."""
    generate(load_config("tiny", case=case, overrides=["data.shard_size=4"]), tmp_path, backend="serial",
             progress=False)
    with store.open_dataset(tmp_path) as f, store.open_dataset(reference / case) as g:
        np.testing.assert_array_equal(f["fields"][()], g["fields"][()])
        np.testing.assert_array_equal(f["params"][()], g["params"][()])


# ------------------------------------------------------------------ Dask


@pytest.mark.parametrize("case", CASES)
def test_dask_workers_match_serial_bytes(reference, cluster, tmp_path, case):
    generate(load_config("tiny", case=case), tmp_path, scheduler=cluster[0].scheduler_address, progress=False)
    assert_same_dataset(tmp_path, reference / case)
    with store.open_dataset(tmp_path) as f, store.open_dataset(reference / case) as g:
        np.testing.assert_array_equal(f["fields"][()], g["fields"][()])


class KillOnFirstRun(WorkerPlugin):
    """Test-only worker plugin: the worker that starts shard ``name`` dies (once, marked by ``marker``)."""

    name = "kill-on-first-run"

    def __init__(self, shard: str, marker: str):
        self.shard, self.marker = shard, marker

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and self.shard in str(key):
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
            os._exit(1)


def test_killed_dask_worker_is_replaced_and_data_unchanged(reference, cluster, tmp_path):
    _, client = cluster
    marker = tmp_path / "killed"
    client.register_plugin(KillOnFirstRun("shard-00003.h5", str(marker)))
    try:
        generate(load_config("tiny", case="swe", overrides=LONG), tmp_path / "out",
                 scheduler=cluster[0].scheduler_address, progress=False)
    finally:
        client.unregister_worker_plugin(KillOnFirstRun.name)
    assert marker.exists(), "no worker was killed"
    assert_same_dataset(tmp_path / "out", reference / "long")


# ------------------------------------------------------------------ resume


def test_killed_generate_command_resumes_to_the_same_bytes(reference, tmp_path, ldensf):
    out = tmp_path / "out"
    args = ["generate", "--case", "swe", "--preset", "tiny", "--out", str(out), "--workers", "2",
            *(a for s in LONG for a in ("--set", s))]
    proc = subprocess.Popen([sys.executable, "-m", "ldensf_hpc.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # own group: kill it all
    try:
        deadline = time.monotonic() + 60
        while not list((out / store.SHARDS).glob("*.h5")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its Dask workers
        proc.wait()
    finished = {p.name for p in (out / store.SHARDS).glob("*.h5")}
    assert 1 <= len(finished) < 6, "the run was not killed mid-way"
    assert not (out / store.DATASET).exists()
    expected = shard_digests(reference / "long")
    manifest = json.loads((out / store.MANIFEST).read_text())
    for name in finished:  # every file that looks finished is finished
        assert store.sha256_file(out / store.SHARDS / name) == expected[name]
    for entry in manifest["shards"]:
        assert entry["sha256"] in (None, expected[entry["name"]])
    rerun = ldensf(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert int(re.search(r"\((\d+) reused\)", rerun.stdout).group(1)) >= len(finished)
    assert not list((out / store.SHARDS).glob("*.tmp"))
    assert_same_dataset(out, reference / "long")


def test_corrupt_shard_is_refused_by_open_and_redone_by_rerun(reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference / "swe", out)
    shard = out / store.SHARDS / store.shard_name(1)
    shard.write_bytes(shard.read_bytes()[:1000])
    (out / store.SHARDS / "shard-00002.h5.123-abcdef00.tmp").write_bytes(b"half-written")
    with pytest.raises(DataError, match="shard-00001.h5"):
        store.open_dataset(out)
    with pytest.raises(DataError, match="no dataset at"):
        store.open_dataset(tmp_path / "missing")
    summary = generate(load_config("tiny", case="swe"), out, backend="serial", progress=False)
    assert (summary.n_shards, summary.n_reused) == (3, 2)
    assert "shard-00001.h5" in capsys.readouterr().err
    assert_same_dataset(out, reference / "swe")
    manifest = json.loads((out / store.MANIFEST).read_text())
    manifest["shards"][0]["sha256"] = "0" * 64  # a checksum that the file does not match
    (out / store.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="shard-00000.h5.*sha256"):
        store.open_dataset(out)


def test_other_config_in_same_directory_is_refused(reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference / "swe", out)
    with pytest.raises(DataError, match=r"different configuration \(differs in: swe.n\)"):
        generate(load_config("tiny", case="swe", overrides=["swe.n=16"]), out, backend="serial", progress=False)
    with pytest.raises(DataError, match=r"differs in: case, kolmogorov\.backend, .*, swe\.n_steps"):
        generate(load_config("tiny", case="kolmogorov"), out, backend="serial", progress=False)
    assert_same_dataset(out, reference / "swe")
    (out / store.MANIFEST).unlink()
    with pytest.raises(DataError, match="without manifest.json"):
        generate(load_config("tiny", case="swe"), out, backend="serial", progress=False)


# ------------------------------------------------------------------ the command on bad input


def test_bad_input_gives_one_line_errors(tmp_path):
    """Each bad input: exit code 2, one line ``ldensf: error: ...`` naming the problem, no traceback."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    base = ["generate", "--case", "swe", "--preset", "tiny", "--workers", "1", "--out", tmp_path / "out"]
    cases = {
        "unknown preset": (["--preset", "huge"], "unknown preset 'huge'"),
        "unstable dt": (["--set", "swe.cfl=5"], "swe.cfl"),
        "negative depth": (["--set", "swe.depth=-1"], "swe.depth must be positive"),
        "unstable in a worker": (["--case", "kolmogorov", "--set", "kolmogorov.dt=0.5"], "CFL"),
        "out is a file": (["--out", a_file], "is not a directory"),
    }
    procs = {name: subprocess.Popen([sys.executable, "-m", "ldensf_hpc.cli", *map(str, base + args)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (args, _) in cases.items()}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (name, err)
        assert err.startswith("ldensf: error: ") and cases[name][1] in err, (name, err)
    assert not (tmp_path / "out" / store.DATASET).exists()


def test_bad_output_and_scheduler_give_one_line_errors(reference, tmp_path, capsys):
    garbled = tmp_path / "garbled"
    shutil.copytree(reference / "swe", garbled)
    (garbled / store.MANIFEST).write_text("{ not json")
    (tmp_path / "a-file").write_text("")
    cases = {
        "out below a file": (["--out", tmp_path / "a-file" / "sub"], "cannot write to output directory"),
        "garbled manifest": (["--out", garbled], "manifest.json is unreadable"),
        "other config": (["--set", "swe.n=16", "--out", reference / "swe"], "different configuration"),
        "unknown scheduler": (["--scheduler", "nowhere", "--out", tmp_path / "x"], "unknown Dask scheduler"),
    }
    if importlib.util.find_spec("dask_mpi") is None:
        cases["no dask-mpi"] = (["--scheduler", "mpi", "--out", tmp_path / "x"], "pip install dask-mpi")
    for name, (args, message) in cases.items():
        code = main(["generate", "--case", "swe", "--preset", "tiny", *map(str, args)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("ldensf: error: ") and message in err, (name, err)
        assert len(err.strip().splitlines()) == 1, (name, err)


def test_commands_reading_a_corrupt_shard_give_one_line_errors(reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference / "swe", out)
    shard = out / store.SHARDS / store.shard_name(1)
    shard.write_bytes(shard.read_bytes()[:1000])
    for argv in (["train", "--data", out, "--out", tmp_path / "models"],
                 ["assimilate", "--data", out, "--out", tmp_path / "da"]):
        code = main([*map(str, argv), "--case", "swe", "--preset", "tiny"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("ldensf: error: ") and "shard-00001.h5" in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err


def test_slurm_cluster_job_script_uses_the_cluster_config():
    from ldensf_hpc.parallel.dask import slurm_cluster

    cfg = load_config("tiny", overrides=["cluster.queue=debug", "cluster.account=proj42", "cluster.cores=4"])
    with slurm_cluster(cfg.cluster) as cluster:
        script = cluster.job_script()
    for line in ("#SBATCH -p debug", "#SBATCH -A proj42", "#SBATCH --cpus-per-task=4", "#SBATCH -t 01:00:00",
                 "export NUMBA_NUM_THREADS=1", "export OMP_NUM_THREADS=1", "--nthreads 1", "--nworkers 4"):
        assert line in script, line

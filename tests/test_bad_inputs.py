"""Bad, hostile and faulty inputs across every subcommand: each is refused with exit code 2 and
one line on stderr naming the setting or file, without a traceback, and nothing on disk changes.

The rows run in-process through ``ldensf_hpc.cli.main`` (an uncaught exception fails the test,
as a traceback would fail the user), in a workspace holding a tiny dataset and its surrogates.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ldensf_hpc.cases import load_config
from ldensf_hpc.cli import main
from ldensf_hpc.config import parse_override
from ldensf_hpc.errors import ConfigError

D = ["--preset", "tiny"]
GEN = ["generate", *D, "--out", "new", "--backend", "serial"]
TRAIN = ["train", *D, "--data", "data", "--out", "new", "--quiet"]
ASSIM = ["assimilate", *D, "--data", "data", "--out", "new"]
RUN = ["run", *D, "--workdir", "new", "--quiet"]
RENDER = ["jobs", "render", "slurm"]

CASES = [
    # config files and overrides (any command loads them the same way)
    (GEN + ["--preset", "nope"], "unknown preset 'nope'"),
    (GEN + ["--config", "missing.yaml"], "missing.yaml"),
    (GEN + ["--config", "bad.yaml"], "bad.yaml is not valid YAML"),
    (GEN + ["--config", "binary.yaml"], "binary.yaml is not valid YAML"),
    (GEN + ["--config", "list.yaml"], "list.yaml must hold a mapping"),
    (GEN + ["--config", "adir"], "adir"),
    (GEN + ["--set", "swe.n=[1,"], "not valid YAML"),
    (GEN + ["--set", "noequals"], "must look like key.sub=value"),
    (GEN + ["--set", "=5"], "empty key"),
    (GEN + ["--set", "swe..n=3"], "empty key"),
    (GEN + ["--set", "swe.nope=3"], "unknown field(s) ['nope']"),
    (GEN + ["--set", "nosection.x=1"], "unknown config section(s) ['nosection']"),
    (GEN + ["--set", "swe.n=abc"], "swe.n: expected a number, got 'abc'"),
    (GEN + ["--set", "swe.n=1.5"], "swe.n: expected an integer"),
    (GEN + ["--set", "swe.n=.nan"], "swe.n: must be a finite number, got nan"),
    (GEN + ["--set", "swe.n=-4"], "swe.n must be >= 4"),
    (GEN + ["--set", "data.n_trajectories=0"], "data.n_trajectories"),
    (GEN + ["--set", "data.split=[0.5,0.5]"], "data.split: expected 3 values"),
    (GEN + ["--set", "data.split=[0.9,0.2,0.2]"], "data.split must sum to 1"),
    (GEN + ["--set", "data.shard_size=0"], "data.shard_size must be >= 1"),
    (GEN + ["--set", "data.seed=-1"], "data.seed must be >= 0"),
    (GEN + ["--set", "swe.backend=fortran"], "unknown swe.backend 'fortran'"),
    (GEN + ["--set", "swe.cfl=5"], "swe.cfl"),
    (GEN + ["--set", "case=kolmogorov", "--case", "swe"], "contradicts --case swe"),
    (GEN + ["--set", "kolmogorov.n=32", "--case", "swe"], "settings for case 'kolmogorov'"),
    (GEN + ["--set", "ldnet.lr=0.1"], "`ldensf generate` does not read ldnet.lr"),
    (GEN + ["--set", "ensf.n_steps=5"], "`ldensf generate` does not read ensf.n_steps"),
    (GEN + ["--set", "cluster.worker_timeout=-1"], "cluster.worker_timeout must be > 0"),
    # generate
    (["generate", *D, "--out", "new", "--workers", "-2"], "--workers must be >= 1"),
    (["generate", *D, "--out", "new", "--scheduler", "bogus"], "unknown Dask scheduler 'bogus'"),
    (["generate", *D, "--out", "afile", "--backend", "serial"], "afile"),
    (["generate", *D, "--out", "data", "--backend", "serial", "--set", "data.seed=7"],
     "holds a dataset made with a different configuration"),
    (["generate", *D, "--out", "new", "--backend", "nope"], "invalid choice: 'nope'"),
    # train
    (TRAIN[:4] + ["missing"] + TRAIN[5:], "no dataset at missing"),
    (TRAIN[:4] + ["adir"] + TRAIN[5:], "no dataset at adir"),
    (TRAIN + ["--set", "encoder.layers=0"], "encoder.layers must be >= 1"),
    (TRAIN + ["--case", "kolmogorov"], "is a swe dataset, not kolmogorov"),
    (TRAIN + ["--set", "train.threads=-1"], "train.threads must be >= 0"),
    (TRAIN + ["--set", "ldnet.epochs=-5"], "ldnet.epochs must be >= 1"),
    (TRAIN + ["--set", "ldnet.batch_size=0"], "ldnet.batch_size must be >= 1"),
    (TRAIN + ["--set", "ldnet.lr=-1"], "ldnet.lr must be > 0"),
    (TRAIN + ["--set", "ldnet.warmup=1.5"], "ldnet.warmup must be >= 0 and < 1"),
    (TRAIN + ["--set", "encoder.dropout=1"], "encoder.dropout"),
    (TRAIN + ["--set", "train.device=tpu"], "train.device: unknown torch device 'tpu'"),
    (TRAIN + ["--set", "train.precision=fp8"], "train.precision: unknown training precision 'fp8'"),
    (TRAIN + ["--set", "train.device=cpu", "--set", "train.precision=tf32"], "train.precision tf32 needs a CUDA"),
    (["generate", "--case", "atmosphere", "--preset", "medium", "--out", "new"], "has no preset 'medium'"),
    (TRAIN + ["--set", "ldnet.activation=swish"], "ldnet.activation: unknown activation 'swish'"),
    (TRAIN + ["--set", "swe.n=64"], "`ldensf train` does not read swe.n"),
    (TRAIN + ["--set", "vae.lr=0.1"], "`ldensf train` does not read vae.lr"),
    (TRAIN + ["--model", "nosuch"], "invalid choice: 'nosuch'"),
    (TRAIN[:6] + ["afile"] + TRAIN[7:], "afile"),
    (TRAIN[:6] + ["foreign"] + TRAIN[7:], "was trained on another dataset"),
    # assimilate
    (ASSIM + ["--filter", "ld_ensf"], "pass --models DIR"),
    (ASSIM + ["--filter", "ld_ensf", "--models", "missing"], "missing"),
    (ASSIM + ["--filter", "levda", "--models", "foreign"], "was trained on another dataset"),
    (ASSIM + ["--filter", "nosuch"], "invalid choice: 'nosuch'"),
    (ASSIM + ["--filter", "levda", "--models", "empty"], "cannot read checkpoint empty/ldnet.pt: it is empty"),
    (ASSIM + ["--filter", "levda", "--models", "garbage"], "garbage/ldnet.pt: it is not a checkpoint of ours"),
    (ASSIM + ["--filter", "ensf", "--set", "ensf.kernel=cuda"], "does not read ensf.kernel"),
    (ASSIM + ["--filter", "ld_ensf", "--models", "models", "--set", "ensf.kernel=bogus"],
     "ensf.kernel: unknown EnSF kernel backend 'bogus'"),
    (ASSIM + ["--filter", "letkf", "--set", "ensf.n_steps=5"], "with letkf does not read ensf.n_steps"),
    (ASSIM + ["--filter", "ensf", "--set", "observe.sensors=random"], "observe.sensors"),
    (ASSIM + ["--filter", "ensf", "--set", "ensf.ensemble_size=1"], "ensf.ensemble_size must be >= 2"),
    (ASSIM + ["--filter", "letkf", "--set", "letkf.radius=-1"], "letkf.radius must be > 0"),
    (ASSIM + ["--filter", "ensf", "--set", "observe.noise=-0.1"], "observe.noise must be >= 0"),
    (ASSIM + ["--filter", "ensf", "--set", "observe.stride=0"], "observe.stride must be >= 1"),
    (ASSIM + ["--filter", "ensf", "--set", "ensf.eps_alpha=1.5"], "ensf.eps_alpha must be > 0 and < 1"),
    (ASSIM + ["--filter", "envar4d", "--set", "envar4d.window=0"], "envar4d.window must be >= 1"),
    (ASSIM + ["--filter", "ensf", "--set", "swe.n=48"], "other swe settings"),
    (ASSIM + ["--filter", "ensf", "--backend", "nope"], "invalid choice: 'nope'"),
    (["assimilate", *D, "--data", "missing", "--out", "new"], "no dataset at missing"),
    # run
    (RUN + ["--noise", "abc"], "--noise takes comma-separated fractions"),
    (RUN + ["--noise", "-0.1"], "noise levels must be finite fractions >= 0"),
    (RUN + ["--noise", "2,nan"], "noise levels must be finite fractions >= 0"),
    (RUN + ["--methods", "bogus"], "unknown method 'bogus'"),
    (RUN + ["--methods", ","], "no method given"),
    (RUN + ["--methods", "ensf", "--set", "ldnet.lr=0.1"], "with ensf does not read ldnet.lr"),
    (RUN + ["--set", "observe.every=0"], "observe.every must be >= 1"),
    (["run", *D, "--workdir", "afile", "--quiet"], "afile"),
    # jobs render
    (RENDER + ["bogus"], "unknown SLURM template 'bogus'"),
    (RENDER + ["generate", "--time", "banana"], "--time 'banana' is not a SLURM time"),
    (RENDER + ["generate", "--nodes", "0"], "--nodes must be >= 1"),
    (RENDER + ["generate", "--set", "swe.n=abc"], "swe.n: expected a number"),
    (RENDER + ["generate", "--config", "missing.yaml"], "missing.yaml"),
    (RENDER + ["generate", "--set", "ldnet.lr=0.1"], "`ldensf generate` does not read ldnet.lr"),
    (RENDER + ["timing", "--set", "swe.n=64"], "takes no --config or --set"),
    (RENDER + ["generate", "--partition", "gpu; rm -rf ~"], "is not a SLURM name"),
    (RENDER + ["generate", "--out", "nodir/job.sbatch"], "nodir/job.sbatch"),
    (["nosuch"], "invalid choice: 'nosuch'"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny SWE dataset with trained surrogates, a foreign checkpoint and a few faulty files."""
    root = tmp_path_factory.mktemp("bad-inputs")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["generate", *D, "--out", "data", "--backend", "serial"]) == 0
        assert main(["train", *D, "--data", "data", "--out", "models", "--quiet"]) == 0
        assert main(["generate", *D, "--out", "other", "--backend", "serial", "--set", "data.seed=5"]) == 0
        assert main(["train", *D, "--data", "other", "--out", "foreign", "--quiet", "--model", "ldnet"]) == 0
        shutil.rmtree("other")
    finally:
        os.chdir(cwd)
    (root / "bad.yaml").write_text("a: [1,\n")
    (root / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "adir").mkdir()
    (root / "afile").write_text("not a directory\n")
    for name, content in (("empty", b""), ("garbage", bytes(range(256)) * 8)):
        (root / name).mkdir()
        (root / name / "ldnet.pt").write_bytes(content)
    return root


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for p in sorted(root.rglob("*"))}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_refused_in_one_line(workspace, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1 and err.startswith("ldensf: error: "), err
    assert message in err, err
    assert snapshot(workspace) == before


def test_the_table_is_wide():
    """At least 60 inputs, covering every subcommand."""
    assert len(CASES) >= 60
    assert {a[0] for a, _ in CASES} >= {"generate", "train", "assimilate", "run", "jobs"}


def test_debug_shows_the_traceback(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    with pytest.raises(ConfigError, match="unknown preset"):
        main(["--debug", *GEN[:1], "--preset", "nope", "--out", "new"])
    monkeypatch.setenv("LDENSF_DEBUG", "1")
    with pytest.raises(ConfigError, match="unknown preset"):
        main([*GEN[:1], "--preset", "nope", "--out", "new"])


# -- property-based: the --set parser and the config loader never fail in any other way
KEYS = st.sampled_from(["swe.n", "data.seed", "data.split", "ldnet.lr", "observe.noise", "ensf.mixture",
                        "letkf.radius", "train.device", "nosection.x", "swe.nope", "case"])
VALUES = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                   st.booleans(), st.none(), st.text(max_size=12),
                   st.lists(st.floats(-2, 2), max_size=4))


@settings(max_examples=150, deadline=None)
@given(key=KEYS, value=VALUES)
def test_any_override_loads_or_is_refused_clearly(key, value):
    text = f"{key}={value}"
    try:
        cfg = load_config("tiny", case="swe", overrides=[text])
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert cfg.case == "swe"


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=40))
def test_override_parser_returns_a_mapping_or_refuses(text):
    try:
        parsed = parse_override(text)
    except ConfigError as exc:
        assert str(exc)
        return
    assert isinstance(parsed, dict) and len(parsed) == 1


def test_a_second_writer_is_told_the_directory_is_busy(workspace, monkeypatch, capsys):
    """One process writes a dataset directory at a time (flock on DIR/.lock, released at exit)."""
    from ldensf_hpc.data.generate import _lock_directory

    monkeypatch.chdir(workspace)
    held = _lock_directory(workspace / "data")  # as a running `ldensf generate` holds it
    try:
        before = snapshot(workspace)
        assert main(["generate", *D, "--out", "data", "--backend", "serial"]) == 2
        assert "is busy: another ldensf generate is writing into it" in capsys.readouterr().err
        assert snapshot(workspace) == before
    finally:
        held.close()
    assert main(["generate", *D, "--out", "data", "--backend", "serial"]) == 0  # free again: all reused


@pytest.mark.parametrize("argv", [GEN, ["generate", *D, "--out", "new"], TRAIN, ASSIM + ["--filter", "ensf"], RUN])
def test_mpiexec_without_the_mpi_backend_is_refused(workspace, monkeypatch, capsys, argv):
    """Under `mpiexec -n 2` (PMI_SIZE=2 in each rank) a non-MPI job would run twice into the same files."""
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("PMI_SIZE", "2")
    before = snapshot(workspace)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "was started as 2 MPI ranks" in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(workspace) == before


def test_regenerated_data_makes_every_derived_file_stale(tmp_path, monkeypatch, capsys):
    """A dataset regenerated with another config in the same directory: the statistics are rebuilt,
    and the checkpoints made from the old data are refused by train and by assimilate."""
    import json

    monkeypatch.chdir(tmp_path)
    assert main(["generate", *D, "--out", "d", "--backend", "serial"]) == 0
    assert main(["train", *D, "--data", "d", "--out", "m", "--quiet", "--model", "ldnet"]) == 0
    old_stats = json.loads((tmp_path / "d" / "normalization.json").read_text())
    for name in ("shards", "manifest.json", "dataset.h5"):  # the user clears the data, keeps the rest
        path = tmp_path / "d" / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert main(["generate", *D, "--out", "d", "--backend", "serial", "--set", "data.seed=9"]) == 0
    capsys.readouterr()
    assert main(["train", *D, "--data", "d", "--out", "m", "--quiet", "--model", "ldnet", "--set",
                 "data.seed=9"]) == 2
    assert "m/ldnet.pt was trained on another dataset" in capsys.readouterr().err
    assert main(["assimilate", *D, "--data", "d", "--out", "a", "--filter", "levda", "--models", "m",
                 "--set", "data.seed=9"]) == 2
    assert "was trained on another dataset" in capsys.readouterr().err
    new_stats = json.loads((tmp_path / "d" / "normalization.json").read_text())
    assert new_stats["key"]["data"] != old_stats["key"]["data"]  # rebuilt for the new data
    assert new_stats["field_std"] != old_stats["field_std"]


def test_slurm_scheduler_without_slurm_is_refused_at_once(workspace, monkeypatch, capsys):
    """The hang of old: --scheduler slurm where sbatch is missing now ends in one line, at once."""
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("PATH", str(workspace / "adir"))  # no SLURM tools on it
    assert main(["generate", *D, "--out", "new", "--scheduler", "slurm"]) == 2
    assert "is not on PATH here" in capsys.readouterr().err
    assert not (workspace / "new").exists()


@pytest.mark.timeout(60)
def test_a_scheduler_without_workers_times_out_with_a_message():
    from distributed import Client, LocalCluster

    from ldensf_hpc.errors import BackendError
    from ldensf_hpc.parallel.dask import _wait_for_a_worker

    with LocalCluster(n_workers=0, dashboard_address=":0") as cluster, Client(cluster) as client:
        with pytest.raises(BackendError, match="no Dask worker joined the local scheduler within "
                                               "cluster.worker_timeout = 1 s"):
            _wait_for_a_worker(client, "local", 1.0)


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec")
def test_real_mpiexec_without_the_mpi_backend_writes_nothing(tmp_path):
    import subprocess
    import sys

    run = subprocess.run(["mpiexec", "-n", "2", sys.executable, "-m", "ldensf_hpc.cli", "generate", *D, "--out",
                          str(tmp_path / "d"), "--backend", "serial"], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert run.stderr.count("was started as 2 MPI ranks") == 2  # each rank says so, neither writes
    assert not (tmp_path / "d").exists()

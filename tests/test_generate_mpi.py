"""Dataset generation with ``--backend mpi``: the same bytes as one serial process.

Run with ``mpiexec -n 2 python -m pytest --with-mpi -m mpi tests/test_generate_mpi.py``;
the last test launches ``mpiexec -n 2 ldensf generate ... --backend mpi`` itself and
runs in the plain ``python -m pytest`` session.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ldensf_hpc.cases import load_config
from ldensf_hpc.data import store
from ldensf_hpc.data.generate import generate
from ldensf_hpc.errors import DataError, SolverError


def digests(root: Path) -> dict[str, str]:
    files = [*sorted((root / store.SHARDS).glob("*")), root / store.DATASET, root / store.MANIFEST]
    return {p.name: store.sha256_file(p) for p in files}


@pytest.fixture
def shared_dir():
    """A directory that every rank sees (made on rank 0, removed after the test)."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    path = Path(comm.bcast(tempfile.mkdtemp(prefix="ldensf-mpi-") if comm.rank == 0 else None))
    yield path
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", ["swe", "kolmogorov"])
def test_mpi_ranks_write_the_serial_bytes(shared_dir, case):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    cfg = load_config("tiny", case=case, overrides=["data.shard_size=1"])  # 6 shards over the ranks
    summary = generate(cfg, shared_dir / "mpi", backend="mpi", progress=False)
    assert summary.root == (comm.rank == 0) and summary.n_shards == 6 and summary.n_reused == 0
    same = None
    if comm.rank == 0:
        generate(cfg, shared_dir / "serial", backend="serial", progress=False)
        same = digests(shared_dir / "mpi") == digests(shared_dir / "serial")
    assert comm.bcast(same), "MPI shards, manifest or dataset.h5 differ from the serial run"
    again = generate(cfg, shared_dir / "mpi", backend="mpi", progress=False)  # resume: nothing to do
    assert again.n_reused == 6


@pytest.mark.mpi(min_size=2)
def test_mpi_errors_reach_every_rank(shared_dir):
    """A solver failure inside the shards, and a bad directory seen by rank 0 only, stop all ranks."""
    unstable = load_config("tiny", case="kolmogorov", overrides=["kolmogorov.dt=0.5"])
    with pytest.raises(SolverError, match="CFL"):
        generate(unstable, shared_dir / "unstable", backend="mpi", progress=False)
    generate(load_config("tiny", case="swe"), shared_dir / "swe", backend="mpi", progress=False)
    with pytest.raises(DataError, match="different configuration"):
        generate(load_config("tiny", case="kolmogorov"), shared_dir / "swe", backend="mpi", progress=False)


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec")
def test_mpiexec_ldensf_generate_from_the_shell(tmp_path):
    command = [shutil.which("ldensf")] if shutil.which("ldensf") else [sys.executable, "-m", "ldensf_hpc.cli"]
    args = ["generate", "--case", "kolmogorov", "--preset", "tiny", "--backend", "mpi", "--out", tmp_path / "mpi"]
    run = subprocess.run(["mpiexec", "-n", "2", *command, *map(str, args)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("6 trajectories in 3 shards") == 1  # the summary, from rank 0 only
    generate(load_config("tiny", case="kolmogorov"), tmp_path / "serial", backend="serial", progress=False)
    assert digests(tmp_path / "mpi") == digests(tmp_path / "serial")

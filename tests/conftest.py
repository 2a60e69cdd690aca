"""Shared pytest fixtures (keep them small and generic)."""
from __future__ import annotations

import os

# One BLAS thread per process: the CI machine has 2 cores and MPI tests run 2 ranks;
# threaded OpenBLAS on a loaded machine made K x K eigendecompositions ~8x slower.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def ldensf():
    """``ldensf(*args, timeout=120)``: run the ``ldensf`` command in a subprocess, return the CompletedProcess."""

    def run(*args, timeout: float = 120):
        return subprocess.run([sys.executable, "-m", "ldensf_hpc.cli", *map(str, args)],
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny networks run fastest (and least disturbed by other jobs) on one torch thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

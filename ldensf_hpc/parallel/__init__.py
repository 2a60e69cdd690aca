"""Parallel execution helpers: Dask clusters (``dask.py``) and per-process thread limits.

Many single-threaded worker processes beat one process with many threads for
embarrassingly parallel work, but only if each process keeps to its share of
cores: BLAS, OpenMP and Numba thread pools are capped per worker/rank.
"""
from __future__ import annotations

import os
import sys

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
"""Set by mpiexec (MPICH/Hydra, Open MPI, PMIx) in every rank it starts."""


def launched_ranks() -> int:
    """How many ranks the MPI launcher that started this process started (1 without one; no MPI import)."""
    for name in LAUNCHER_SIZE_VARIABLES:
        try:
            return max(1, int(os.environ[name]))
        except (KeyError, ValueError):
            continue
    return 1


def thread_env(n_threads: int) -> dict[str, str]:
    """Environment variables that cap the thread pools of a new process at ``n_threads``."""
    return dict.fromkeys(THREAD_VARIABLES, str(max(1, int(n_threads))))


def limit_threads(n_threads: int) -> None:
    """Cap this process's thread pools (variables the user already set are kept).

    Libraries read the variables when first loaded; Numba, if already loaded, is
    told directly.
    """
    for key, value in thread_env(n_threads).items():
        os.environ.setdefault(key, value)
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(int(os.environ["NUMBA_NUM_THREADS"]), numba.config.NUMBA_NUM_THREADS))

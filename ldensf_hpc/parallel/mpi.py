"""Members of an ensemble sharded over MPI ranks: the sharding, its collectives and the world.

Rank ``r`` of ``N`` owns the contiguous block :func:`member_block` of the ``K`` members
(sizes ``K // N`` or ``K // N + 1``, the larger blocks first). The forecast-analysis
driver (:func:`ldensf_hpc.filters.cycle.cycle`) keeps the model state of a rank's block
only, Allgathers the forecast ``(K, d)`` once per cycle (the EnSF prior score mixes all
members), lets each rank draw its own block of the analysis, and Allgathers that.
Members are independent in the model and the noise of sample ``k`` depends only on
(seed, step, k), so a block gives the same numbers as the whole ensemble.

Message sizes per cycle (float64; SWE 150 x 150, d = 67 500, K = 100): two Allgathervs,
each rank receiving ``(N - 1) / N K d 8`` bytes (27 MB at N = 2, towards 54 MB as N
grows). The alternative, sharding the state dimension, needs an Allreduce of the
``K x K`` partial logits per Euler step (100 latency-bound collectives per analysis whose
sums depend on the reduction order); its gain, ``K d / N`` memory per rank, matters only
when a rank cannot hold the ensemble (54 MB here; 80 GB would be K = 1000, d = 10^7).

This module depends on nothing above the array backend.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..errors import InputError


def member_counts(K: int, n_ranks: int) -> np.ndarray:
    """Members per rank: ``K // n_ranks`` each, one more on the first ``K % n_ranks`` ranks."""
    if n_ranks < 1 or K < n_ranks:
        raise InputError(f"cannot shard {K} ensemble members over {n_ranks} ranks (need 1 <= ranks <= members)")
    return K // n_ranks + (np.arange(n_ranks) < K % n_ranks).astype(int)


def member_block(K: int, n_ranks: int, rank: int) -> slice:
    """The contiguous block of member indices owned by ``rank``."""
    counts = member_counts(K, n_ranks)
    start = int(counts[:rank].sum())
    return slice(start, start + int(counts[rank]))


@dataclass(frozen=True)
class Sharding:
    """``K`` members split over the ranks of ``comm`` (None: one process, no MPI).

    Arrays passed between ranks are host (NumPy) arrays with members on axis 0.
    """

    K: int
    comm: object = None

    def __post_init__(self):
        member_counts(self.K, self.size)  # rejects more ranks than members

    @property
    def rank(self) -> int:
        return 0 if self.comm is None else self.comm.Get_rank()

    @property
    def size(self) -> int:
        return 1 if self.comm is None else self.comm.Get_size()

    @property
    def counts(self) -> np.ndarray:
        return member_counts(self.K, self.size)

    @property
    def rows(self) -> slice:
        """The members of this rank."""
        return member_block(self.K, self.size, self.rank)

    def _spec(self, full, local):
        per_member = math.prod(local.shape[1:])
        return [full, self.counts * per_member]

    def allgather(self, local: np.ndarray) -> np.ndarray:
        """The whole ``(K, ...)`` ensemble on every rank from each rank's block."""
        if self.comm is None:
            return local
        local = np.ascontiguousarray(local)
        full = np.empty((self.K, *local.shape[1:]), dtype=local.dtype)
        self.comm.Allgatherv(local, self._spec(full, local))
        return full

    def gather(self, local: np.ndarray) -> np.ndarray | None:
        """The whole ensemble on rank 0 (None on the other ranks)."""
        if self.comm is None:
            return local
        local = np.ascontiguousarray(local)
        full = np.empty((self.K, *local.shape[1:]), dtype=local.dtype) if self.rank == 0 else None
        self.comm.Gatherv(local, self._spec(full, local) if self.rank == 0 else None, root=0)
        return full

    def scatter(self, full: np.ndarray | None) -> np.ndarray:
        """Each rank's block of an ensemble held by rank 0."""
        if self.comm is None:
            return full
        shape, dtype = self.comm.bcast((full.shape, full.dtype) if self.rank == 0 else None, root=0)
        local = np.empty((int(self.counts[self.rank]), *shape[1:]), dtype=dtype)
        self.comm.Scatterv(self._spec(np.ascontiguousarray(full), local) if self.rank == 0 else None, local, root=0)
        return local

    def bcast(self, value):
        return value if self.comm is None else self.comm.bcast(value, root=0)

    def max(self, value: float) -> float:
        if self.comm is None:
            return value
        from mpi4py import MPI

        return self.comm.allreduce(value, op=MPI.MAX)

    def collective(self, step, *args):
        """Run ``step(*args)`` on every rank; if it raises on any rank, raise that error on all
        of them (so no rank waits forever in the next collective)."""
        error, value = None, None
        try:
            value = step(*args)
        except Exception as exc:  # re-raised below on every rank
            error = exc
        errors = [error] if self.comm is None else self.comm.allgather(error)
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise error if error is not None else first
        return value


def world():
    """``COMM_WORLD`` with each rank's thread pools capped at its share of the node's cores."""
    from mpi4py import MPI

    from . import limit_threads

    comm = MPI.COMM_WORLD
    limit_threads(max(1, (os.cpu_count() or 1) // comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()))
    return comm

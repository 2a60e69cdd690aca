"""Full-space EnSF with the ensemble members sharded over MPI ranks, and ``ldensf assimilate``.

Run::

    mpiexec -n 4 ldensf assimilate --case swe --preset small --data data/swe --out runs --backend mpi
    ldensf assimilate --case swe --preset small --data data/swe --out runs            # one process

Design
------
Members. Rank ``r`` of ``N`` owns the contiguous block :func:`member_block` of the
``K`` members (sizes ``K // N`` or ``K // N + 1``, the larger blocks first). It keeps
the model state and parameters of those members only and runs their forecasts with
the model's batched ``step``; members are independent, so a block gives the same
bits as the whole batch.

Analysis. The EnSF prior score of every sample is a mixture over *all* forecast
members (paper eqs. 11-12), but given the forecast the samples evolve
independently. Every rank therefore Allgathers the forecast ``(K, d)`` once per
cycle and draws the analysis samples of its own members
(:meth:`~ldensf_hpc.filters.ensf.EnSF.reverse_sde`): the 100 Euler steps need no
communication and the analysis is already sharded as the next forecast needs it.
Message sizes per cycle (float64; SWE 150 x 150, d = 67 500, K = 100):

- chosen, member sharding: one Allgatherv, each rank receives ``(N - 1) / N K d 8``
  bytes (27 MB at N = 2, towards 54 MB as N grows), plus a Gatherv of the analysis to
  rank 0 for the statistics (the same size, rank 0 only);
- alternative, state sharding: an all-to-all from member blocks to state blocks and
  back (``K d 8 / N`` bytes per rank each way), and per Euler step an Allreduce of
  the ``K x K`` partial logits (80 kB): 100 latency-bound collectives per analysis
  whose sums depend on the reduction order. Its gain, ``K d / N`` instead of
  ``K d`` memory per rank, matters only when a rank cannot hold the ensemble
  (54 MB here; 80 GB would be K = 1000, d = 10^7).

Random numbers. Sample ``k`` of the analysis at cycle ``c`` draws its noise from
its own generator ``rng_for(seed, 1, c, k)``, one ``(d,)`` vector per Euler step,
so no rank count changes it and memory stays ``(K_local, d)``, never
``(n_steps + 1, K, d)`` (5 GB at paper size). Observations use
``rng_for(seed, 0, c)`` and the initial member ``k`` ``rng_for(seed, 2, k)``.

Reproducibility. Forecasts, noise, likelihood score and the Euler update are
row-wise, hence bitwise the same on any number of ranks. The two matrix products
of the mixture score (logits ``x_j . x_k`` and the weighted mean) go through BLAS,
whose blocking depends on how many rows a rank holds and on its thread count, so
results agree with one rank to round-off, not always bitwise. Measured with
OpenBLAS 0.3.31, 1 vs 2 ranks: one analysis (100 Euler steps) differs by at most
1.4e-17 (K = 11, d = 768) and 2.2e-16 (K = 100, d = 12 288; relative 4e-17), and
is often bitwise equal; six SWE tiny cycles (d = 3072, K = 20) end with ensembles
8.9e-16 apart and per-cycle rel-RMSE 2.2e-16 apart; ``ldensf assimilate`` on the
tiny SWE and Kolmogorov datasets wrote identical numbers. tests/test_mpi_ensf.py
checks 1e-12.

Other filters (LETKF) analyse the gathered ensemble on rank 0, which scatters the
member blocks back. Statistics are computed on rank 0 from the gathered ensembles
exactly as in :func:`~ldensf_hpc.filters.base.assimilate`; ``T_d`` (forecasts)
and ``T_f`` (analyses, communication included) are maxima over ranks.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import metrics
from ..backend import rng_for, to_numpy
from ..config import ConfigError
from ..data.store import write_json
from ..errors import DataError, InputError
from ..filters.base import AssimilationResult, Observation, check_inputs, make_filter
from ..filters.ensf import EnSF
from ..observe import grid_operator, observe

# independent random streams under one seed: rng_for(seed, STREAM, ...)
_OBS_STREAM, _NOISE_STREAM, _MEMBER_STREAM = 0, 1, 2


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


def ensf_block(filt: EnSF, forecast: np.ndarray, obs: Observation, rows: slice, seed: int, cycle: int):
    """EnSF analysis samples ``rows`` ``(J, d)`` against the whole forecast ``(K, d)``.

    Sample ``k`` draws its noise from ``rng_for(seed, 1, cycle, k)``, one ``(d,)``
    vector per Euler step, so the block equals the same rows of the one-process result.
    """
    check_inputs(forecast, obs)
    d = forecast.shape[1]
    generators = [rng_for(seed, _NOISE_STREAM, cycle, k) for k in range(rows.start, rows.stop)]

    def increment(i):
        z = np.empty((len(generators), d), dtype=forecast.dtype)
        for row, generator in zip(z, generators, strict=True):
            generator.standard_normal(dtype=z.dtype, out=row)
        return z

    return filt.reverse_sde(forecast, obs, increment, rows)


def analyse_sharded(filt, forecast: np.ndarray, obs: Observation, shards: Sharding, seed: int, cycle: int):
    """This rank's analysis members from the gathered forecast ``(K, d)``.

    EnSF: each rank draws its own samples (:func:`ensf_block`). Any other filter runs
    on rank 0 with ``rng_for(seed, 1, cycle)``, which scatters the blocks.
    """
    if isinstance(filt, EnSF):
        return shards.collective(ensf_block, filt, forecast, obs, shards.rows, seed, cycle)
    full = shards.collective(lambda: filt.analyse(forecast, obs, rng_for(seed, _NOISE_STREAM, cycle))
                             if shards.rank == 0 else None)
    return shards.scatter(full)


class _Identity:
    """Filter units equal to model units."""

    @staticmethod
    def standardize(fields, axis):
        return fields

    unstandardize = standardize


STAT_KEYS = ("forecast_mean", "forecast_std", "analysis_mean", "analysis_std", "forecast_rmse", "analysis_rmse",
             "forecast_rel_rmse", "analysis_rel_rmse", "forecast_spread", "analysis_spread")


def assimilate_sharded(model, filt, shards: Sharding, state, params, truth, operator, std, steps, *,
                       seed: int = 0, scale=None) -> AssimilationResult | None:
    """Cycle forecast -> observe -> analyse with the members sharded over ``shards``.

    Parameters
    ----------
    model, filt : a model (protocol of :mod:`ldensf_hpc.models`) and a filter.
    shards : how the ``K`` members are split; ``state`` and ``params`` hold this rank's block.
    truth : ``(n_cycles + 1, F, ny, nx)`` truth fields in filter units (the same on every rank).
    operator, std : observation operator and noise std ``(m,)`` in filter units.
    steps : model steps between observation times (int or ``n_cycles`` ints).
    seed : streams of the observation noise and the filter (see the module docstring).
    scale : filter units, ``scale.standardize(fields, axis=1)`` and ``unstandardize``
        (e.g. :class:`~ldensf_hpc.data.dataset.Normalization`); None: model units.

    Returns the statistics (as :func:`~ldensf_hpc.filters.base.assimilate`) on rank 0,
    with the final analysis state of all members; None on the other ranks.
    """
    scale = scale if scale is not None else _Identity()
    truth = np.asarray(truth, dtype=np.float64)
    n_cycles = truth.shape[0] - 1
    gaps = np.broadcast_to(np.asarray(steps), (n_cycles,)) if np.ndim(steps) == 0 else np.asarray(steps)
    if n_cycles < 1 or gaps.shape != (n_cycles,) or gaps.min() < 1:
        raise InputError(f"need >= 2 truth frames and {n_cycles} positive step counts, got {truth.shape[0]} "
                         f"frames and steps {steps!r}")
    std = np.asarray(std, dtype=np.float64)
    stats = {key: [] for key in STAT_KEYS}

    def record(kind, x, true_state):
        stats[f"{kind}_mean"].append(x.mean(axis=0))
        stats[f"{kind}_std"].append(x.std(axis=0, ddof=1))
        stats[f"{kind}_rmse"].append(metrics.rmse(x, true_state))
        stats[f"{kind}_rel_rmse"].append(metrics.rel_rmse(x, true_state))
        stats[f"{kind}_spread"].append(metrics.spread(x))

    T_d = T_f = 0.0
    for c in range(n_cycles):
        t0 = time.perf_counter()
        state = shards.collective(model.step, state, params, int(gaps[c]))
        T_d += time.perf_counter() - t0

        t0 = time.perf_counter()
        fields = to_numpy(model.to_fields(state))
        local = scale.standardize(fields.astype(np.float64), axis=1).reshape(fields.shape[0], -1)
        forecast = shards.allgather(local)
        true_state = truth[c + 1].reshape(-1)
        obs = Observation(operator, observe(operator, true_state, std, rng_for(seed, _OBS_STREAM, c)), std)
        analysis = analyse_sharded(filt, forecast, obs, shards, seed, c)
        T_f += time.perf_counter() - t0

        state = model.from_fields(scale.unstandardize(analysis.reshape(fields.shape), axis=1))
        analysis = shards.gather(analysis)
        if shards.rank == 0:
            record("forecast", forecast, true_state)
            record("analysis", analysis, true_state)

    T_d, T_f = shards.max(T_d), shards.max(T_f)
    final = shards.gather(to_numpy(state))
    if shards.rank != 0:
        return None
    return AssimilationResult(filter_name=filt.name, steps=np.cumsum(gaps), T_d=T_d, T_f=T_f, ensemble=final,
                              **{key: np.asarray(value) for key, value in stats.items()})


# ---------------------------------------------------------------- ldensf assimilate


def _world():
    from mpi4py import MPI

    from . import limit_threads

    comm = MPI.COMM_WORLD
    limit_threads(max(1, (os.cpu_count() or 1) // comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()))
    return comm


BACKENDS = {"serial": lambda: None, "mpi": _world}
IGNORED_SOLVER_KEYS = ("backend", "workers")  # how the data was computed, not what it is


@dataclass(frozen=True)
class Truth:
    """The held-out trajectory observed by ``ldensf assimilate``."""

    trajectory: int  # index in the dataset (the first of the test split)
    params: np.ndarray  # its model parameters
    fields: np.ndarray  # (n_cycles + 1, F, ny, nx) stored frames at the observation times, filter units
    scale: object  # Normalization of the train split


def load_truth(cfg, data) -> Truth:
    """The first test-split trajectory of the dataset in ``data``, every ``observe.every``-th frame,
    standardised with the train-split statistics (the split of :mod:`ldensf_hpc.data.dataset`)."""
    from ..data import store
    from ..data.dataset import TrajectoryStore, load_normalization, split_indices

    trajectories = TrajectoryStore(data)
    made = store.read_manifest(trajectories.data_dir)["config"]
    if made["case"] != cfg.case:
        raise DataError(f"dataset at {data} is a {made['case']} dataset, not {cfg.case}")
    wanted = cfg.to_dict()[cfg.case]
    diff = sorted(k for k, v in wanted.items() if k not in IGNORED_SOLVER_KEYS and made[cfg.case].get(k) != v)
    if diff:
        raise DataError(f"dataset at {data} was made with other {cfg.case} settings (differs in: "
                        f"{', '.join(diff)}); use the preset and --set options it was generated with")
    test = split_indices(trajectories.n_trajectories, cfg.data.split, cfg.data.seed)["test"]
    scale = load_normalization(trajectories, cfg.data.split, cfg.data.seed)
    frames = trajectories.frames(test[0], cfg.observe.every).astype(np.float64)
    if len(frames) < 2:
        raise ConfigError(f"observe.every = {cfg.observe.every} leaves no observation time in "
                          f"{trajectories.n_frames} stored frames")
    return Truth(int(test[0]), trajectories.params[test[0]], scale.standardize(frames, axis=1), scale)


def check_stable(filt: EnSF, std) -> None:
    """Raise ConfigError when EnSF's explicit Euler step of the likelihood score diverges:
    it is stable for ``dt max(g2 h) / std^2 < 2`` (:mod:`ldensf_hpc.filters.ensf`)."""
    smallest, limit = float(np.min(std)), filt.sde.stable_std()
    if not smallest > limit:
        raise ConfigError(f"EnSF with {filt.n_steps} steps is unstable for observation noise std {smallest:.3g} "
                          f"(needs > {limit:.3g}); raise ensf.n_steps or observe.noise")


def initial_members(model, rows: slice, seed: int, warmup_steps: int = 0):
    """Members ``rows`` of the prior ensemble: parameters and initial state of member ``k``
    from ``rng_for(seed, 2, k)``, then ``warmup_steps`` model steps (as the dataset's frames)."""
    params, states = [], []
    for k in range(rows.start, rows.stop):
        rng = rng_for(seed, _MEMBER_STREAM, k)
        params.append(model.sample_params(rng, 1))
        states.append(model.initial_state(params[-1], rng))
    params = np.concatenate(params)
    state = np.concatenate([to_numpy(s) for s in states])
    return (model.step(state, params, warmup_steps) if warmup_steps else state), params


def assimilate_dataset(cfg, data, out, filter_name: str = "ensf", backend: str = "serial") -> dict | None:
    """``ldensf assimilate``: filter noisy sparse observations of a held-out trajectory.

    The truth is the first test trajectory of the dataset in ``data`` (:func:`load_truth`),
    observed on the ``observe.stride`` grid every ``observe.every`` stored frames with
    noise std ``observe.noise`` in standardised units (i.e. times each field's
    train-split std). The ``ensf.ensemble_size`` members come from the model's prior
    (:func:`initial_members`) and are cycled by the model's solver and the filter; the
    filter and the errors work in standardised units. Writes
    ``out/assimilate_<filter>.json`` and returns its record on rank 0 (None elsewhere).
    """
    from ..data.generate import build_model, frame_schedule

    if backend not in BACKENDS:
        raise ConfigError(f"unknown assimilation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    filt = make_filter(filter_name, cfg)
    model = build_model(cfg)
    schedule = frame_schedule(cfg)
    if cfg.observe.every < 1:
        raise ConfigError(f"observe.every must be >= 1, got {cfg.observe.every}")
    shards = Sharding(cfg.ensf.ensemble_size, BACKENDS[backend]())
    seed = cfg.data.seed
    truth = shards.bcast(shards.collective(lambda: load_truth(cfg, data) if shards.rank == 0 else None))
    operator = grid_operator(truth.fields.shape[1:], cfg.observe.stride, periodic=cfg.case == "kolmogorov")
    std = np.full(operator.m, float(cfg.observe.noise))  # standardised units: noise relative to each field's std
    if isinstance(filt, EnSF):
        check_stable(filt, std)

    t0 = time.perf_counter()
    state, params = shards.collective(initial_members, model, shards.rows, seed, schedule.warmup_steps)
    T_init = shards.max(time.perf_counter() - t0)
    gap = schedule.steps_per_frame * cfg.observe.every
    result = assimilate_sharded(model, filt, shards, state, params, truth.fields, operator, std, gap,
                                seed=seed, scale=truth.scale)
    if result is None:
        return None
    record = {
        "case": cfg.case, "preset": cfg.preset, "filter": filt.name, "backend": backend, "ranks": shards.size,
        "members": shards.K, "state_dim": int(result.forecast_mean.shape[1]), "observations": operator.m,
        "trajectory": truth.trajectory, "truth_params": truth.params.tolist(),
        "noise_std": float(cfg.observe.noise), "steps_per_cycle": int(gap),
        "time": ((schedule.warmup_steps + result.steps) * model.dt).tolist(),
        **{key: getattr(result, key).tolist() for key in STAT_KEYS if not key.endswith(("_mean", "_std"))},
        "summary": result.summary(), "T_d": result.T_d, "T_f": result.T_f, "T_init": T_init,
        "config": cfg.to_dict(),
    }
    path = Path(out) / f"assimilate_{filt.name}.json"
    write_json(path, record)
    record["path"] = str(path)
    return record


def summary_table(record: dict) -> str:
    """The per-cycle errors and the timings of an :func:`assimilate_dataset` record, as text."""
    lines = [(f"{record['filter']} on {record['case']} trajectory {record['trajectory']}: K = {record['members']}, "
              f"d = {record['state_dim']}, m = {record['observations']}, {record['ranks']} rank(s)"),
             f"{'cycle':>5} {'time':>10} {'forecast rel-RMSE':>18} {'analysis rel-RMSE':>18} {'spread':>9}"]
    for c, t in enumerate(record["time"]):
        lines.append(f"{c:5d} {t:10.4g} {record['forecast_rel_rmse'][c]:18.4f} "
                     f"{record['analysis_rel_rmse'][c]:18.4f} {record['analysis_spread'][c]:9.4f}")
    s = record["summary"]
    lines.append(f"mean analysis rel-RMSE {s['analysis_rel_rmse']:.4f}; T_d {record['T_d']:.3f} s, "
                 f"T_f {record['T_f']:.3f} s -> {record['path']}")
    return "\n".join(lines)

"""The forecast-analysis driver of every sequential filter, on one process or on MPI ranks.

:func:`cycle` alternates ``model.step`` (the forecast) and ``filt.analyse`` (the analysis)
over a list of observations; :class:`SequentialFilter` is the method built on it for
filters of standardised full fields cycled with the solver (EnSF, LETKF, Latent-EnSF and
the free run). LD-EnSF drives the same function with the LDNet as its model.

A filter's ``analyse(forecast, obs, rng, rows)`` gets the whole forecast ``(K, d)`` and
returns the analysis samples of the members ``rows``. With the members sharded over
MPI ranks (:class:`~ldensf_hpc.parallel.mpi.Sharding`) every rank steps its own block,
the forecast and the analysis are Allgathered once per cycle, and each rank asks for its
own rows; the analysis of cycle ``c`` draws from ``rng_for(seed, c)`` on every rank, so
no rank count changes a number that does not go through BLAS blocking.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..backend import array_module, rng_for, to_numpy
from ..errors import InputError
from ..models import with_clock
from ..parallel.mpi import Sharding
from .base import EnsembleSeries, Method, MethodRun, Observation, ObservationSet, Problem


@dataclass
class Cycles:
    """What :func:`cycle` recorded, in the model's field units, on every rank.

    ``forecast`` and ``analysis`` hold one ensemble ``(K, d)`` per observation (after the
    start ensemble when ``record_start``); ``state`` is this rank's final model state.
    """

    forecast: EnsembleSeries
    analysis: EnsembleSeries
    T_d: float
    T_f: float
    state: object


def _synchronize(xp) -> None:
    if xp is not np:
        xp.cuda.Device().synchronize()


def cycle(model, filt, start, observations: list[Observation], gaps, *, params=None, seed: int = 0,
          sharding: Sharding | None = None, keep_members: bool = True, record_start: bool = False) -> Cycles:
    """Forecast ``gaps[c]`` model steps, then analyse ``observations[c]``, for every ``c``.

    Parameters
    ----------
    model : a model of the protocol (:mod:`ldensf_hpc.models`); its fields are the filter's units.
    filt : anything with ``analyse(forecast, obs, rng, rows)``.
    start, params : this rank's block of the initial model state and of the parameters.
    observations : one :class:`Observation` per cycle (operators may change: moving sensors).
    gaps : model steps before each observation (positive ints).
    seed : the analysis of cycle ``c`` draws from ``rng_for(seed, c)``.
    sharding : how the members are split over MPI ranks (default: one process).
    keep_members : record every member (else mean and std only).
    record_start : record the start ensemble first (its forecast and analysis are itself).
    """
    gaps = np.asarray(gaps)
    if gaps.shape != (len(observations),) or not np.issubdtype(gaps.dtype, np.integer) or \
            (len(gaps) and gaps.min() < 1):
        raise InputError(f"need one positive step count per observation, got {len(observations)} observations "
                         f"and steps {gaps.tolist()}")
    fields = model.to_fields(start)
    shape = tuple(fields.shape[1:])
    shards = sharding if sharding is not None else Sharding(fields.shape[0])
    for obs in observations:
        if obs.operator.shape != shape:
            raise InputError(f"an observation operator is for members of shape {obs.operator.shape}, "
                             f"model fields are {shape}")
    xp = array_module(fields)
    forecasts, analyses = EnsembleSeries(keep_members), EnsembleSeries(keep_members)
    if record_start:
        flat = fields.reshape(fields.shape[0], -1)
        whole = shards.allgather(to_numpy(flat)) if shards.comm else flat
        forecasts.add(whole)
        analyses.add(whole)
    state, T_d, T_f = start, 0.0, 0.0
    for c, (obs, gap) in enumerate(zip(observations, gaps)):
        t0 = time.perf_counter()
        state = shards.collective(model.step, state, params, int(gap))
        _synchronize(xp)
        T_d += time.perf_counter() - t0

        t0 = time.perf_counter()
        fields = model.to_fields(state)
        local = fields.reshape(fields.shape[0], -1)
        forecast = shards.allgather(to_numpy(local)) if shards.comm else local
        rows = shards.collective(filt.analyse, forecast, obs, rng_for(seed, c), shards.rows)
        analysis = shards.allgather(to_numpy(rows)) if shards.comm else rows
        _synchronize(xp)
        T_f += time.perf_counter() - t0
        state = with_clock(model, model.from_fields(xp.asarray(rows).reshape(-1, *shape)), state)
        forecasts.add(forecast)
        analyses.add(analysis)
    return Cycles(forecasts, analyses, shards.max(T_d), shards.max(T_f), state)


def physical(series: EnsembleSeries, problem: Problem) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(mean, std, members)`` of standardised flat ensembles as physical fields ``(T, [K,] F, ny, nx)``."""
    shape = problem.field_shape
    mean = problem.unstandardize(series.mean.reshape(-1, *shape))
    std = series.std.reshape(-1, *shape) * problem.field_std[:, None, None]
    members = series.members
    if members is not None:
        members = problem.unstandardize(members.reshape(*members.shape[:2], *shape)).astype(np.float32)
    return mean, std, members


class SequentialFilter(Method):
    """A filter of standardised full fields, cycled with the solver from the first observation time.

    The prior ensemble at observation time 0 is the start (no analysis there); observations
    ``1 ... T - 1`` are analysed. Subclasses define ``analyse`` and may override
    :meth:`prepare` (bind surrogates or calibrated settings for this problem) and
    :meth:`assumed_std` (e.g. the stability floor of the score filters).
    """

    def prepare(self, problem: Problem, observations: ObservationSet) -> tuple[object, dict]:
        """The object whose ``analyse`` runs the cycles and what to report of it (default: this filter)."""
        return self, {}

    def assumed_std(self, std: np.ndarray) -> np.ndarray:
        """The noise std the analysis uses for an observation with assumed std ``std`` (filter units)."""
        return std

    def assimilate(self, problem: Problem, observations: ObservationSet, seed: int = 0) -> MethodRun:
        obs = [Observation(o.operator, o.y, self.assumed_std(np.asarray(o.std)))
               for o in problem.standardized(observations, first=1)]
        filt, extra = self.prepare(problem, observations)
        run = cycle(problem.filter_model, filt, problem.start, obs, problem.gaps, params=problem.prior_params,
                    seed=seed, sharding=problem.sharding, keep_members=problem.keep_members, record_start=True)
        mean, std, members = physical(run.analysis, problem)
        forecast, _, _ = physical(run.forecast, problem)
        return MethodRun(mean, std, members, None, {"T_d": run.T_d, "T_f": run.T_f},
                         extra=extra, fields={"forecast": forecast})

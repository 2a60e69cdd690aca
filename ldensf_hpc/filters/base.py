"""The filter interface, the filter registry and the forecast-analysis driver.

A filter is a small dataclass with a ``name`` and
``analyse(forecast, obs, rng) -> analysis``, where ``forecast`` and the analysis
are ``(K, d)`` arrays (NumPy or CuPy) and ``obs`` is an :class:`Observation`.
:func:`assimilate` cycles any model of :mod:`ldensf_hpc.models` (through its
protocol only) with any filter::

    truth = trajectory(model, x0, None, n_cycles, steps)[0]
    result = assimilate(model, make_filter("letkf", cfg), ensemble, truth, op, std, steps)
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .. import metrics
from ..backend import array_module, rng_for, to_numpy
from ..config import ConfigError
from ..errors import InputError
from ..observe import ObservationOperator, observe


@dataclass(frozen=True, eq=False)
class Observation:
    """One observation time: operator ``H``, observed vector ``y`` ``(m,)`` and noise std ``(m,)``.

    The noise is Gaussian and independent, ``R = diag(std^2)``.
    """

    operator: ObservationOperator
    y: object
    std: object

    def __post_init__(self):
        y = self.y if hasattr(self.y, "dtype") else np.asarray(self.y, dtype=float)
        xp = array_module(y)
        if not np.issubdtype(y.dtype, np.floating):
            y = y.astype(float)
        std = xp.asarray(self.std, dtype=y.dtype)
        m = self.operator.m
        if y.shape != (m,):
            raise InputError(f"observation vector has shape {y.shape}, operator observes ({m},)")
        if std.shape == ():
            std = xp.full(m, float(std), dtype=y.dtype)
        if std.shape != (m,):
            raise InputError(f"observation noise std has shape {std.shape}, expected ({m},)")
        if not bool(xp.all(xp.isfinite(y))):
            raise InputError("observation vector contains NaN or Inf")
        if not bool(xp.all(std > 0)) or not bool(xp.all(xp.isfinite(std))):
            raise InputError("observation noise std must be finite and > 0 (zero noise has no likelihood score)")
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "std", std)

    @property
    def inv_var(self):
        """``diag(R^-1)``, ``(m,)``."""
        return 1.0 / self.std**2

    def likelihood_score(self, x):
        """``grad_x log p(y | x) = H^T R^-1 (y - H x)`` for states ``(K, d)``."""
        return self.operator.adjoint((self.y - self.operator.apply(x)) * self.inv_var)


CAPABILITIES = {
    "space": "where the analysis happens",
    "dynamics": "what propagates the ensemble between observations",
    "parameters": "estimates model parameters jointly with the state",
    "irregular_times": "takes observations at any time, not only on a fixed step grid",
    "moving_sensors": "takes sensor positions that change from one observation time to the next",
    "smoother": "analyses a window of observation times at once",
}
"""What every filter declares in its ``capabilities`` class attribute (the report's capability table)."""


class Filter(Protocol):
    """What :func:`assimilate` needs from a filter (``capabilities``: see :data:`CAPABILITIES`)."""

    name: str
    capabilities: dict

    def analyse(self, forecast, obs: Observation, rng: np.random.Generator): ...


def check_inputs(forecast, obs: Observation) -> None:
    """Raise :class:`InputError` unless ``forecast`` is a finite ``(K >= 2, d)`` ensemble for ``obs``."""
    xp = array_module(forecast)
    if forecast.ndim != 2:
        raise InputError(f"forecast ensemble must be (K, d), got shape {forecast.shape}")
    K, d = forecast.shape
    if K < 2:
        raise InputError(f"an ensemble needs at least 2 members, got K = {K}")
    if d != obs.operator.d:
        raise InputError(f"forecast members have {d} components, observation operator expects {obs.operator.d}")
    if array_module(obs.y) is not xp:
        raise InputError("forecast and observation live on different array backends")
    if not bool(xp.all(xp.isfinite(forecast))):
        raise InputError("forecast ensemble contains NaN or Inf")


FILTERS = {
    "ensf": ("ldensf_hpc.filters.ensf", "EnSF"),
    "letkf": ("ldensf_hpc.filters.letkf", "LETKF"),
    "ld_ensf": ("ldensf_hpc.filters.ld_ensf", "LDEnSF"),
    "envar4d": ("ldensf_hpc.filters.envar4d", "EnVar4D"),
    "levda": ("ldensf_hpc.filters.levda", "LEVDA"),
}


def make_filter(name: str, cfg=None):
    """The filter registered as ``name``, with its defaults or built from a :class:`~ldensf_hpc.config.Config`."""
    if name not in FILTERS:
        raise ConfigError(f"unknown filter {name!r}; choose one of {', '.join(FILTERS)}")
    module, cls_name = FILTERS[name]
    cls = getattr(importlib.import_module(module), cls_name)
    return cls() if cfg is None else cls.from_config(cfg)


@dataclass
class AssimilationResult:
    """Per-cycle statistics (host arrays; cycle ``c`` is after ``steps[: c + 1]`` model steps).

    Means and stds are ``(n_cycles, d)``; errors and spreads are ``(n_cycles,)``.
    ``T_d`` and ``T_f`` are the wall times of the forecasts and of the analyses [s].
    """

    filter_name: str
    steps: np.ndarray  # model steps since the start at each analysis time
    forecast_mean: np.ndarray
    forecast_std: np.ndarray
    analysis_mean: np.ndarray
    analysis_std: np.ndarray
    forecast_rmse: np.ndarray
    analysis_rmse: np.ndarray
    forecast_rel_rmse: np.ndarray
    analysis_rel_rmse: np.ndarray
    forecast_spread: np.ndarray
    analysis_spread: np.ndarray
    T_d: float
    T_f: float
    ensemble: object  # final analysis state batch
    analysis_members: np.ndarray | None = None  # (n_cycles, K, d) when kept

    def summary(self, spinup: int = 0) -> dict:
        """Time-averaged errors over cycles ``spinup:``, and the timings (JSON-ready)."""
        keep = slice(spinup, None)
        return {
            "filter": self.filter_name,
            "cycles": len(self.steps),
            "spinup": int(spinup),
            "analysis_rmse": float(self.analysis_rmse[keep].mean()),
            "forecast_rmse": float(self.forecast_rmse[keep].mean()),
            "analysis_rel_rmse": float(self.analysis_rel_rmse[keep].mean()),
            "analysis_spread": float(self.analysis_spread[keep].mean()),
            "T_d": self.T_d,
            "T_f": self.T_f,
        }


def _synchronize(xp) -> None:
    if xp is not np:
        xp.cuda.Device().synchronize()


def assimilate(model, filt, ensemble, truth, operator, std, steps, *, params=None, observations=None,
               seed: int = 0, keep_members: bool = False) -> AssimilationResult:
    """Cycle forecast (``model.step``) -> observe -> ``filt.analyse`` along a truth run.

    Parameters
    ----------
    model : any model of :mod:`ldensf_hpc.models` (protocol: step, to_fields, from_fields).
    filt : a filter (see :data:`FILTERS`).
    ensemble : initial model state batch of ``K >= 2`` members.
    truth : ``(n_cycles + 1, *fields)`` truth fields; ``truth[0]`` is the start and
        ``truth[c]`` the state observed at cycle ``c``.
    operator, std : observation operator and noise std ``(m,)`` (see :func:`~ldensf_hpc.observe.noise_std`),
        or one of each per cycle (moving sensors, :func:`~ldensf_hpc.observe.moving_points`).
    steps : model steps between observation times, one int or ``n_cycles`` ints
        (irregular observation times).
    params : model parameters per member, passed to ``model.step``.
    observations : optional ``n_cycles`` observation vectors ``(m,)``; by default
        drawn from the truth with :func:`~ldensf_hpc.observe.observe` and ``rng_for(seed, 0, c)``.
    seed : seeds the observation noise and the filter's rng (``rng_for(seed, 1, c)``).
    keep_members : also return every analysis ensemble (``analysis_members``, ``(n_cycles, K, d)``).
    """
    xp = array_module(ensemble)
    fields = model.to_fields(ensemble)
    K, member_shape = fields.shape[0], tuple(fields.shape[1:])
    truth = np.asarray(truth)
    n_cycles = truth.shape[0] - 1
    if K < 2:
        raise InputError(f"an ensemble needs at least 2 members, got K = {K}")
    if truth.ndim < 2 or tuple(truth.shape[1:]) != member_shape or n_cycles < 1:
        raise InputError(f"truth must be (n_cycles + 1 >= 2, {member_shape}) fields, got {truth.shape}")
    operators = list(operator) if isinstance(operator, (list, tuple)) else [operator] * n_cycles
    stds = list(std) if isinstance(operator, (list, tuple)) else [std] * n_cycles
    if len(operators) != n_cycles or len(stds) != n_cycles:
        raise InputError(f"got {len(operators)} operators and {len(stds)} noise stds for {n_cycles} cycles")
    for op in operators:
        if op.shape != member_shape:
            raise InputError(f"operator is for members of shape {op.shape}, model fields are {member_shape}")
    gaps = np.broadcast_to(np.asarray(steps), (n_cycles,)) if np.ndim(steps) == 0 else np.asarray(steps)
    if gaps.shape != (n_cycles,) or not np.issubdtype(gaps.dtype, np.integer) or gaps.min() < 1:
        raise InputError(f"steps must be a positive int or {n_cycles} positive ints, got {steps!r}")
    if observations is not None and len(observations) != n_cycles:
        raise InputError(f"got {len(observations)} observation vectors for {n_cycles} cycles")
    stds = [xp.asarray(sd, dtype=fields.dtype) for sd in stds]

    stats = {key: [] for key in ("forecast_mean", "forecast_std", "analysis_mean", "analysis_std",
                                 "forecast_rmse", "analysis_rmse", "forecast_rel_rmse", "analysis_rel_rmse",
                                 "forecast_spread", "analysis_spread")}

    def record(kind, x, true_state):
        stats[f"{kind}_mean"].append(to_numpy(x.mean(axis=0)))
        stats[f"{kind}_std"].append(to_numpy(x.std(axis=0, ddof=1)))
        stats[f"{kind}_rmse"].append(metrics.rmse(x, true_state))
        stats[f"{kind}_rel_rmse"].append(metrics.rel_rmse(x, true_state))
        stats[f"{kind}_spread"].append(metrics.spread(x))

    state, T_d, T_f, members = ensemble, 0.0, 0.0, []
    for c in range(n_cycles):
        true_state = xp.asarray(truth[c + 1].reshape(-1), dtype=fields.dtype)
        t0 = time.perf_counter()
        state = model.step(state, params, int(gaps[c]))
        _synchronize(xp)
        T_d += time.perf_counter() - t0

        fields = model.to_fields(state)
        forecast = fields.reshape(K, -1)
        y = (xp.asarray(observations[c], dtype=fields.dtype) if observations is not None
             else observe(operators[c], true_state, stds[c], rng_for(seed, 0, c)))
        obs = Observation(operators[c], y, stds[c])
        t0 = time.perf_counter()
        analysis = filt.analyse(forecast, obs, rng_for(seed, 1, c))
        _synchronize(xp)
        T_f += time.perf_counter() - t0
        state = model.from_fields(analysis.reshape(fields.shape))
        record("forecast", forecast, true_state)
        record("analysis", analysis, true_state)
        if keep_members:
            members.append(to_numpy(analysis))

    arrays = {key: np.asarray(value) for key, value in stats.items()}
    return AssimilationResult(filter_name=filt.name, steps=np.cumsum(gaps), T_d=T_d, T_f=T_f,
                              ensemble=state, analysis_members=np.asarray(members) if keep_members else None,
                              **arrays)

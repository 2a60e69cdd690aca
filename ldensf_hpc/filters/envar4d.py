"""4DEnVar: ensemble 4D-Var in the ensemble subspace (LEVDA paper §2.3, eqs. 8-11).

Over a window of ``tau`` observation times the window-initial augmented state
``z = (x, u)`` (flattened fields, then the model parameters, if any) is sought in
the affine ensemble subspace ``z(alpha) = zbar + P_z alpha`` with
``P_z = [rho dz_1, ..., rho dz_K] / sqrt(K - 1)`` (eq. 8; ``rho`` multiplicative
inflation of the anomalies). The members are propagated through the model and the
observed anomalies ``P_y,i`` (eqs. 9-10) linearise the trajectory, so the cost (eq. 11)

    J(alpha) = 1/2 |alpha|^2 + 1/2 sum_i |d_i - P_y,i^T alpha|^2_{R_i^-1},
    d_i = y_i - H_i(M_{0->t_i}(zbar))

is quadratic: ``A alpha = b`` with ``A = I + sum_i P_y,i R_i^-1 P_y,i^T``. With
``outer_loops > 1`` the members are re-centred on the current estimate, propagated
again and ``A alpha = sum_i P_y,i R_i^-1 (d_i + P_y,i^T alpha_c)`` is re-solved
(Gauss-Newton). The analysis ensemble is the symmetric square-root transform
(as in the ETKF) ``z_j = zbar + P_z (alpha* + sqrt(K - 1) A^-1/2 e_j)``: its mean is
the smoothed window-initial state and its covariance ``P_z A^-1 P_z^T`` the
Gauss-Newton posterior. It is propagated through the window to give the smoothed
trajectory and the analysis at the window end, which starts the next window.

For a linear model and ``K > dim z`` this is exact: the mean and covariance are the
linear-Gaussian smoother's, given the ensemble mean and covariance as the prior.

:meth:`EnVar4D.assimilate` (the method interface) runs :meth:`EnVar4D.run`, the window by
window smoother, on a problem's standardised fields.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..backend import array_module, to_numpy
from ..errors import ConfigError, InputError
from ..models import with_clock
from .base import FULL_SOLVER, Capabilities, Method, MethodRun, Observation, ObservationSet, Problem


@dataclass
class WindowResult:
    """What a window-based filter (4DEnVar, LEVDA) returns (host arrays, float64).

    ``W`` windows, ``T`` trajectory records, ``D`` the dimension of the assimilated
    state ``z`` (4DEnVar: flattened fields then parameters; LEVDA: ``(s, u)``).

    starts : ``(W,)`` time of each window start (model steps, LEVDA: latent steps).
    background_mean, background_std : ``(W, D)`` forecast ensemble at the window start.
    analysis_mean, analysis_std : ``(W, D)`` analysis (smoothed) ensemble at the window start.
    times : ``(T,)`` times of the trajectory records.
    trajectory_mean, trajectory_std : ``(T, D)`` the analysis ensemble propagated through its window.
    background_trajectory : ``(T, D)`` the model run from the background mean (``x^b`` of eq. 11).
    cost_background, cost_analysis : ``(W,)`` the cost ``J`` at the background mean
        (``alpha = 0``) and at the analysis mean.
    T_d, T_f : wall time of the ensemble propagation and of the rest of the analysis [s].
    ensemble : the analysis ensemble at the end of the last window (model state / ``z``).
    params : the parameters that go with ``ensemble`` (4DEnVar with parameters), else None.
    trajectory_members : ``(T, K, D)`` the analysis members at the trajectory records, when kept.
    """

    filter_name: str
    starts: np.ndarray
    background_mean: np.ndarray
    background_std: np.ndarray
    analysis_mean: np.ndarray
    analysis_std: np.ndarray
    times: np.ndarray
    trajectory_mean: np.ndarray
    trajectory_std: np.ndarray
    background_trajectory: np.ndarray
    cost_background: np.ndarray
    cost_analysis: np.ndarray
    T_d: float
    T_f: float
    ensemble: object
    params: object = None
    trajectory_members: np.ndarray | None = None


def ensemble_space_solve(anomalies_obs, residuals, inv_vars, alpha0, K: int):
    """Gauss-Newton step in the ensemble space.

    Parameters
    ----------
    anomalies_obs : ``P_y,i`` as ``(K, m_i)`` arrays (rows: members, already divided by sqrt(K - 1)).
    residuals : ``d_i`` ``(m_i,)``, innovations at the linearisation point.
    inv_vars : ``diag(R_i^-1)`` ``(m_i,)``.
    alpha0 : ``(K,)`` linearisation point.

    Returns
    -------
    alpha : ``(K,)`` the minimiser of the linearised eq. 11.
    transform : ``(K, K)`` symmetric ``sqrt(K - 1) A^-1/2`` (column ``j``: member ``j``'s offset).
    """
    xp = array_module(alpha0)
    A = xp.eye(K, dtype=alpha0.dtype)
    b = xp.zeros(K, dtype=alpha0.dtype)
    for Y, d, w in zip(anomalies_obs, residuals, inv_vars):
        A += (Y * w) @ Y.T
        b += (Y * w) @ (d + alpha0 @ Y)
    lam, V = xp.linalg.eigh(A)
    alpha = V @ ((V.T @ b) / lam)
    transform = math.sqrt(K - 1) * (V / xp.sqrt(lam)) @ V.T
    return alpha, transform


def _cost(alpha, observations, predicted) -> float:
    """Eq. 11 evaluated nonlinearly: ``1/2 |alpha|^2 + 1/2 sum_i |y_i - H_i z_i|^2_{R_i^-1}``."""
    misfit = sum(float(((obs.y - h) ** 2 * obs.inv_var).sum()) for obs, h in zip(observations, predicted))
    return 0.5 * float((alpha**2).sum()) + 0.5 * misfit


@dataclass
class EnVar4D(Method):
    """Full-space 4DEnVar (LEVDA paper §2.3) with joint state-parameter estimation.

    Parameters
    ----------
    window : observation times per assimilation window (``tau``).
    inflation : multiplicative factor ``rho >= 1`` on the anomalies.
    outer_loops : Gauss-Newton linearisations per window (1: classic 4DEnVar).
    """

    window: int = 5
    inflation: float = 1.0
    outer_loops: int = 1
    name: ClassVar[str] = "envar4d"
    settings_read: ClassVar[tuple[str, ...]] = ("envar4d",)
    label: ClassVar[str] = "4DEnVar"
    capabilities: ClassVar[Capabilities] = Capabilities(parameters=True, irregular_times=True,
                                                        moving_sensors=True, smoother=True, member_sharding=False)
    space: ClassVar[str] = "full state + parameters"
    dynamics: ClassVar[str] = FULL_SOLVER

    def __post_init__(self):
        if int(self.window) != self.window or self.window < 1:
            raise ConfigError(f"4DEnVar: window must be an integer >= 1 observation times, got {self.window}")
        if not self.inflation >= 1.0:
            raise ConfigError(f"4DEnVar: inflation must be >= 1, got {self.inflation}")
        if int(self.outer_loops) != self.outer_loops or self.outer_loops < 1:
            raise ConfigError(f"4DEnVar: outer_loops must be an integer >= 1, got {self.outer_loops}")

    @classmethod
    def from_config(cls, cfg) -> EnVar4D:
        e = cfg.envar4d
        return cls(window=e.window, inflation=e.inflation, outer_loops=e.outer_loops)

    def state_dim(self, problem: Problem) -> int:
        return int(np.prod(problem.field_shape)) + problem.prior_params.shape[1]

    def assimilate(self, problem: Problem, observations: ObservationSet, seed: int = 0) -> MethodRun:
        """Windows over observations ``1 ... T - 1`` from the prior at time 0, parameters estimated jointly."""
        obs = problem.standardized(observations, first=1)
        res = self.run(problem.filter_model, problem.start, obs, problem.gaps, params=problem.prior_params,
                       keep_members=True)
        d = int(np.prod(problem.field_shape))
        first = problem.filter_model.to_fields(problem.start).reshape(1, problem.K, -1)
        members = np.concatenate([first, res.trajectory_members[..., :d]])
        fields = problem.unstandardize(members.reshape(*members.shape[:2], *problem.field_shape))
        params = np.concatenate([problem.prior_params[None], res.trajectory_members[..., d:]])
        return MethodRun.of_members(fields.astype(np.float32), problem.keep_members, params=params,
                                    timings={"T_d": res.T_d, "T_f": res.T_f})

    def run(self, model, ensemble, observations, steps, params=None, keep_members: bool = False) -> WindowResult:
        """Assimilate ``observations`` window by window from the initial ``ensemble``.

        Parameters
        ----------
        model : any model of :mod:`ldensf_hpc.models` (protocol: step, to_fields, from_fields).
        ensemble : initial model state batch of ``K >= 2`` members.
        observations : :class:`~ldensf_hpc.filters.base.Observation` per observation time (each
            with its own operator: moving sensors are allowed).
        steps : model steps before each observation (one int or one per observation); the
            first observation is ``steps[0]`` steps after the initial ensemble.
        params : ``(K, p)`` model parameters per member, estimated jointly (part of ``z``); None if
            the model has none.
        keep_members : also return the analysis members at every observation time.

        Windows hold ``window`` consecutive observations (the last may hold fewer); a
        window starts at the previous window's last observation time.
        """
        observations = list(observations)
        n_obs = len(observations)
        if n_obs == 0:
            raise InputError("4DEnVar needs at least one observation")
        if not all(isinstance(obs, Observation) for obs in observations):
            raise InputError("observations must be ldensf_hpc.filters.base.Observation objects")
        gaps = np.broadcast_to(np.asarray(steps), (n_obs,)) if np.ndim(steps) == 0 else np.asarray(steps)
        if gaps.shape != (n_obs,) or not np.issubdtype(gaps.dtype, np.integer) or gaps.min() < 1:
            raise InputError(f"steps must be a positive int or {n_obs} positive ints, got {steps!r}")
        state = _State.of(model, ensemble, params)
        for obs in observations:
            if obs.operator.d != state.d:
                raise InputError(f"an observation operator expects {obs.operator.d} components, "
                                 f"model fields have {state.d}")

        stats = {key: [] for key in ("starts", "background_mean", "background_std", "analysis_mean",
                                     "analysis_std", "times", "trajectory_mean", "trajectory_std",
                                     "background_trajectory", "cost_background", "cost_analysis")}
        members = [] if keep_members else None
        clock = {"T_d": 0.0, "T_f": 0.0}
        z, start = state.z, 0
        for first in range(0, n_obs, self.window):
            window = slice(first, min(first + self.window, n_obs))
            z = self._window(state, z, observations[window], [int(g) for g in gaps[window]], start, stats, clock,
                             members)
            start += int(gaps[window].sum())
        arrays = {key: np.asarray(value, dtype=np.float64) for key, value in stats.items()}
        final_state, final_params = state.split(z)
        return WindowResult(filter_name=self.name, T_d=clock["T_d"], T_f=clock["T_f"], ensemble=final_state,
                            params=final_params, trajectory_members=None if members is None else np.asarray(members),
                            **arrays)

    def _window(self, state: _State, z, observations, gaps, start, stats, clock, members=None):
        """Analyse one window starting with the ensemble ``z`` ``(K, D)``; return ``z`` at its end."""
        t_begin = time.perf_counter()
        xp = array_module(z)
        K = z.shape[0]
        zbar = z.mean(axis=0)
        P = self.inflation * (z - zbar) / math.sqrt(K - 1)
        alpha = xp.zeros(K)
        T_d = 0.0
        for loop in range(self.outer_loops):
            centre = zbar + alpha @ P
            batch = xp.concatenate([centre[None], centre + math.sqrt(K - 1) * P])
            t0 = time.perf_counter()
            trajectory = state.propagate(batch, gaps)
            T_d += time.perf_counter() - t0
            predicted = [obs.operator.apply(state.fields(zi)) for obs, zi in zip(observations, trajectory)]
            residuals = [obs.y - h[0] for obs, h in zip(observations, predicted)]
            Ys = [(h[1:] - h[1:].mean(axis=0)) / math.sqrt(K - 1) for h in predicted]
            if loop == 0:
                background = [to_numpy(zi[0]) for zi in trajectory]
                cost_background = _cost(alpha, observations, [h[0] for h in predicted])
            alpha, transform = ensemble_space_solve(Ys, residuals, [obs.inv_var for obs in observations], alpha, K)
        analysis = zbar + (alpha + transform) @ P  # columns of the symmetric transform = rows

        t0 = time.perf_counter()
        trajectory = state.propagate(xp.concatenate([(zbar + alpha @ P)[None], analysis]), gaps)
        T_d += time.perf_counter() - t0
        state.like = state.last  # the next window starts where this one ends (a forced model's clock)
        cost_analysis = _cost(alpha, observations,
                              [obs.operator.apply(state.fields(zi[:1]))[0] for obs, zi in zip(observations, trajectory)])

        stats["starts"].append(start)
        for kind, ens in (("background", z), ("analysis", analysis)):
            stats[f"{kind}_mean"].append(to_numpy(ens.mean(axis=0)))
            stats[f"{kind}_std"].append(to_numpy(ens.std(axis=0, ddof=1)))
        stats["times"].extend(start + np.cumsum(gaps))
        stats["trajectory_mean"].extend(to_numpy(zi[1:].mean(axis=0)) for zi in trajectory)
        stats["trajectory_std"].extend(to_numpy(zi[1:].std(axis=0, ddof=1)) for zi in trajectory)
        if members is not None:
            members.extend(to_numpy(zi[1:]) for zi in trajectory)
        stats["background_trajectory"].extend(background)
        stats["cost_background"].append(cost_background)
        stats["cost_analysis"].append(cost_analysis)
        clock["T_d"] += T_d
        clock["T_f"] += time.perf_counter() - t_begin - T_d
        return trajectory[-1][1:]


class _State:
    """Augmented state ``z = (flattened fields, parameters)`` of a model of the protocol."""

    def __init__(self, model, shape, d: int, p: int, dtype, has_params: bool, z):
        self.model, self.shape, self.d, self.p, self.dtype = model, shape, d, p, dtype
        self.has_params, self.z = has_params, z
        self.like = self.last = None  # model states at the window's start and after the last propagation

    @classmethod
    def of(cls, model, ensemble, params) -> _State:
        fields = model.to_fields(ensemble)
        xp = array_module(fields)
        K = fields.shape[0]
        if K < 2:
            raise InputError(f"an ensemble needs at least 2 members, got K = {K}")
        x = fields.reshape(K, -1)
        if params is None:
            u = xp.zeros((K, 0), dtype=xp.float64)
        else:
            u = xp.asarray(params, dtype=xp.float64)
            if u.ndim != 2 or u.shape[0] != K:
                raise InputError(f"params must be (K = {K}, p), got shape {u.shape}")
        z = xp.concatenate([x.astype(xp.float64), u], axis=1)
        if not bool(xp.all(xp.isfinite(z))):
            raise InputError("initial ensemble or parameters contain NaN or Inf")
        state = cls(model, tuple(fields.shape[1:]), x.shape[1], u.shape[1], fields.dtype, params is not None, z)
        state.like = ensemble
        return state

    def fields(self, z):
        """Flattened fields ``(B, d)`` of ``z``."""
        return z[:, :self.d]

    def split(self, z):
        """Model state batch and parameters (None if the model has none) of ``z``."""
        state = self.model.from_fields(z[:, :self.d].astype(self.dtype).reshape(len(z), *self.shape))
        return with_clock(self.model, state, self.like), (z[:, self.d:] if self.has_params else None)

    def propagate(self, z, gaps) -> list:
        """``z`` after each of the cumulative ``gaps`` model steps, ``[(B, D), ...]``."""
        xp = array_module(z)
        out = []
        state, params = self.split(z)
        for gap in gaps:
            state = self.model.step(state, params, gap)
            self.last = state
            x = self.model.to_fields(state).reshape(len(z), -1).astype(xp.float64)
            out.append(xp.concatenate([x, z[:, self.d:]], axis=1))
        return out

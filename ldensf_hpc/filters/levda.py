"""LEVDA: latent ensemble variational data assimilation (LEVDA paper §3).

The assimilated state is ``z = (s, u)``: the LDNet latent state and the scaled
parameters (units of :class:`~ldensf_hpc.filters.ld_ensf.LatentModel` states). Over
a window ``[t0, t0 + tau)`` of ``tau`` latent steps, the window-initial ``z`` is
sought in the ensemble subspace (§3.2)

    z(alpha) = zbar + P_z alpha,   P_z = [rho dz_1 + eps_1, ..., rho dz_K + eps_K] / sqrt(K - 1),

with multiplicative (``rho``) and additive (``eps ~ N(0, sigma^2 I)``, re-centred to
zero mean so that ``zbar`` stays the background mean) inflation, by minimising (eq. 19)

    J(alpha) = 1/2 |alpha|^2 + 1/2 sum_i |y_i - H_i(R(s(t_i; alpha)))|^2_{R_i^-1},

where ``s(t_i; alpha)`` is the LDNet rollout (eq. 13, parameters static) from
``z(alpha)`` and ``H_i R`` evaluates the reconstruction network only at the observed
points of time ``t_i`` (moving sensors: the points may change with ``i``). An
observation time between latent steps, ``t~ = t_k + a dt`` with ``a`` in [0, 1), uses
``s(t~) = s(t_k) + a dt F(s(t_k), u)`` (eq. 17). The gradient comes from torch
autograd through F and R; L-BFGS with a strong-Wolfe line search minimises J.

Analysis ensemble (§3.2): one minimisation per member from the warm start
``alpha_j = sqrt(K - 1) e_j`` (member ``j`` of the inflated background), the analysis
members being ``zbar + P_z alpha_j*``. The ``K`` problems are independent; they are
solved as one L-BFGS problem on ``sum_j J(alpha_j)`` (block separable, so its
minimisers are the members' minimisers) with one batched rollout per evaluation.
The spread of the analysis comes from the different warm starts and from J's
nonlinearity only: where J has one minimiser the members converge to it (measured
on the tests' twin problem after 30 iterations: spread 2e-3 of the error in float32,
2e-4 in float64), and the next window's background spread is the additive inflation alone.
``perturb_obs=True`` instead gives each member its own cost, randomised maximum
likelihood (not in the paper): ``J_j(alpha) = 1/2 |alpha - alpha_j|^2 + 1/2 sum_i
|y_i + e_ij - H_i R(s(t_i; alpha))|^2_{R_i^-1}`` with ``e_ij ~ N(0, R_i)`` re-centred over
the members, whose minimisers sample the posterior in the linear-Gaussian case.

Units: observation points ``xi`` are scaled to [-1, 1] and ordered (x, y) as the
LDNet sees them; values and noise std are in the LDNet's standardised field units
(``(field - field_mean) / field_std``, see :func:`point_observations`), so
``R_i = diag(std_i^2)`` in those units.

:meth:`LEVDA.assimilate` (the method interface) turns a problem's grid observations into
point observations and runs :meth:`LEVDA.run`, the window by window smoother; it works on
windows of observations through the reconstruction network, not one time at a time.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..backend import rng_for
from ..errors import ConfigError, InputError
from .base import Capabilities, Method, MethodRun, ObservationSet, Problem
from .envar4d import WindowResult
from .ld_ensf import LatentModel, latent_run, latent_steps, reconstruct


@dataclass(frozen=True, eq=False)
class PointObservation:
    """Observations of the fields at points ``xi`` at one (latent) time.

    Parameters
    ----------
    time : latent steps since the initial ensemble (any real >= 0: irregular times allowed).
    xi : ``(M, dim)`` points as the LDNet sees them (``norm.scale_xi``: the plane's (x, y) in [-1, 1]^2, the sphere's unit vectors).
    values : ``(M,)`` observed values, standardised field units.
    std : ``(M,)`` or scalar noise std, standardised field units.
    fields : ``(M,)`` field number of each value (default: field 0).
    """

    time: float
    xi: np.ndarray
    values: np.ndarray
    std: np.ndarray
    fields: np.ndarray | None = None

    def __post_init__(self):
        time_ = float(self.time)
        xi = np.asarray(self.xi, dtype=np.float64)
        values = np.asarray(self.values, dtype=np.float64)
        if not (math.isfinite(time_) and time_ >= 0):
            raise InputError(f"observation time must be finite and >= 0, got {self.time}")
        if xi.ndim != 2 or xi.shape[1] < 2 or xi.shape[0] == 0:
            raise InputError(f"observation points xi must be (M >= 1, dim >= 2), got shape {xi.shape}")
        M = xi.shape[0]
        if values.shape != (M,):
            raise InputError(f"observation values have shape {values.shape}, expected ({M},) for {M} points")
        std = np.broadcast_to(np.asarray(self.std, dtype=np.float64), (M,)) if np.ndim(self.std) == 0 \
            else np.asarray(self.std, dtype=np.float64)
        if std.shape != (M,):
            raise InputError(f"observation noise std has shape {std.shape}, expected ({M},) or a scalar")
        fields = np.zeros(M, dtype=np.int64) if self.fields is None else np.asarray(self.fields)
        if fields.shape != (M,) or not np.issubdtype(fields.dtype, np.integer) or fields.min() < 0:
            raise InputError(f"observation fields must be ({M},) non-negative field numbers")
        if not (np.all(np.isfinite(xi)) and np.all(np.isfinite(values))):
            raise InputError(f"observation at time {time_} contains NaN or Inf")
        if not (np.all(std > 0) and np.all(np.isfinite(std))):
            raise InputError("observation noise std must be finite and > 0")
        for name, value in (("time", time_), ("xi", xi), ("values", values), ("std", std.copy()),
                            ("fields", fields.astype(np.int64))):
            object.__setattr__(self, name, value)


def as_point_observations(observations) -> list[PointObservation]:
    """:class:`PointObservation` objects from objects or ``(time, xi, values, std[, fields])`` tuples."""
    out = []
    for obs in observations:
        if isinstance(obs, PointObservation):
            out.append(obs)
        elif isinstance(obs, (tuple, list)) and len(obs) in (4, 5):
            out.append(PointObservation(*obs))
        else:
            raise InputError("an observation must be a PointObservation or a (time, xi, values, std[, fields]) tuple")
    return out


def point_observations(ldnet, operator, x, y, values, std, times) -> list[PointObservation]:
    """Grid observations in physical units -> :class:`PointObservation` in the LDNet's units.

    Parameters
    ----------
    operator : :class:`~ldensf_hpc.observe.ObservationOperator` on members ``(F, ny, nx)``.
    x, y : ``(nx,)``, ``(ny,)`` physical grid coordinates.
    values : ``(T, m)`` observations ``H x_t`` (+ noise) of physical fields.
    std : ``(m,)`` noise std in physical units.
    times : ``(T,)`` latent times of the observations.
    """
    if len(operator.shape) != 3:
        raise InputError(f"point observations need an operator on (F, ny, nx) fields, got shape {operator.shape}")
    values = np.asarray(values, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if values.shape != (len(times), operator.m):
        raise InputError(f"values must be ({len(times)}, {operator.m}) for {len(times)} times, got {values.shape}")
    rows, cols = operator.coords.T.astype(np.int64)  # grid indices (row = y, column = x)
    points = np.stack([np.asarray(x, np.float64)[cols], np.asarray(y, np.float64)[rows]], axis=1)
    xi = np.asarray(ldnet.norm.scale_xi(points))
    f = operator.field
    mean, scale = np.asarray(ldnet.norm.field_mean)[f], np.asarray(ldnet.norm.field_std)[f]
    std = np.broadcast_to(np.asarray(std, np.float64), (operator.m,)) / scale
    return [PointObservation(t, xi, (v - mean) / scale, std, f) for t, v in zip(times, values)]


def interpolate_latent(ldnet, s, u, fraction):
    """Latent state between steps, ``s(t_k + a dt) = s(t_k) + a dt F(s(t_k), u)`` (eq. 17)."""
    return s + fraction * ldnet.cfg.dt_hat * ldnet.dynamics(s, u)


class LatentWindow:
    """The cost J(alpha) of eq. 19 for one window.

    Parameters
    ----------
    ldnet : the LDNet (its parameter dtype and device are used throughout).
    background : ``(K, latent + p)`` background ensemble ``z`` at the window start.
    observations : the :class:`PointObservation` of the window.
    t0 : latent time of the window start; the observation times lie in ``[t0, t0 + tau)``.
    inflation : ``rho``.
    noise : ``(K, latent + p)`` additive anomaly noise ``eps`` (re-centred here), or None.
    """

    def __init__(self, ldnet, background: torch.Tensor, observations, t0: float, inflation: float = 1.0,
                 noise: torch.Tensor | None = None):
        self.ldnet, self.latent = ldnet, ldnet.latent
        K = background.shape[0]
        self.mean = background.mean(dim=0)
        anomalies = inflation * (background - self.mean)
        if noise is not None:
            anomalies = anomalies + (noise - noise.mean(dim=0))
        self.P = anomalies / math.sqrt(K - 1)
        like = {"dtype": background.dtype, "device": background.device}
        # R runs once per distinct point (fields observed at one sensor share it) and once for all the
        # times observed at the same points: sites are (distinct points, numbers of their observations)
        self.obs, sites = [], {}  # the points' bytes (their dimension is the LDNet's) -> (points, numbers)
        for i, ob in enumerate(observations):
            offset = ob.time - t0
            k = math.floor(offset)
            xi, point = np.unique(ob.xi, axis=0, return_inverse=True)
            self.obs.append((k, offset - k, torch.as_tensor(ob.values, **like), torch.as_tensor(ob.std, **like),
                             torch.as_tensor(point.reshape(-1), device=background.device),
                             torch.as_tensor(ob.fields, device=background.device)))
            sites.setdefault(xi.tobytes(), (xi, []))[1].append(i)
        self.sites = [(torch.as_tensor(xi, **like), numbers) for xi, numbers in sites.values()]
        self.n_steps = max((k for k, *_ in self.obs), default=0)

    def state(self, alpha: torch.Tensor) -> torch.Tensor:
        """Window-initial ``z(alpha) = zbar + P_z alpha`` for ``alpha (B, K)``: ``(B, latent + p)``."""
        return self.mean + alpha @ self.P

    def misfit(self, z: torch.Tensor, perturbations=None) -> torch.Tensor:
        """Observation term ``1/2 sum_i |y_i + e_i - H_i R(s(t_i))|^2_{R^-1}`` of window-initial states ``z (B, D)``.

        ``perturbations`` are the ``e_i``, one ``(B, M_i)`` tensor per observation time (default 0).
        """
        s, u = z[:, :self.latent], z[:, self.latent:]
        steps = [s]
        for _ in range(self.n_steps):
            steps.append(self.ldnet.step(steps[-1], u))
        states = [steps[k] if a == 0 else interpolate_latent(self.ldnet, steps[k], u, a) for k, a, *_ in self.obs]
        total = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for xi, numbers in self.sites:
            fields_at = self.ldnet.reconstruct(torch.cat([states[i] for i in numbers]), xi)
            for predicted, i in zip(fields_at.split(z.shape[0]), numbers):
                _, _, values, std, points, fields = self.obs[i]
                if perturbations is not None:
                    values = values + perturbations[i]
                total = total + 0.5 * (((values - predicted[:, points, fields]) / std) ** 2).sum(dim=-1)
        return total

    def cost(self, alpha: torch.Tensor, centres=None, perturbations=None, weight: float = 1.0) -> torch.Tensor:
        """``J(alpha)`` (eq. 19) for each row of ``alpha (B, K)``: ``(B,)``.

        ``centres`` ``(B, K)`` shift the prior term to ``|alpha - centre|^2`` and ``perturbations``
        perturb the observations (see :meth:`misfit`): the randomised-maximum-likelihood costs.
        ``weight`` multiplies the observation term (a tempered cost; 1: eq. 19).
        """
        prior = alpha if centres is None else alpha - centres
        return 0.5 * (prior**2).sum(dim=-1) + weight * self.misfit(self.state(alpha), perturbations)

    def observation_perturbations(self, K: int, rng: np.random.Generator) -> list:
        """``e_ij ~ N(0, R_i)`` re-centred over the ``K`` members, one ``(K, M_i)`` tensor per time."""
        out = []
        for _, _, values, std, _, _ in self.obs:
            e = rng.standard_normal((K, len(values)))
            e = torch.as_tensor(e - e.mean(axis=0), dtype=std.dtype, device=std.device)
            out.append(std * e)
        return out


@dataclass
class LEVDA(Method):
    """Latent ensemble 4D-Var (LEVDA paper §3.2) on the LDNet state ``z = (s, u)``.

    Parameters
    ----------
    window : latent steps per assimilation window (``tau``).
    inflation : multiplicative factor ``rho >= 1`` on the anomalies.
    additive : std ``sigma >= 0`` of the additive anomaly noise, in ``z`` units (a scalar,
        or one value per component of ``z``).
    max_iter : L-BFGS iterations per window; ``history`` its memory.
    perturb_obs : randomised maximum likelihood members (perturbed observations, prior
        term centred on each warm start) instead of the paper's common cost.
    model_error : std ``>= 0`` of the surrogate's representation error at a sensor, standardised
        field units, added to every value's noise variance: ``R_i = diag(std_i^2 + model_error^2)``
        (not in the paper; without it noise-free data are fitted to the surrogate's error).
    tempering : minimisations per window, the observation term weighed ``10^-(n-1), ..., 0.1, 1``
        in turn, each from the last's minimiser (``1``: the paper's single minimisation); a quasi-static
        continuation for costs whose noise is small beside the background's misfit (not in the paper).
    """

    window: int = 5
    inflation: float = 1.0
    additive: float | tuple = 0.0
    max_iter: int = 50
    history: int = 10
    perturb_obs: bool = False
    model_error: float = 0.0
    tempering: int = 1
    name: ClassVar[str] = "levda"
    settings_read: ClassVar[tuple[str, ...]] = ("levda",)
    label: ClassVar[str] = "LEVDA"
    capabilities: ClassVar[Capabilities] = Capabilities(parameters=True, irregular_times=True,
                                                        moving_sensors=True, smoother=True, member_sharding=False)
    space: ClassVar[str] = "LDNet latent + parameters"
    dynamics: ClassVar[str] = "LDNet"

    def __post_init__(self):
        if int(self.window) != self.window or self.window < 1:
            raise ConfigError(f"LEVDA: window must be an integer >= 1 latent steps, got {self.window}")
        if not self.inflation >= 1.0:
            raise ConfigError(f"LEVDA: inflation must be >= 1, got {self.inflation}")
        if not np.all(np.asarray(self.additive, dtype=float) >= 0):
            raise ConfigError(f"LEVDA: additive noise std must be >= 0, got {self.additive}")
        if int(self.max_iter) != self.max_iter or self.max_iter < 1 or int(self.history) != self.history \
                or self.history < 1:
            raise ConfigError(f"LEVDA: max_iter and history must be integers >= 1, got {self.max_iter}, {self.history}")
        if int(self.tempering) != self.tempering or self.tempering < 1:
            raise ConfigError(f"LEVDA: tempering must be an integer >= 1 minimisations, got {self.tempering}")
        if not (math.isfinite(self.model_error) and self.model_error >= 0):
            raise ConfigError(f"LEVDA: model_error must be a finite std >= 0, got {self.model_error}")

    @classmethod
    def from_config(cls, cfg) -> LEVDA:
        c = cfg.levda
        return cls(window=c.window, inflation=c.inflation, additive=c.additive, max_iter=c.max_iter,
                   history=c.history, perturb_obs=c.perturb_obs, model_error=c.model_error,
                   tempering=c.tempering)

    def surrogates(self, cfg) -> tuple[str, ...]:
        return ("ldnet",)

    def state_dim(self, problem: Problem) -> int:
        ldnet = problem.surrogate("ldnet")
        return int(ldnet.latent + ldnet.n_params)

    def assimilate(self, problem: Problem, observations: ObservationSet, seed: int = 0) -> MethodRun:
        """Windows over all observation times from the LDNet's first latent state of the prior.

        The members (and the background, the model run from the background mean, scored as
        the ``background`` field) are reconstructed at the observation times: between latent
        steps by eq. 17.
        """
        ldnet = problem.surrogate("ldnet")
        model = LatentModel(ldnet)
        z0 = model.step(model.initial_state(problem.prior_params))
        times = latent_steps(problem, ldnet)
        points = []
        for t, (op, y, std) in enumerate(zip(problem.operators, observations.y, observations.assumed)):
            points += point_observations(ldnet, op, problem.x, problem.y, y[None], std, [times[t]])
        res = self.run(ldnet, z0, points, seed=seed, keep_members=True)

        def at_times(z_steps):  # (n_steps, ..., D) on integer latent steps -> (T, ..., D) at the observation times
            k = np.floor(times).astype(int)
            z = torch.as_tensor(z_steps[k], dtype=torch.float32)
            a = torch.as_tensor(times - k, dtype=torch.float32).reshape(-1, *[1] * (z.ndim - 1))
            s, u = z[..., :ldnet.latent], z[..., ldnet.latent:]
            with torch.no_grad():
                s = interpolate_latent(ldnet, s, u, a)
            return torch.cat([s, u], dim=-1).numpy()

        background = reconstruct(ldnet, at_times(res.background_trajectory), problem.x, problem.y)
        return latent_run(problem, ldnet, at_times(res.trajectory_members), timings={"T_d": res.T_d, "T_f": res.T_f},
                          extra={"cost_background": res.cost_background.tolist(),
                                 "cost_analysis": res.cost_analysis.tolist()}, fields={"background": background})

    def weights(self) -> list[float]:
        """Observation-term weights of the successive minimisations: ``10^-(n - 1) ... 0.1, 1`` (``tempering`` n)."""
        return [10.0 ** -(self.tempering - 1 - j) for j in range(self.tempering)]

    def analyse_window(self, ldnet, background: torch.Tensor, observations, t0: float,
                       rng: np.random.Generator):
        """Analysis ensemble ``(K, D)`` at the window start, and J at the background and analysis means."""
        K, D = background.shape
        noise = None
        sigma = np.broadcast_to(np.asarray(self.additive, dtype=np.float64), (D,))
        if np.any(sigma > 0):
            noise = torch.as_tensor(sigma * rng.standard_normal((K, D)), dtype=background.dtype,
                                    device=background.device)
        problem = LatentWindow(ldnet, background, observations, t0, self.inflation, noise)
        alpha = math.sqrt(K - 1) * torch.eye(K, dtype=background.dtype, device=background.device)
        with torch.no_grad():
            cost_background = float(problem.cost(torch.zeros_like(alpha[:1]))[0])
        centres, perturbations = None, None
        if self.perturb_obs:
            centres, perturbations = alpha.clone(), problem.observation_perturbations(K, rng)
        for weight in self.weights() if observations else ():
            alpha.requires_grad_(True)
            optimizer = torch.optim.LBFGS([alpha], lr=1.0, max_iter=self.max_iter, history_size=self.history,
                                          line_search_fn="strong_wolfe")

            def closure():  # gradient w.r.t. alpha only (the LDNet weights stay untouched)
                loss = problem.cost(alpha, centres, perturbations, weight).sum()
                alpha.grad = torch.autograd.grad(loss, alpha)[0]
                return loss.detach()

            optimizer.step(closure)
            alpha = alpha.detach()
        with torch.no_grad():
            cost_analysis = float(problem.cost(alpha.mean(dim=0, keepdim=True))[0])
            return problem.state(alpha), cost_background, cost_analysis

    def run(self, ldnet, ensemble_z, observations, n_windows: int | None = None, seed: int = 0,
            keep_members: bool = False) -> WindowResult:
        """Assimilate ``observations`` window by window from the initial ensemble ``ensemble_z``.

        Parameters
        ----------
        ldnet : :class:`~ldensf_hpc.surrogate.ldnet.LDNet`.
        ensemble_z : ``(K >= 2, latent + p)`` states ``z = (s, u)`` at latent time 0.
        observations : :class:`PointObservation` objects or ``(time, xi, values, std[, fields])`` tuples.
        n_windows : windows ``[w tau, (w + 1) tau)`` to run; default: up to the last observation.
        seed : seeds the additive inflation noise (``rng_for(seed, w)`` in window ``w``).
        keep_members : also return the analysis members at every latent step.

        Returns
        -------
        :class:`~ldensf_hpc.filters.envar4d.WindowResult` with the trajectory at every latent
        step ``0 ... n_windows tau - 1``; ``ensemble`` is ``z`` at ``n_windows tau``.
        """
        observations = [dataclasses.replace(ob, std=np.hypot(ob.std, self.model_error)) if self.model_error else ob
                        for ob in as_point_observations(observations)]
        param = next(ldnet.parameters())
        like = {"dtype": param.dtype, "device": param.device}
        z = torch.as_tensor(np.asarray(ensemble_z), **like)
        D = ldnet.latent + ldnet.n_params
        if z.ndim != 2 or z.shape[1] != D:
            raise InputError(f"ensemble must be (K, latent + p = {D}) states z = (s, u), got shape {tuple(z.shape)}")
        if z.shape[0] < 2:
            raise InputError(f"an ensemble needs at least 2 members, got K = {z.shape[0]}")
        if not bool(torch.all(torch.isfinite(z))):
            raise InputError("ensemble contains NaN or Inf")
        if np.size(self.additive) not in (1, D):
            raise InputError(f"additive noise std must be a scalar or {D} values, got {np.size(self.additive)}")
        for ob in observations:
            if ob.fields.max() >= ldnet.n_fields:
                raise InputError(f"observation at time {ob.time} refers to field {ob.fields.max()}, "
                                 f"the LDNet has {ldnet.n_fields}")
            if ob.xi.shape[1] != ldnet.norm.xi_dim:
                raise InputError(f"observation at time {ob.time} has points of {ob.xi.shape[1]} coordinates; "
                                 f"this LDNet's {ldnet.norm.geometry} takes {ldnet.norm.xi_dim} (norm.scale_xi)")
        if n_windows is None:
            if not observations:
                raise InputError("no observations and no n_windows: nothing to assimilate")
            n_windows = int(max(ob.time for ob in observations) // self.window) + 1
        if int(n_windows) != n_windows or n_windows < 1:
            raise InputError(f"n_windows must be an integer >= 1, got {n_windows}")
        late = [ob.time for ob in observations if ob.time >= n_windows * self.window]
        if late:
            raise InputError(f"observation time {min(late)} lies after the last window "
                             f"(n_windows * window = {n_windows * self.window})")

        stats = {key: [] for key in ("starts", "background_mean", "background_std", "analysis_mean",
                                     "analysis_std", "trajectory_mean", "trajectory_std",
                                     "background_trajectory", "cost_background", "cost_analysis")}
        T_d = T_f = 0.0
        members = []
        for w in range(int(n_windows)):
            t0 = w * self.window
            in_window = [ob for ob in observations if t0 <= ob.time < t0 + self.window]
            start = time.perf_counter()
            analysis, cost_b, cost_a = self.analyse_window(ldnet, z, in_window, t0, rng_for(seed, w))
            T_f += time.perf_counter() - start

            start = time.perf_counter()
            with torch.no_grad():
                background = _rollout(ldnet, z.mean(dim=0, keepdim=True), self.window - 1)
                trajectory = _rollout(ldnet, analysis, self.window)
            T_d += time.perf_counter() - start
            stats["starts"].append(t0)
            for kind, ens in (("background", z), ("analysis", analysis)):
                stats[f"{kind}_mean"].append(ens.mean(dim=0).cpu().double().numpy())
                stats[f"{kind}_std"].append(ens.std(dim=0).cpu().double().numpy())
            stats["trajectory_mean"].extend(zk.mean(dim=0).cpu().double().numpy() for zk in trajectory[:-1])
            stats["trajectory_std"].extend(zk.std(dim=0).cpu().double().numpy() for zk in trajectory[:-1])
            if keep_members:
                members.extend(zk.cpu().double().numpy() for zk in trajectory[:-1])
            stats["background_trajectory"].extend(zk[0].cpu().double().numpy() for zk in background)
            stats["cost_background"].append(cost_b)
            stats["cost_analysis"].append(cost_a)
            z = trajectory[-1]
        arrays = {key: np.asarray(value, dtype=np.float64) for key, value in stats.items()}
        return WindowResult(filter_name=self.name, times=np.arange(n_windows * self.window, dtype=np.float64),
                            T_d=T_d, T_f=T_f, ensemble=z.cpu().numpy(),
                            trajectory_members=np.asarray(members) if keep_members else None, **arrays)


def _rollout(ldnet, z: torch.Tensor, n_steps: int) -> list:
    """``z`` at latent steps ``0 ... n_steps`` (parameters static)."""
    latent = ldnet.latent
    out = [z]
    for _ in range(n_steps):
        out.append(torch.cat([ldnet.step(out[-1][:, :latent], out[-1][:, latent:]), out[-1][:, latent:]], dim=1))
    return out

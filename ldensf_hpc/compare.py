"""Every method on the same held-out trajectory, the same observations and the same metrics.

A :class:`TestCase` fixes what all methods share: the truth at the observation
times, the observation operators (a fixed grid, or moving sensors drawn afresh at
every time), the prior parameters and the initial ensemble. For one noise level,
:meth:`TestCase.observations` draws the noisy observations once; each runner of
:data:`RUNNERS` turns them into a :class:`MethodRun` (the full-state ensemble at
every observation time in physical units, the parameter ensemble where the method
estimates parameters, and its timings), and :func:`score` measures every run the
same way: rel-RMSE of the ensemble mean (paper Fig. 5-6), spread-error ratio and
CRPS on standardised fields, parameter error.

Times: observation ``k`` is at stored frame ``k * frame_every`` (the LDNet's latent
steps), or, with ``observe.irregular``, at a frame drawn in ``((k - 1) fe, k fe]``,
between latent steps. Full-space methods (EnSF, LETKF, Latent-EnSF, 4DEnVar) start
from the solver ensemble at frame 0 and analyse observations ``1 ... T - 1``; the
latent methods start from the LDNet's first latent state and analyse all ``T``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import metrics
from .backend import rng_for
from .config import ConfigError
from .data.dataset import TrajectoryStore, split_indices
from .data.generate import frame_schedule
from .errors import DataError, InputError
from .filters.base import FILTERS, Observation, assimilate, make_filter
from .filters.ld_ensf import (
    LatentModel,
    latent_observations,
    latent_operator,
    latent_truth,
    reconstruct,
)
from .filters.score_sde import schedule
from .models import Standardized, make_model
from .observe import field_std, moving_points, observe
from .surrogate import load
from .surrogate.train import observation_operator

STABILITY_MARGIN = 1.1  # latent observation std >= this x the stable limit of the explicit Euler step
# rng streams (rng_for(seed, STREAM, ...)) of this module
_OBS, _ENSEMBLE, _FILTER, _VALIDATION, _SENSORS, _TIMES = 11, 12, 13, 14, 15, 16


@dataclass
class ObservationSet:
    """The observations of one noise level: per time ``y``, the true noise std and the std the filters assume."""

    level: float
    y: list  # T vectors (m_t,), physical units
    std: list  # T true noise stds (m_t,)
    assumed: list  # T stds (m_t,) the filters use: the true std, floored at noise_floor x field std


@dataclass
class MethodRun:
    """What a runner returns: ensembles at the observation times and timings [s]."""

    members: np.ndarray  # (T, K, F, ny, nx) physical fields
    params: np.ndarray | None  # (T, K, p) physical parameters, None if the method does not estimate them
    timings: dict  # T_d, T_f and, for latent methods, T_r
    extra: dict = field(default_factory=dict)  # method-specific curves (e.g. LEVDA's background error)


class TestCase:
    """One held-out trajectory of a dataset with its surrogates, operators and prior ensemble.

    Parameters
    ----------
    cfg : the run's :class:`~ldensf_hpc.config.Config` (``observe``, ``ensf.ensemble_size``, ...).
    data_dir, model_dir : dataset and checkpoints (``ldnet.pt``; ``encoder.pt``, ``set_encoder.pt``,
        ``vae.pt`` when a method needs them).
    trajectory : index of the trajectory (default: the first of the test split).
    """

    __test__ = False  # not a pytest class

    def __init__(self, cfg, data_dir, model_dir, trajectory=None):
        if cfg.observe.sensors not in ("grid", "moving"):
            raise ConfigError(f"observe.sensors must be grid or moving, got {cfg.observe.sensors!r}")
        self.cfg, self.model_dir, self._surrogates = cfg, Path(model_dir), {}
        self.store = store = TrajectoryStore(data_dir)
        self.ldnet = self.surrogate("ldnet")
        test = split_indices(store.n_trajectories, cfg.data.split, cfg.data.seed)["test"]
        if len(test) == 0:
            raise DataError(f"the dataset in {data_dir} has no test trajectories (n_trajectories too small)")
        self.trajectory = j = int(test[0] if trajectory is None else trajectory)
        self.fe = fe = self.ldnet.cfg.frame_every
        seed = self.seed = cfg.data.seed
        T = store.kept_frames(fe)
        self.frames = np.arange(T) * fe
        if cfg.observe.irregular:
            self.frames[1:] -= rng_for(seed, _TIMES).integers(0, fe, size=T - 1)
        self.latent_times = self.frames / fe  # LDNet latent steps (fractional when irregular)
        self.truth = store.frames(j)[self.frames].astype(np.float64)  # (T, F, ny, nx)
        self.times = store.time[self.frames]
        self.u_true = store.params[j]
        self.solver_gaps = np.diff(self.frames) * frame_schedule(cfg).steps_per_frame
        self.grid_operator, _ = observation_operator(cfg, store)
        if cfg.observe.sensors == "grid":
            self.operators = [self.grid_operator] * T
        else:
            self.operators = moving_points(self.grid_operator.shape, self.grid_operator.m // store.n_fields, T,
                                           rng_for(seed, _SENSORS), periodic=cfg.case == "kolmogorov")
        self.model = make_model(cfg.case, cfg)
        self.norm_model = Standardized(self.model, self.ldnet.norm.field_mean, self.ldnet.norm.field_std)
        self.K = cfg.ensf.ensemble_size
        self.prior_params = self.model.sample_params(rng_for(seed, _ENSEMBLE), self.K)
        state = self.model.initial_state(self.prior_params, rng_for(seed, _ENSEMBLE, 1))
        warmup = frame_schedule(cfg).warmup_steps
        self.start = self.model.step(state, self.prior_params, warmup) if warmup else state

    def surrogate(self, name: str):
        """The trained surrogate ``MODEL_DIR/<name>.pt`` (cached)."""
        if name not in self._surrogates:
            self._surrogates[name] = load(self.model_dir / f"{name}.pt")
        return self._surrogates[name]

    @property
    def T(self) -> int:
        return len(self.frames)

    def observations(self, level: float, frames=None, operators=None, seed: int | None = None) -> ObservationSet:
        """Noisy observations of the truth (or of ``frames``) at noise ``level`` (relative to each field's std)."""
        frames = self.truth if frames is None else frames
        operators = self.operators if operators is None else operators
        seed = self.seed if seed is None else seed
        floor = self.cfg.observe.noise_floor
        if not floor > 0:
            raise ConfigError(f"observe.noise_floor must be > 0, got {floor}")
        if not level >= 0:
            raise InputError(f"noise level must be >= 0, got {level}")
        scale = field_std(self.grid_operator, frames)  # the same for every layout: computed once
        y, std, assumed = [], [], []
        for t, (frame, op) in enumerate(zip(frames, operators)):
            std.append(level * scale[op.field])
            assumed.append(max(level, floor) * scale[op.field])
            y.append(observe(op, frame, std[-1], rng_for(seed, _OBS, t)))
        return ObservationSet(level, y, std, assumed)

    def standardized(self, obs: ObservationSet, first: int = 1):
        """Operators, standardised observations and stds from time ``first`` on (full-space filters)."""
        scale = self.norm_model.std.ravel()
        ops = self.operators[first:]
        y = [self.norm_model.standardize_obs(op, v) for op, v in zip(ops, obs.y[first:])]
        std = [s / scale[op.field] for op, s in zip(ops, obs.assumed[first:])]
        return ops, y, std


def _full_space(case: TestCase, filt, obs: ObservationSet) -> MethodRun:
    """A filter of the common interface cycled with the full solver on standardised fields."""
    nm = case.norm_model
    ops, y, std = case.standardized(obs)
    if hasattr(filt, "sde"):  # EnSF: the explicit likelihood step diverges below this std (noise 0)
        std = [np.maximum(s, STABILITY_MARGIN * filt.sde.stable_std()) for s in std]
    res = assimilate(nm, filt, case.start, nm.standardize(case.truth), ops, std, case.solver_gaps,
                     params=case.prior_params, observations=y, seed=case.seed + _FILTER, keep_members=True)
    first = nm.to_fields(case.start)[None]
    members = nm.unstandardize(np.concatenate([first, res.analysis_members.reshape(-1, *first.shape[1:])]))
    return MethodRun(members.astype(np.float32), None, {"T_d": res.T_d, "T_f": res.T_f})


def run_free(case: TestCase, obs: ObservationSet) -> MethodRun:
    """The solver ensemble from the prior parameters, never updated."""
    t0 = time.perf_counter()
    state, members = case.start, [case.model.to_fields(case.start)]
    for gap in case.solver_gaps:
        state = case.model.step(state, case.prior_params, int(gap))
        members.append(case.model.to_fields(state))
    params = np.broadcast_to(case.prior_params, (case.T, *case.prior_params.shape))
    return MethodRun(np.asarray(members, np.float32), params, {"T_d": time.perf_counter() - t0})


def run_ensf(case: TestCase, obs: ObservationSet) -> MethodRun:
    """Full-space EnSF (paper Algorithm 1) on standardised fields."""
    return _full_space(case, make_filter("ensf", case.cfg), obs)


def run_letkf(case: TestCase, obs: ObservationSet) -> MethodRun:
    """LETKF with Gaspari-Cohn localisation."""
    return _full_space(case, make_filter("letkf", case.cfg), obs)


def run_latent_ensf(case: TestCase, obs: ObservationSet) -> MethodRun:
    """Latent-EnSF (paper §2.3): EnSF in the coupled VAE's latent space, full solver between analyses."""
    from .filters.latent_ensf import LatentEnSF, latent_obs_std

    vae, nm = case.surrogate("vae"), case.norm_model
    val = _validation_frames(case)
    val_obs = case.observations(obs.level, val, [case.grid_operator] * len(val), seed=case.seed + _VALIDATION)
    scale = nm.std.ravel()[case.grid_operator.field]
    latent_std = latent_obs_std(vae, nm.standardize(val), case.grid_operator, val_obs.std[0] / scale,
                                rng_for(case.seed, _VALIDATION))
    stable = STABILITY_MARGIN * schedule(case.cfg.ensf.n_steps, case.cfg.ensf.eps_alpha,
                                         case.cfg.ensf.eps_beta).stable_std()
    filt = LatentEnSF.from_config(case.cfg, vae, np.maximum(latent_std, stable))
    run = _full_space(case, filt, obs)
    run.extra["latent_obs_std_mean"] = float(np.mean(filt.latent_std))
    return run


def _validation_frames(case: TestCase, n: int = 4) -> np.ndarray:
    """Kept frames of up to ``n`` validation trajectories, ``(N, F, ny, nx)`` physical."""
    val = split_indices(case.store.n_trajectories, case.cfg.data.split, case.cfg.data.seed)["val"][:n]
    return np.concatenate([case.store.frames(int(j), case.fe) for j in val]).astype(np.float64)


def ld_encoder_name(cfg) -> str:
    """The observation encoder LD-EnSF uses: ``ld_ensf.encoder``, where ``auto`` is lstm on the grid, set otherwise."""
    name = cfg.ld_ensf.encoder
    if name == "auto":
        return "lstm" if cfg.observe.sensors == "grid" else "set"
    if name not in ("lstm", "set"):
        raise ConfigError(f"ld_ensf.encoder must be auto, lstm or set, got {name!r}")
    return name


def _ld_encoder(case: TestCase):
    """``(name, encoder, encode(operators, y) -> (T, latent + p))`` of the encoder LD-EnSF uses for this run."""
    name = ld_encoder_name(case.cfg)
    if name == "lstm":
        if case.cfg.observe.sensors != "grid":
            raise ConfigError("the LSTM encoder needs the fixed grid of sensors; use ld_ensf.encoder=set")
        encoder = case.surrogate("encoder")
        return name, encoder, lambda operators, y: latent_observations(encoder, np.asarray(y))
    from .surrogate.set_encoder import encode_history

    encoder = case.surrogate("set_encoder")
    return name, encoder, lambda operators, y: encode_history(encoder, operators, y)


def encoder_obs_std(case: TestCase, encode, level: float) -> np.ndarray:
    """Latent observation error std ``(latent + p,)``: RMSE of the encoder on noisy validation histories.

    This is the R of the identity latent observation operator (eq. 18): how far the
    encoded pair (s_hat, u_hat) lies from the LDNet trajectory at the true parameters.
    """
    store, errors = case.store, []
    for j in split_indices(store.n_trajectories, case.cfg.data.split, case.cfg.data.seed)["val"]:
        frames = store.frames(int(j), case.fe).astype(np.float64)
        ops = case.operators[:len(frames)]
        obs = case.observations(level, frames, ops, seed=case.seed + 1000 + int(j))
        errors.append(encode(ops, obs.y) - latent_truth(case.ldnet, store.params[j], len(frames)))
    return np.sqrt(np.mean(np.concatenate(errors) ** 2, axis=0))


def _reconstruct_members(case: TestCase, z: np.ndarray):
    """Fields ``(T, K, F, ny, nx)`` and physical parameters ``(T, K, p)`` of latent states ``z (T, K, D)``."""
    L = case.ldnet.latent
    t0 = time.perf_counter()
    fields = reconstruct(case.ldnet, z, case.store.x, case.store.y)
    T_r = (time.perf_counter() - t0) / len(z)  # per analysis time: the paper's T_r is one reconstruction
    params = case.ldnet.norm.unscale_params(np.asarray(z[..., L:], np.float64))
    return fields.astype(np.float32), np.asarray(params), T_r


def run_ld_ensf(case: TestCase, obs: ObservationSet) -> MethodRun:
    """LD-EnSF (Algorithm 2): LDNet forecasts, EnSF on encoded latent observations, R on demand."""
    if case.cfg.observe.irregular:
        raise ConfigError("LD-EnSF's encoders take one observation per latent step (observe.irregular=false)")
    ldnet, cfg = case.ldnet, case.cfg
    encoder_name, encoder, encode = _ld_encoder(case)
    latent_model = LatentModel(ldnet, encoder.out_mean.numpy(), encoder.out_std.numpy())
    filt = make_filter("ld_ensf", cfg)
    stable = STABILITY_MARGIN * schedule(filt.n_steps, filt.eps_alpha, filt.eps_beta).stable_std()
    z_std = np.maximum(encoder_obs_std(case, encode, obs.level) / latent_model.std,
                       max(cfg.ld_ensf.obs_std_floor, stable))
    t0 = time.perf_counter()
    z_obs = latent_model.to_fields(encode(case.operators, obs.y))
    T_encode = time.perf_counter() - t0
    op = latent_operator(latent_model)
    z0 = latent_model.step(latent_model.initial_state(case.prior_params))  # s_0 from s_{-1} = 0
    first_obs = Observation(op, z_obs[0], z_std)
    filt.analyse(latent_model.to_fields(z0), first_obs, rng_for(case.seed, _FILTER))  # compiles the kernel
    t0 = time.perf_counter()
    first = filt.analyse(latent_model.to_fields(z0), first_obs, rng_for(case.seed, _FILTER))
    T_first = time.perf_counter() - t0
    z_true = latent_truth(ldnet, case.u_true, case.T)
    res = assimilate(latent_model, filt, latent_model.from_fields(first), latent_model.to_fields(z_true), op, z_std,
                     1, observations=z_obs[1:], seed=case.seed + _FILTER, keep_members=True)
    z = latent_model.from_fields(np.concatenate([first[None], res.analysis_members]))
    fields, params, T_r = _reconstruct_members(case, z)
    L = ldnet.latent
    extra = {"encoder": encoder_name, "latent_obs_std": z_std.tolist(), "kernel": filt.kernel,
             "latent_rel_rmse": [_rel(zt.mean(axis=0)[:L], zr[:L]) for zt, zr in zip(z, z_true)]}
    return MethodRun(fields, params, {"T_d": res.T_d, "T_f": res.T_f + T_first + T_encode, "T_r": T_r,
                                      "T_encode": T_encode}, extra)


def run_levda(case: TestCase, obs: ObservationSet) -> MethodRun:
    """LEVDA (LEVDA paper Algorithm 1): ensemble 4D-Var over windows in the LDNet latent space."""
    from .filters.levda import LEVDA, interpolate_latent, point_observations

    ldnet = case.ldnet
    latent_model = LatentModel(ldnet)
    z0 = latent_model.step(latent_model.initial_state(case.prior_params))
    points = []
    for t, (op, y, std) in enumerate(zip(case.operators, obs.y, obs.assumed)):
        points += point_observations(ldnet, op, case.store.x, case.store.y, y[None], std, [case.latent_times[t]])
    filt = LEVDA.from_config(case.cfg)
    res = filt.run(ldnet, z0, points, seed=case.seed + _FILTER, keep_members=True)

    def at_times(z_steps):  # (n_steps, ..., D) on integer latent steps -> (T, ..., D) at the observation times
        k = np.floor(case.latent_times).astype(int)
        z = torch.as_tensor(z_steps[k], dtype=torch.float32)
        a = torch.as_tensor(case.latent_times - k, dtype=torch.float32).reshape(-1, *[1] * (z.ndim - 1))
        s, u = z[..., :ldnet.latent], z[..., ldnet.latent:]
        with torch.no_grad():
            s = interpolate_latent(ldnet, s, u, a)
        return torch.cat([s, u], dim=-1).numpy()

    fields, params, T_r = _reconstruct_members(case, at_times(res.trajectory_members))
    background = reconstruct(ldnet, at_times(res.background_trajectory), case.store.x, case.store.y)
    extra = {"background_full_rel_rmse": [_rel(b, t) for b, t in zip(background, case.truth)],
             "cost_background": res.cost_background.tolist(), "cost_analysis": res.cost_analysis.tolist()}
    return MethodRun(fields, params, {"T_d": res.T_d, "T_f": res.T_f, "T_r": T_r}, extra)


def run_envar4d(case: TestCase, obs: ObservationSet) -> MethodRun:
    """Full-space 4DEnVar (LEVDA paper eq. 11) with the parameters in the control vector."""
    nm = case.norm_model
    ops, y, std = case.standardized(obs)
    observations = [Observation(op, v, s) for op, v, s in zip(ops, y, std)]
    res = make_filter("envar4d", case.cfg).run(nm, case.start, observations, case.solver_gaps,
                                               params=case.prior_params, keep_members=True)
    d = case.truth[0].size
    shape = case.truth.shape[1:]
    first = nm.to_fields(case.start)
    members = np.concatenate([first[None], res.trajectory_members[..., :d].reshape(-1, case.K, *shape)])
    params = np.concatenate([case.prior_params[None], res.trajectory_members[..., d:]])
    return MethodRun(nm.unstandardize(members).astype(np.float32), params, {"T_d": res.T_d, "T_f": res.T_f})


RUNNERS = {"free": run_free, "ensf": run_ensf, "latent_ensf": run_latent_ensf, "ld_ensf": run_ld_ensf,
           "letkf": run_letkf, "levda": run_levda, "envar4d": run_envar4d}
"""Methods of ``ldensf run --methods`` (``free``: no assimilation)."""
SURROGATES_NEEDED = {"latent_ensf": ("vae",), "ld_ensf": ("encoder",), "levda": ()}
"""Surrogates beyond the LDNet that a method needs (LD-EnSF: the set encoder for moving sensors)."""
LABELS = {"free": "free (no assimilation)", "ensf": "EnSF", "latent_ensf": "Latent-EnSF", "ld_ensf": "LD-EnSF",
          "letkf": "LETKF", "levda": "LEVDA", "envar4d": "4DEnVar"}


def capabilities(method: str) -> dict:
    """The capability row of ``method``, read from its filter class (``free`` has none)."""
    if method == "free":
        return {"space": "-", "dynamics": "full solver", "parameters": False, "irregular_times": True,
                "moving_sensors": True, "smoother": False}
    if method == "latent_ensf":
        from .filters.latent_ensf import LatentEnSF

        return dict(LatentEnSF.capabilities)
    module, cls = FILTERS[method]
    return dict(getattr(__import__(module, fromlist=[cls]), cls).capabilities)


def unsupported(method: str, cfg) -> str | None:
    """Why ``method`` cannot run with this observation setting, or None."""
    caps = capabilities(method)
    if cfg.observe.irregular and caps["irregular_times"] is not True:
        return "takes observations on the latent step grid only (observe.irregular)"
    if cfg.observe.sensors == "moving" and caps["moving_sensors"] is False:
        return "needs the same sensors at every time (observe.sensors=moving)"
    return None


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def score(case: TestCase, run: MethodRun) -> dict:
    """Per-time metrics of a run against the truth (JSON-ready lists)."""
    if run.members.shape[:1] + run.members.shape[2:] != case.truth.shape:
        raise InputError(f"run members {run.members.shape} do not match the truth {case.truth.shape}")
    if not np.all(np.isfinite(run.members)):
        raise InputError("a method produced NaN or Inf fields")
    nm = case.norm_model
    truth_std = nm.standardize(case.truth)
    out = {"full_rel_rmse": [], "spread_error_ratio": [], "crps": []}
    for t in range(case.T):
        members = run.members[t].astype(np.float64)
        out["full_rel_rmse"].append(_rel(members.mean(axis=0), case.truth[t]))
        ens = nm.standardize(members)
        out["spread_error_ratio"].append(metrics.spread_error_ratio(ens, truth_std[t]))
        out["crps"].append(metrics.crps(ens, truth_std[t]))
    if run.params is not None:
        out["param_rel_error"] = [metrics.param_error(u, case.u_true) for u in run.params]
        out["param_mean"] = run.params.mean(axis=1).tolist()
        out["param_spread"] = run.params.std(axis=1, ddof=1).tolist()
    return out


def compare(case: TestCase, methods, level: float, progress=None) -> dict:
    """Run ``methods`` at noise ``level`` on ``case``; ``{method: metrics + timings}`` (skips explained).

    ``_mean_fields`` (the ensemble-mean fields ``(T, F, ny, nx)``) is kept for plots, not for JSON.
    """
    obs = case.observations(level)
    results = {}
    for name in methods:
        reason = unsupported(name, case.cfg)
        if reason:
            results[name] = {"skipped": reason}
            continue
        t0 = time.perf_counter()
        run = RUNNERS[name](case, obs)
        wall = time.perf_counter() - t0
        results[name] = {**score(case, run), **run.timings, "wall_s": wall, **run.extra,
                         "state_dim": _state_dim(case, name), "_mean_fields": run.members.mean(axis=1)}
        if progress:
            progress(name, level, results[name])
    return results


def _state_dim(case: TestCase, name: str) -> int:
    if name in ("ld_ensf", "levda"):
        return int(case.ldnet.latent + case.ldnet.n_params)
    if name == "latent_ensf":
        return int(case.surrogate("vae").cfg.latent)
    return int(case.truth[0].size) + (int(case.u_true.size) if name == "envar4d" else 0)


def report_levels(levels) -> list[float]:
    """Checked noise levels (fractions of each field's std)."""
    levels = [float(v) for v in levels]
    if not levels or any(not (math.isfinite(v) and v >= 0) for v in levels):
        raise ConfigError(f"noise levels must be finite fractions >= 0, got {levels}")
    return levels

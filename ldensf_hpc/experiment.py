"""One held-out trajectory of a dataset, every method on it, and one way of scoring them.

An :class:`Experiment` fixes what all methods share: the truth at the observation times
(kept here, never shown to a method), the :class:`~ldensf_hpc.filters.base.Problem` the
methods see (model, prior ensemble, observation operators and times, surrogates,
validation trajectories, MPI sharding) and, per noise level, one set of noisy
observations. :meth:`Experiment.score` measures every :class:`MethodRun` the same way:
rel-RMSE of the ensemble mean (paper Fig. 5-6), spread-error ratio and CRPS on
standardised fields, parameter error. :func:`compare` runs methods of the registry.

Times: observation ``k`` is at stored frame ``k * observe.every``, or, with
``observe.irregular``, at a frame drawn in ``((k - 1) every, k every]``. Noise: level
times each field's train-split std (the paper's noise relative to the normalised data).
The prior member ``k`` draws its parameters and initial state from
``rng_for(seed, PRIOR_STREAM, k)``, so no rank count changes it.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from . import cases, geometry, metrics
from .backend import rng_for, to_numpy
from .data import store as data_store
from .data.dataset import TrajectoryStore, load_normalization, split_indices
from .errors import ConfigError, DataError, InputError
from .filters import make_method
from .filters.base import FILTER_STREAM, FULL_SOLVER, PRIOR_STREAM, MethodRun, ObservationSet, Problem, Trajectory
from .observe import moving_points
from .parallel.mpi import Sharding
from .sensor_log import read_sensor_log
from .surrogate import SURROGATES
from .surrogate.training import finished

SENSOR_STREAM, TIMES_STREAM = 15, 16
"""Random streams ``rng_for(seed, STREAM)`` of the moving sensors and the irregular times."""
SENSORS = ("grid", "moving")


def check_dataset(cfg, trajectories: TrajectoryStore) -> None:
    """DataError unless the dataset was made for ``cfg``'s case and solver settings."""
    made = data_store.read_manifest(trajectories.data_dir)["config"]
    if made["case"] != cfg.case:
        raise DataError(f"the dataset at {trajectories.data_dir} is a {made['case']} dataset, not {cfg.case}; "
                        f"use --case {made['case']}")
    wanted = cfg.to_dict()[cfg.case]
    same = lambda a, b: data_store.canonical_json(a) == data_store.canonical_json(b)  # noqa: E731 (tuples vs JSON lists)
    diff = sorted(k for k, v in wanted.items() if k not in cases.COMPUTE_KEYS and not same(made[cfg.case].get(k), v))
    if diff:
        raise DataError(f"the dataset at {trajectories.data_dir} was made with other {cfg.case} settings "
                        f"(differs in: {', '.join(diff)}); use the preset and --set options it was generated with")


def observation_frames(cfg, n_frames: int) -> np.ndarray:
    """Stored-frame index of each observation time (``observe.every`` apart, or irregular)."""
    every = cfg.observe.every
    if every < 1:
        raise ConfigError(f"observe.every must be >= 1 stored frames, got {every}")
    frames = np.arange(0, n_frames, every)
    if len(frames) < 2:
        raise ConfigError(f"observe.every = {every} leaves fewer than two observation times in {n_frames} "
                          f"stored frames; lower observe.every")
    if cfg.observe.irregular:
        frames[1:] -= rng_for(cfg.data.seed, TIMES_STREAM).integers(0, every, size=len(frames) - 1)
    return frames


class Experiment:
    """A test trajectory of the dataset in ``data_dir`` and the :class:`Problem` of assimilating it.

    Parameters
    ----------
    cfg : the run's config (``observe``, ``ensf.ensemble_size``, the methods' sections).
    data_dir : dataset of ``ldensf generate``; model_dir : checkpoints of ``ldensf train`` (None: none).
    trajectory : index of the trajectory (default: the first of the test split).
    sharding : how the members are split over MPI ranks (default: one process).
    fields : what method runs return of the fields (``Problem.fields``: members, moments or mean).
    """

    __test__ = False  # not a pytest class

    def __init__(self, cfg, data_dir, model_dir=None, trajectory=None, sharding: Sharding | None = None,
                 fields: str = "members", sensor_log=None):
        if cfg.observe.sensors not in SENSORS:
            raise ConfigError(f"observe.sensors must be one of {', '.join(SENSORS)}, got {cfg.observe.sensors!r}")
        self.cfg = cfg
        self.store = store = TrajectoryStore(data_dir)
        check_dataset(cfg, store)
        norm = load_normalization(store, cfg.data.split, cfg.data.seed)
        self.splits = split_indices(store.n_trajectories, cfg.data.split, cfg.data.seed)
        j = int(self.splits["test"][0] if trajectory is None else trajectory)
        if not 0 <= j < store.n_trajectories:
            raise InputError(f"trajectory {j} is not in the dataset ({store.n_trajectories} trajectories)")
        self.trajectory = j
        seed = cfg.data.seed
        case = cases.get(cfg.case)
        model = case.model(cfg)
        schedule = case.schedule(cfg.model)
        grid = case.observation_operator(cfg, (store.n_fields, store.ny, store.nx))
        self.log = None
        if sensor_log is not None:
            self.log = read_sensor_log(sensor_log, store.field_names, store.time, store.x, store.y, grid.layout)
            frames, operators = self.log.frames, self.log.operators
            check_log(cfg, self.log, grid)
        else:
            frames = observation_frames(cfg, store.n_frames)
            if cfg.observe.sensors == "grid":
                operators = [grid] * len(frames)
            else:
                locations = int(np.unique(grid.index % grid.n_points).size)
                operators = moving_points(grid.shape, locations, len(frames), rng_for(seed, SENSOR_STREAM),
                                          **grid.layout)
        self.truth = store.frames(j)[frames].astype(np.float64)
        self.u_true = store.params[j]
        self.cell_weights = geometry.get(store.geometry).cell_weights((store.ny, store.nx))  # metrics weigh by area
        self.grid_operator = grid
        K = cfg.ensf.ensemble_size
        if K < 2:
            raise ConfigError(f"ensf.ensemble_size must be >= 2, got {K}")
        sharding = sharding if sharding is not None else Sharding(K)
        t0 = time.perf_counter()
        self.has_solver = getattr(model, "has_solver", True)
        if self.has_solver:
            start, params = prior_members(model, sharding.rows, seed, schedule.warmup_steps)
        else:
            start, params = recorded_prior(store, self.splits["train"], sharding.rows, seed)
        self.T_init = sharding.max(time.perf_counter() - t0)
        self._surrogates = {}
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.problem = Problem(
            cfg=cfg, model=model, field_mean=norm.field_mean, field_std=norm.field_std, start=start,
            prior_params=params, frames=frames, times=store.time[frames],
            gaps=np.diff(frames) * schedule.steps_per_frame, operators=operators, x=store.x, y=store.y, seed=seed, surrogates=self.surrogate,
            validation=self.validation, sharding=sharding, fields=fields)

    def surrogate(self, name: str):
        """The finished surrogate ``MODEL_DIR/<name>.pt`` (cached)."""
        if name not in self._surrogates:
            if self.model_dir is None:
                raise DataError(f"this needs the trained surrogate `{name}`: train it with `ldensf train --model "
                                f"{name}` and pass its --out directory")
            self._surrogates[name] = finished(SURROGATES[name], self.model_dir, "cpu", data=self.store.digest)
        return self._surrogates[name]

    def validation(self, n: int | None = None) -> list[Trajectory]:
        """Up to ``n`` validation trajectories at the observation times."""
        frames = self.problem.frames
        return [Trajectory(int(j), self.store.frames(int(j))[frames].astype(np.float64), self.store.params[j])
                for j in self.splits["val"][:n]]

    def observations(self, level: float) -> ObservationSet:
        """Noisy observations of the truth at noise ``level`` (drawn once, shared by every method); with a
        sensor log, its readings (``level`` times the field std where the log gives no std)."""
        if self.log is None:
            return self.problem.observe(self.truth, level, self.trajectory)
        p, floor = self.problem, self.cfg.observe.noise_floor
        scale = [p.field_std[op.field] for op in p.operators]
        std = [level * sc if s is None else s for s, sc in zip(self.log.std, scale)]
        assumed = [np.maximum(s, floor * sc) for s, sc in zip(std, scale)]
        return ObservationSet(float(level), list(self.log.y), std, assumed)

    def score(self, run: MethodRun) -> dict:
        """Per-time metrics of a run against the truth (JSON-ready lists)."""
        want = self.truth.shape
        if run.mean.shape != want or (run.std is not None and run.std.shape != want):
            raise InputError(f"a method returned fields of shape {run.mean.shape}, the truth is {want}")
        if not (np.all(np.isfinite(run.mean)) and (run.std is None or np.all(np.isfinite(run.std)))):
            raise InputError("a method produced NaN or Inf fields")
        p = self.problem
        scale = p.field_std[:, None, None]
        truth_std = (self.truth - p.field_mean[:, None, None]) / scale
        mean_std = (run.mean - p.field_mean[:, None, None]) / scale
        w = np.broadcast_to(self.cell_weights, self.truth.shape[1:])
        out = {"full_rel_rmse": [rel_error(m, t, w) for m, t in zip(run.mean, self.truth)]}
        if run.std is not None:
            out["spread_error_ratio"] = [float(np.sqrt(np.average((s / scale) ** 2, weights=w))
                                               / np.sqrt(np.average((m - t) ** 2, weights=w)))
                                         for s, m, t in zip(run.std, mean_std, truth_std)]
        if run.members is not None:
            out["crps"] = [metrics.crps((x - p.field_mean[:, None, None]) / scale, t, w)
                           for x, t in zip(run.members.astype(np.float64), truth_std)]
        for name, fields in run.fields.items():
            out[f"{name}_full_rel_rmse"] = [rel_error(f, t, w) for f, t in zip(fields, self.truth)]
        if run.params is not None:
            out["param_rel_error"] = [metrics.param_error(u, self.u_true) for u in run.params]
            out["param_mean"] = run.params.mean(axis=1).tolist()
            out["param_spread"] = run.params.std(axis=1, ddof=1).tolist()
        return out

    def unsupported(self, method) -> str | None:
        """Why ``method`` cannot run on this experiment (its observation setting, or no solver), or None."""
        if not self.has_solver and method.dynamics == FULL_SOLVER:
            return "needs the full solver, and this dataset was imported without one"
        return method.unsupported(self.cfg)

    def run(self, name: str, observations: ObservationSet) -> dict:
        """Method ``name`` on this experiment: its metrics, timings and what it reports, or why it was skipped."""
        method = make_method(name, self.cfg)
        reason = self.unsupported(method)
        if reason:
            return {"skipped": reason}
        seed = int(rng_for(self.cfg.data.seed, FILTER_STREAM).integers(2**62))
        t0 = time.perf_counter()
        run = method.assimilate(self.problem, observations, seed)
        wall = time.perf_counter() - t0
        return {**self.score(run), **run.timings, "wall_s": wall, **run.extra,
                "state_dim": method.state_dim(self.problem), "_mean_fields": run.mean}


def check_log(cfg, log, grid) -> None:
    """ConfigError unless the sensor log fits ``cfg.observe``: fixed sensors on the ``stride`` grid unless
    ``sensors=moving``, times ``every`` frames apart unless ``irregular``."""
    if cfg.observe.sensors == "grid" and not all(np.array_equal(op.index, grid.index) for op in log.operators):
        raise ConfigError(f"the sensors of {log.source} are not the observe.stride = {cfg.observe.stride} grid at "
                          "every time; pass --set observe.sensors=moving (the point-set encoder) for other sensors")
    regular = np.array_equal(log.frames, cfg.observe.every * np.arange(len(log.frames)))
    if not cfg.observe.irregular and not regular:
        raise ConfigError(f"the times of {log.source} are not every observe.every = {cfg.observe.every} stored frames; "
                          "pass --set observe.irregular=true (or the observe.every of the log)")


def rel_error(a, b, weights=None) -> float:
    """``||a - b|| / ||b||`` over all components, each squared term weighted by ``weights`` (broadcast; e.g. cell areas)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    w = 1.0 if weights is None else np.broadcast_to(weights, b.shape)
    return float(np.sqrt(np.sum(w * (a - b) ** 2) / np.sum(w * b**2)))


def prior_members(model, rows: slice, seed: int, warmup_steps: int = 0):
    """Members ``rows`` of the prior ensemble and their parameters: member ``k`` draws both from
    ``rng_for(seed, PRIOR_STREAM, k)``, then ``warmup_steps`` model steps (as the dataset's frames)."""
    params, states = [], []
    for k in range(rows.start, rows.stop):
        rng = rng_for(seed, PRIOR_STREAM, k)
        params.append(model.sample_params(rng, 1))
        states.append(to_numpy(model.initial_state(params[-1], rng)))
    params = np.concatenate(params)
    state = np.concatenate(states)
    return (model.step(state, params, warmup_steps) if warmup_steps else state), params


def recorded_prior(store: TrajectoryStore, train, rows: slice, seed: int):
    """Members ``rows`` of a prior drawn from recorded data (no solver): member ``k`` is the first frame
    and the parameters of the training trajectory drawn by ``rng_for(seed, PRIOR_STREAM, k)``."""
    if len(train) == 0:
        raise DataError("the dataset's training split is empty: the prior ensemble is drawn from it")
    picks = [int(train[rng_for(seed, PRIOR_STREAM, k).integers(len(train))]) for k in range(rows.start, rows.stop)]
    return np.stack([store.frames(j)[0].astype(np.float64) for j in picks]), store.params[picks]


def compare(experiment: Experiment, methods, level: float, progress=None) -> dict:
    """Run ``methods`` at noise ``level``; ``{method: metrics + timings}`` (skips explained).

    ``_mean_fields`` (the ensemble-mean fields ``(T, F, ny, nx)``) is kept for plots, not for JSON.
    """
    obs = experiment.observations(level)
    results = {}
    for name in methods:
        results[name] = experiment.run(name, obs)
        if progress:
            progress(name, level, results[name])
    return results


def noise_levels(levels) -> list[float]:
    """Checked noise levels (fractions of each field's std)."""
    levels = [float(v) for v in levels]
    if not levels or any(not (math.isfinite(v) and v >= 0) for v in levels):
        raise ConfigError(f"noise levels must be finite fractions >= 0, got {levels}")
    return levels

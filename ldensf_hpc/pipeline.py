"""``ldensf run``: generate -> train -> assimilate a held-out trajectory -> report.

Each stage reuses what an earlier run left in the work directory (a verified
dataset, finished checkpoints), so a rerun only does what is missing. The
assimilation compares, on the same noisy sparse observations:

- ``free``: the full-solver ensemble from prior parameters, never updated;
- ``ensf``: full-space EnSF on that ensemble (paper Algorithm 1);
- ``ld_ensf``: LD-EnSF in the LDNet latent space (Algorithm 2) with the LSTM-encoded
  observations, joint state-parameter estimation.

Observations are taken at the LDNet's latent steps (every ``frame_every`` stored
frames, SWE paper setting: every 40 solver steps). The report holds rel-RMSE of
the full state, the latent state and the parameters over time, the timings T_d
(dynamics), T_f (filter, incl. encoding), T_r (reconstruction of the final analysis
ensemble with R) and the config; plots are written beside it.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import metrics, plots
from .backend import rng_for
from .config import ConfigError
from .data.dataset import TrajectoryStore, split_indices
from .data.generate import frame_schedule, generate
from .data.store import write_json
from .errors import DataError
from .filters.base import Observation, assimilate, make_filter
from .filters.ld_ensf import (
    LatentModel,
    latent_observations,
    latent_operator,
    latent_truth,
    reconstruct,
)
from .filters.score_sde import schedule
from .models import Standardized, make_model
from .observe import noise_std, observe
from .surrogate import load
from .surrogate.train import observation_operator, train

METHODS = ("free", "ensf", "ld_ensf")
STABILITY_MARGIN = 1.1  # latent observation std >= this x the stable limit of the Euler step
# rng streams (rng_for(seed, STREAM, ...)) of this module
_OBS, _ENSEMBLE, _FILTER, _VALIDATION = 11, 12, 13, 14


def start_ensemble(model, cfg, params, rng):
    """Model states at the first stored frame for parameters ``params (K, p)`` (after any warm-up)."""
    schedule = frame_schedule(cfg)
    state = model.initial_state(params, rng)
    return model.step(state, params, schedule.warmup_steps) if schedule.warmup_steps else state


def noisy_observations(operator, frames, level: float, seed: int):
    """Noise std ``(m,)`` and noisy observations ``(T, m)`` of truth frames ``(T, F, ny, nx)``."""
    std = noise_std(operator, frames, level)
    y = np.stack([observe(operator, frames[t], std, rng_for(seed, _OBS, t)) for t in range(len(frames))])
    return std, y


def latent_obs_std(cfg, store, ldnet, encoder, operator, level: float) -> np.ndarray:
    """Latent observation error std ``(latent + p,)``: RMSE of the encoder on noisy validation histories.

    This is the R of the identity latent observation operator (eq. 18): how far the
    encoded pair (s_hat, u_hat) lies from the LDNet trajectory at the true parameters.
    """
    fe = ldnet.cfg.frame_every
    errors = []
    for j in split_indices(store.n_trajectories, cfg.data.split, cfg.data.seed)["val"]:
        frames = store.frames(j, fe)
        _, y = noisy_observations(operator, frames, level, cfg.data.seed + 1000 + int(j))
        errors.append(latent_observations(encoder, y) - latent_truth(ldnet, store.params[j], len(frames)))
    return np.sqrt(np.mean(np.concatenate(errors) ** 2, axis=0))


def _rel(a, b) -> np.ndarray:
    """Relative error ||a_t - b_t|| / ||b_t|| per leading index."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    axes = tuple(range(1, a.ndim))
    return np.sqrt(((a - b) ** 2).sum(axis=axes) / (b**2).sum(axis=axes))


def assimilate_test_trajectory(cfg, data_dir, model_dir, *, methods=("ensf", "ld_ensf"), trajectory=None) -> dict:
    """Run the requested methods on one held-out trajectory; return the report dictionary."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ConfigError(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
    store = TrajectoryStore(data_dir)
    ldnet, encoder = load(Path(model_dir) / "ldnet.pt"), load(Path(model_dir) / "encoder.pt")
    test = split_indices(store.n_trajectories, cfg.data.split, cfg.data.seed)["test"]
    if len(test) == 0:
        raise DataError(f"the dataset in {data_dir} has no test trajectories (n_trajectories too small)")
    j = int(test[0] if trajectory is None else trajectory)
    fe = ldnet.cfg.frame_every
    truth = store.frames(j, fe).astype(np.float64)  # (T, F, ny, nx) at latent steps
    u_true = store.params[j]
    T, seed, K = len(truth), cfg.data.seed, cfg.ensf.ensemble_size
    times = store.time[::fe]
    operator, _ = observation_operator(cfg, store)
    std, y = noisy_observations(operator, truth, cfg.observe.noise, seed)

    model = make_model(cfg.case, cfg)
    prior_params = model.sample_params(rng_for(seed, _ENSEMBLE), K)
    steps = fe * frame_schedule(cfg).steps_per_frame
    report = {"case": cfg.case, "preset": cfg.preset, "trajectory": j, "ensemble_size": K,
              "true_params": dict(zip(store.param_names, map(float, u_true))), "times": times.tolist(),
              "observations": {"m": int(operator.m), "stride": cfg.observe.stride, "noise": cfg.observe.noise,
                               "every_frames": fe, "every_steps": steps},
              "methods": {}}
    curves, fields = {}, {"truth": truth}

    if "ensf" in methods or "free" in methods:
        ensemble = start_ensemble(model, cfg, prior_params, rng_for(seed, _ENSEMBLE, 1))
        t0 = time.perf_counter()
        free, state = [model.to_fields(ensemble)], ensemble
        for _ in range(T - 1):
            state = model.step(state, prior_params, steps)
            free.append(model.to_fields(state))
        free_T_d = time.perf_counter() - t0
        free_mean = np.stack([np.asarray(f).mean(axis=0) for f in free])
        curves["free (no assimilation)"] = _rel(free_mean, truth)
        fields["free"] = free_mean
        report["methods"]["free"] = {"full_rel_rmse": curves["free (no assimilation)"].tolist(), "T_d": free_T_d}
    if "ensf" in methods:
        # EnSF works on standardised fields (noise relative to normalised data, paper §4)
        norm_model = Standardized(model, ldnet.norm.field_mean, ldnet.norm.field_std)
        scale = norm_model.std[operator.field].ravel()
        filt = make_filter("ensf", cfg)
        res = assimilate(norm_model, filt, ensemble, norm_model.standardize(truth), operator, std / scale, steps,
                         params=prior_params, observations=norm_model.standardize_obs(operator, y[1:]),
                         seed=seed + _FILTER)
        analysis = norm_model.unstandardize(res.analysis_mean.reshape(T - 1, *truth.shape[1:]))
        fields["EnSF"] = np.concatenate([[free_mean[0]], analysis])
        curves["EnSF"] = _rel(fields["EnSF"], truth)
        report["methods"]["ensf"] = {"full_rel_rmse": curves["EnSF"].tolist(), "T_d": res.T_d, "T_f": res.T_f,
                                     "state_dim": int(truth[0].size)}
    if "ld_ensf" in methods:
        latent_model = LatentModel(ldnet, encoder.out_mean.numpy(), encoder.out_std.numpy())
        filt = make_filter("ld_ensf", cfg)
        # the encoder's error, floored where the explicit likelihood step would diverge
        stable = STABILITY_MARGIN * schedule(filt.n_steps, filt.eps_alpha, filt.eps_beta).stable_std()
        z_std = np.maximum(latent_obs_std(cfg, store, ldnet, encoder, operator, cfg.observe.noise) / latent_model.std,
                           max(cfg.ld_ensf.obs_std_floor, stable))
        t0 = time.perf_counter()
        z_obs = latent_model.to_fields(latent_observations(encoder, y))
        T_encode = time.perf_counter() - t0
        z_true = latent_truth(ldnet, u_true, T)
        op = latent_operator(latent_model)
        z0 = latent_model.step(latent_model.initial_state(prior_params))  # s_0 from s_{-1} = 0
        t0 = time.perf_counter()
        first = filt.analyse(latent_model.to_fields(z0), Observation(op, z_obs[0], z_std), rng_for(seed, _FILTER, 0))
        T_first = time.perf_counter() - t0
        first = latent_model.from_fields(first)
        res = assimilate(latent_model, filt, first, latent_model.to_fields(z_true), op, z_std, 1,
                         observations=z_obs[1:], seed=seed + _FILTER)
        z_mean = latent_model.from_fields(np.concatenate([[latent_model.to_fields(first).mean(axis=0)],
                                                          res.analysis_mean]))
        t0 = time.perf_counter()
        reconstruct(ldnet, res.ensemble, store.x, store.y)
        T_r = time.perf_counter() - t0
        rec = reconstruct(ldnet, z_mean, store.x, store.y).astype(np.float64)
        L = ldnet.latent
        u_mean = latent_model.params(z_mean)
        z_spread = np.concatenate([[latent_model.to_fields(first).std(axis=0, ddof=1)], res.analysis_std])
        u_spread = z_spread[:, L:] * latent_model.std[L:] * _param_half_range(ldnet)
        curves["LD-EnSF"] = _rel(rec, truth)
        fields["LD-EnSF"] = rec
        report["methods"]["ld_ensf"] = {
            "full_rel_rmse": curves["LD-EnSF"].tolist(),
            "latent_rel_rmse": _rel(z_mean[:, :L], z_true[:, :L]).tolist(),
            "param_rel_error": [metrics.param_error(u[None], u_true) for u in u_mean],
            "param_mean": u_mean.tolist(), "param_spread": u_spread.tolist(),
            "latent_obs_std": z_std.tolist(), "T_d": res.T_d, "T_f": res.T_f + T_first + T_encode,
            "T_encode": T_encode, "T_r": T_r, "state_dim": int(L + ldnet.n_params), "kernel": filt.kernel}
        report["ldnet_reconstruction_rel_error"] = _rel(reconstruct(ldnet, z_true, store.x, store.y), truth).tolist()
    report["_curves"], report["_fields"] = curves, fields
    return report


def _param_half_range(ldnet) -> np.ndarray:
    """d(physical u) / d(scaled u): half the parameter range of the normalisation."""
    return (np.asarray(ldnet.norm.param_max) - np.asarray(ldnet.norm.param_min)) / 2.0


def write_plots(report: dict, out: Path, field_index: int = 0) -> list[str]:
    """Fig. 3-style field panels, Fig. 6-style error curves and the parameter estimate."""
    curves, fields = report["_curves"], report["_fields"]
    times = np.asarray(report["times"])
    written = [plots.error_curves(times, curves, out / "rel_rmse.png", ylabel="relative RMSE of the full state")]
    T = len(times)
    pick = sorted({0, T // 4, T // 2, (3 * T) // 4, T - 1})
    rows = {"truth": fields["truth"][pick, field_index]}
    for label in ("free", "EnSF", "LD-EnSF"):
        if label in fields:
            rows[label] = fields[label][pick, field_index]
    for label in ("EnSF", "LD-EnSF"):
        if label in fields:
            rows[f"{label} error"] = rows[label] - rows["truth"]
    written.append(plots.field_panels(rows, times[pick], out / "fields.png",
                                      title=f"{report['case']}: field {field_index}"))
    ld = report["methods"].get("ld_ensf")
    if ld:
        truth = np.asarray(list(report["true_params"].values()))
        written.append(plots.parameter_estimate(times, np.asarray(ld["param_mean"]), np.asarray(ld["param_spread"]),
                                                truth, list(report["true_params"]), out / "parameters.png"))
    return [str(p) for p in written]


def summary_table(report: dict) -> str:
    """A short Markdown table: final and mean full-state rel-RMSE and timings per method."""
    lines = ["| method | rel-RMSE last | rel-RMSE mean | T_d [s] | T_f [s] | T_r [s] | state dim |",
             "|---|---|---|---|---|---|---|"]
    for name, m in report["methods"].items():
        err = np.asarray(m["full_rel_rmse"])
        cells = [f"{m[k]:.4g}" if k in m else "-" for k in ("T_d", "T_f", "T_r")]
        lines.append(f"| {name} | {err[-1]:.4f} | {err.mean():.4f} | {' | '.join(cells)} | {m.get('state_dim', '-')} |")
    ld = report["methods"].get("ld_ensf")
    if ld:
        pe = ld["param_rel_error"]
        lines.append(f"\nLD-EnSF parameter rel. error: {pe[0]:.4f} (first) -> {pe[-1]:.4f} (last)")
    return "\n".join(lines)


def run(cfg, workdir=None, *, methods=("ensf", "ld_ensf"), generate_backend: str = "dask",
        progress: bool = True) -> dict:
    """The whole pipeline; returns the report (also written to ``WORKDIR/report.json``)."""
    work = Path(workdir or Path("runs") / f"{cfg.case}-{cfg.preset}")
    data_dir, model_dir = work / "data", work / "models"
    stages = {}
    t0 = time.perf_counter()
    generate(cfg, data_dir, backend=generate_backend, progress=progress)
    stages["generate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    summaries = train(cfg, data_dir, model_dir, progress=progress)
    stages["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = assimilate_test_trajectory(cfg, data_dir, model_dir, methods=methods)
    stages["assimilate"] = time.perf_counter() - t0
    report["stages_wall_s"] = stages
    report["surrogates"] = {name: {k: v for k, v in s.items() if "rel_error" in k} for name, s in summaries.items()}
    report["plots"] = write_plots(report, work)
    report["config"] = cfg.to_dict()
    record = {k: v for k, v in report.items() if not k.startswith("_")}
    write_json(work / "report.json", record)
    report["path"] = str(work / "report.json")
    return report

"""LD-EnSF with moving sensors: the point-set encoder beside the fixed-grid LSTM encoder.

On held-out (test-split) trajectories of a run directory of ``ldensf run`` (``data/``,
``models/ldnet.pt`` and ``models/encoder.pt``; ``models/set_encoder.pt`` is trained
there when missing), with ``--noise`` relative observation noise (default the
config's, 10 %), four ways of observing and encoding:

1. ``LSTM, grid``: the LSTM encoder (paper §3.2) on the fixed grid of ``observe.stride``;
2. ``set, grid``: the point-set encoder (:mod:`ldensf_hpc.surrogate.set_encoder`) on the
   same observations;
3. ``set, moving``: the set encoder on moving sensors: as many grid locations as the
   grid observes (every field), drawn afresh at every observation time;
4. ``LSTM, moving``: for reference, the LSTM encoder fed those moving-sensor values as if
   they came from its grid (what a fixed-sensor encoder makes of moving sensors).

Reported per way, averaged over the trajectories: the encoder's latent and parameter
relative errors (over the whole history, as ``ldensf train`` reports them) and LD-EnSF
(Algorithm 2 through :mod:`ldensf_hpc.filters.ld_ensf` and
:func:`ldensf_hpc.filters.base.assimilate`, as the pipeline runs it: the latent
observation std is the encoder's RMSE on noisy validation histories observed the same
way, floored at the stable limit of the explicit likelihood step) with the full-state
rel-RMSE of the reconstructed analysis mean (last time, mean over time) and the
parameter error at the last time. The four ways share the prior ensemble, the noise
seeds and, for each trajectory, the truth.

Prints a Markdown table and writes JSON (``benchmarks/results/moving_sensors_<case>_<preset>.json``)::

    python benchmarks/moving_sensors.py                      # runs/swe-small from `ldensf run`
    python benchmarks/moving_sensors.py --run DIR --preset small --set observe.stride=7
    python benchmarks/moving_sensors.py --quick              # a tiny run made in a temporary directory
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from common import RESULTS, describe, machine, markdown_table, write_json
from ldensf_hpc import metrics
from ldensf_hpc.backend import rng_for
from ldensf_hpc.config import load_config
from ldensf_hpc.data.dataset import TrajectoryStore, split_indices
from ldensf_hpc.data.generate import generate
from ldensf_hpc.errors import DataError
from ldensf_hpc.filters.base import Observation, assimilate, make_filter
from ldensf_hpc.filters.ld_ensf import LatentModel, latent_observations, latent_operator, latent_truth, reconstruct
from ldensf_hpc.filters.score_sde import schedule
from ldensf_hpc.models import make_model
from ldensf_hpc.observe import moving_points, noise_std, observe
from ldensf_hpc.surrogate import load, load_checkpoint
from ldensf_hpc.surrogate.set_encoder import SetEncoder, encode_history, train_set_encoder
from ldensf_hpc.surrogate.train import (
    configure_threads,
    observation_operator,
    relative_error,
    train_encoder,
    train_ldnet,
)

METHODS = ("LSTM, grid", "set, grid", "set, moving", "LSTM, moving")
QUICK = ["data.n_trajectories=20", "set_encoder.epochs=300", "train.patience=1000"]  # tiny, but it learns
STABILITY_MARGIN = 1.1  # latent observation std >= this x the stable limit of the Euler step (as the pipeline)
OBS_STREAM, SENSOR_STREAM, PRIOR_STREAM, FILTER_STREAM = 0, 1, 2, 3  # rng_for(data seed, STREAM, ...)


def make_quick_run(cfg, work: Path) -> None:
    """A tiny ``ldensf run``-like directory: dataset, LDNet and LSTM encoder (what exists is reused)."""
    generate(cfg, work / "data", backend="serial", progress=False)
    configure_threads(cfg.train.threads)  # after the solver's Numba kernels, which resize the OpenMP pool
    train_ldnet(cfg, work / "data", work / "models", progress=False)
    train_encoder(cfg, work / "data", work / "models", progress=False)


def set_encoder_for(cfg, work: Path, progress: bool) -> tuple[SetEncoder, dict]:
    """The run's set encoder (trained first when missing or unfinished; a finished one is only evaluated)
    and its training summary."""
    summary = train_set_encoder(cfg, work / "data", work / "models", progress=progress)
    return SetEncoder.from_checkpoint(load_checkpoint(work / "models" / "set_encoder.pt")).eval(), summary


class Study:
    """The run's data, surrogates and observation set-ups."""

    def __init__(self, cfg, work: Path, set_encoder: SetEncoder):
        self.cfg, self.seed = cfg, cfg.data.seed
        self.store = TrajectoryStore(work / "data")
        self.ldnet, self.lstm = load(work / "models" / "ldnet.pt"), load(work / "models" / "encoder.pt")
        self.set_encoder = set_encoder
        self.grid, _ = observation_operator(cfg, self.store)
        self.n_points = int(np.unique(self.grid.index % self.grid.n_points).size)  # grid locations
        self.fe = self.ldnet.cfg.frame_every
        self.splits = split_indices(self.store.n_trajectories, cfg.data.split, cfg.data.seed)
        self.prior = make_model(cfg.case, cfg).sample_params(rng_for(self.seed, PRIOR_STREAM), cfg.ensf.ensemble_size)

    def history(self, method: str, j: int, level: float, noise_key: int):
        """Truth ``(T, F, ny, nx)``, operators and noisy observations of trajectory ``j`` observed by ``method``."""
        truth = self.store.frames(j, self.fe).astype(np.float64)
        T = len(truth)
        ops = ([self.grid] * T if method.endswith("grid") else
               moving_points(self.grid.shape, self.n_points, T, rng_for(self.seed, SENSOR_STREAM, j),
                             periodic=self.grid.periodic))
        y = [observe(op, x, noise_std(op, truth, level), rng_for(self.seed, OBS_STREAM, noise_key, t))
             for t, (op, x) in enumerate(zip(ops, truth))]
        return truth, ops, y

    def encoder(self, method: str):
        return self.lstm if method.startswith("LSTM") else self.set_encoder

    def encode(self, method: str, ops, y) -> np.ndarray:
        if method.startswith("LSTM"):
            return latent_observations(self.lstm, np.stack(y))
        return encode_history(self.set_encoder, ops, y)

    def latent_obs_std(self, method: str, level: float) -> np.ndarray:
        """RMSE ``(latent + p,)`` of the encoded pair on noisy validation histories observed by ``method``."""
        errors = []
        for j in self.splits["val"]:
            truth, ops, y = self.history(method, int(j), level, 1000 + int(j))
            errors.append(self.encode(method, ops, y) - latent_truth(self.ldnet, self.store.params[j], len(truth)))
        return np.sqrt(np.mean(np.concatenate(errors) ** 2, axis=0))

    def ld_ensf(self, method: str, z_obs: np.ndarray, z_err: np.ndarray, truth, u_true):
        """LD-EnSF on encoded observations ``z_obs (T, latent + p)``: full-state rel-RMSE ``(T,)`` of the
        reconstructed analysis mean and the parameter error ``(T,)``."""
        encoder, cfg = self.encoder(method), self.cfg
        latent_model = LatentModel(self.ldnet, encoder.out_mean.numpy(), encoder.out_std.numpy())
        filt = make_filter("ld_ensf", cfg)
        stable = STABILITY_MARGIN * schedule(filt.n_steps, filt.eps_alpha, filt.eps_beta).stable_std()
        z_std = np.maximum(z_err / latent_model.std, max(cfg.ld_ensf.obs_std_floor, stable))
        z_fields = latent_model.to_fields(z_obs)
        T, op = len(truth), latent_operator(latent_model)
        z0 = latent_model.step(latent_model.initial_state(self.prior))  # s_0 from s_{-1} = 0
        first = filt.analyse(latent_model.to_fields(z0), Observation(op, z_fields[0], z_std),
                             rng_for(self.seed, FILTER_STREAM))
        z_true = latent_truth(self.ldnet, u_true, T)
        res = assimilate(latent_model, filt, latent_model.from_fields(first), latent_model.to_fields(z_true), op,
                         z_std, 1, observations=z_fields[1:], seed=self.seed + FILTER_STREAM)
        z_mean = latent_model.from_fields(np.concatenate([first.mean(axis=0)[None], res.analysis_mean]))
        rec = reconstruct(self.ldnet, z_mean, self.store.x, self.store.y).astype(np.float64)
        full = relative_error(rec, truth, axis=(1, 2, 3))
        params = np.array([metrics.param_error(u[None], u_true) for u in latent_model.params(z_mean)])
        return full, params


def evaluate(study: Study, trajectories, level: float, progress: bool) -> dict:
    """Encoder errors and LD-EnSF errors of every method on ``trajectories``."""
    L, norm = study.ldnet.latent, study.ldnet.norm
    out = {}
    for method in METHODS:
        t0 = time.perf_counter()
        z_err = study.latent_obs_std(method, level)
        rows = []
        for j in trajectories:
            truth, ops, y = study.history(method, int(j), level, int(j))
            u_true = study.store.params[j]
            z_obs = study.encode(method, ops, y)
            z_true = latent_truth(study.ldnet, u_true, len(truth))
            u_hat = norm.unscale_params(z_obs[:, L:].astype(np.float64))
            full, params = study.ld_ensf(method, z_obs, z_err, truth, u_true)
            rows.append({"trajectory": int(j),
                         "encoder_latent_rel_error": float(relative_error(z_obs[:, :L], z_true[:, :L])),
                         "encoder_param_rel_error": float(relative_error(u_hat, np.broadcast_to(u_true, u_hat.shape))),
                         "full_rel_rmse": full.tolist(), "param_rel_error": params.tolist()})
        out[method] = {
            "encoder_latent_rel_error": float(np.mean([r["encoder_latent_rel_error"] for r in rows])),
            "encoder_param_rel_error": float(np.mean([r["encoder_param_rel_error"] for r in rows])),
            "full_rel_rmse_last": float(np.mean([r["full_rel_rmse"][-1] for r in rows])),
            "full_rel_rmse_mean": float(np.mean([np.mean(r["full_rel_rmse"]) for r in rows])),
            "param_rel_error_last": float(np.mean([r["param_rel_error"][-1] for r in rows])),
            "latent_obs_std": z_err.tolist(), "wall_s": time.perf_counter() - t0, "trajectories": rows}
        if progress:
            print(f"  {method}: LD-EnSF rel-RMSE last {out[method]['full_rel_rmse_last']:.4f} "
                  f"({out[method]['wall_s']:.1f} s)", flush=True)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None,
                        help="run directory of `ldensf run` (default runs/CASE-PRESET; --quick makes a tiny run here, "
                             "by default in a temporary directory)")
    parser.add_argument("--case", choices=("swe", "kolmogorov"), default="swe")
    parser.add_argument("--preset", default=None, help="the run's preset (default small; tiny with --quick)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="the run's config overrides (repeatable)")
    parser.add_argument("--quick", action="store_true", help="tiny preset, 20 trajectories, made here (seconds)")
    parser.add_argument("--noise", type=float, default=None, help="relative observation noise (default observe.noise)")
    parser.add_argument("--trajectories", type=int, default=None, help="test trajectories used (default all)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default benchmarks/results/moving_sensors_<case>_<preset>.json)")
    args = parser.parse_args(argv)
    preset = args.preset or ("tiny" if args.quick else "small")
    overrides = (QUICK if args.quick else []) + args.overrides
    cfg = load_config(preset, case=args.case, overrides=overrides)
    level = cfg.observe.noise if args.noise is None else args.noise

    info = machine()
    print(f"Machine: {describe(info)}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="moving-sensors-") as tmp:
        work = args.run or (Path(tmp) if args.quick else Path("runs") / f"{args.case}-{preset}")
        if args.quick:
            make_quick_run(cfg, work)
        for need in ("data", "models/ldnet.pt", "models/encoder.pt"):
            if not (work / need).exists():
                raise DataError(f"{work / need} is missing; run `ldensf run --case {args.case} --preset {preset}` "
                                "(or pass --run DIR, or --quick)")
        configure_threads(cfg.train.threads)
        set_encoder, summary = set_encoder_for(cfg, work, progress=not args.quiet)
        study = Study(cfg, work, set_encoder)
        test = study.splits["test"][:args.trajectories]
        print(f"{cfg.case} {preset}: {len(test)} test trajectories, noise {level:g}, K = {cfg.ensf.ensemble_size}; "
              f"grid {study.grid.m} observations, moving sensors {study.n_points} locations x "
              f"{study.store.n_fields} fields per time", flush=True)
        results = evaluate(study, test, level, progress=not args.quiet)

    rows = [[m, r["encoder_latent_rel_error"], r["encoder_param_rel_error"], r["full_rel_rmse_last"],
             r["full_rel_rmse_mean"], r["param_rel_error_last"]] for m, r in results.items()]
    table = markdown_table(["encoder, sensors", "encoder latent rel. err", "encoder param rel. err",
                            "LD-EnSF rel-RMSE last", "LD-EnSF rel-RMSE mean", "LD-EnSF param err last"], rows)
    print(f"\nLD-EnSF with moving sensors ({cfg.case}, {preset} preset, noise {level:g}, mean over {len(test)} "
          "held-out trajectories)")
    print(table)
    out = args.out or RESULTS / f"moving_sensors_{cfg.case}_{preset}.json"
    write_json(out, {"machine": info, "case": cfg.case, "preset": preset, "overrides": overrides,
                     "run": None if args.quick and args.run is None else str(work), "noise": level,
                     "ensemble_size": cfg.ensf.ensemble_size, "test_trajectories": [int(j) for j in test],
                     "grid_observations": study.grid.m, "moving_locations": study.n_points,
                     "set_encoder_training": {k: v for k, v in summary.items() if "rel_error" in k},
                     "methods": results, "table": table, "wall_s": time.perf_counter() - started})
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()

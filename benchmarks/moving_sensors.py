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
relative errors (over the whole history, as ``ldensf train`` reports them) and the
registered ``ld_ensf`` method run by :class:`ldensf_hpc.experiment.Experiment`, as the
pipeline runs it (the latent observation std is the encoder's RMSE on noisy validation
histories of the experiment's sensors, floored at the stable limit of the explicit
likelihood step), with the full-state rel-RMSE of the analysis (last time, mean over
time) and the parameter error at the last time. The four ways share the prior ensemble,
the noise seeds and, for each trajectory, the truth; "LSTM, moving" is the grid
experiment given the moving sensors' values (its encoder was calibrated on its grid).

Prints a Markdown table and writes JSON (``benchmarks/results/moving_sensors_<case>_<preset>.json``)::

    python benchmarks/moving_sensors.py                      # runs/swe-small from `ldensf run`
    python benchmarks/moving_sensors.py --run DIR --preset small --set observe.stride=7
    python benchmarks/moving_sensors.py --quick              # a tiny run made in a temporary directory
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import RESULTS, describe, machine, markdown_table, write_json

from ldensf_hpc.cases import load_config
from ldensf_hpc.errors import DataError
from ldensf_hpc.experiment import Experiment
from ldensf_hpc.filters.ld_ensf import ENCODERS, latent_truth
from ldensf_hpc.surrogate import train
from ldensf_hpc.surrogate.training import configure_threads, relative_error

METHODS = {"LSTM, grid": ("grid", "lstm"), "set, grid": ("grid", "set"), "set, moving": ("moving", "set"),
           "LSTM, moving": ("moving", "lstm")}
"""Way of observing and encoding -> (observe.sensors, ld_ensf.encoder)."""
QUICK = ["data.n_trajectories=20", "set_encoder.epochs=300", "train.patience=1000"]  # tiny, but it learns


def make_quick_run(cfg, work: Path) -> None:
    """A tiny ``ldensf run``-like directory: dataset, LDNet and LSTM encoder (what exists is reused)."""
    from ldensf_hpc.data.generate import generate

    generate(cfg, work / "data", backend="serial", progress=False)
    train(cfg, work / "data", work / "models", ["ldnet", "encoder"], progress=False)


def experiment(cfg, work: Path, method: str, j: int) -> tuple[Experiment, object]:
    """The experiment of trajectory ``j`` observed and encoded by ``method``, and its observations."""
    sensors, encoder = METHODS[method]
    own = replace(cfg, observe=replace(cfg.observe, sensors=sensors), ld_ensf=replace(cfg.ld_ensf, encoder=encoder))
    if encoder == "lstm" and sensors == "moving":  # the grid experiment fed the moving sensors' values
        exp = Experiment(replace(own, observe=replace(own.observe, sensors="grid")), work / "data", work / "models", j)
        moving = Experiment(replace(own, ld_ensf=replace(own.ld_ensf, encoder="set")), work / "data",
                            work / "models", j).problem.operators
        return exp, exp.problem.observe(exp.truth, cfg.observe.noise, j, operators=moving)
    exp = Experiment(own, work / "data", work / "models", j)
    return exp, exp.observations(cfg.observe.noise)


def evaluate(cfg, work: Path, trajectories, progress: bool) -> dict:
    """Encoder errors and LD-EnSF errors of every way on ``trajectories``."""
    out = {}
    for method in METHODS:
        t0 = time.perf_counter()
        rows = []
        for j in trajectories:
            exp, obs = experiment(cfg, work, method, int(j))
            problem = exp.problem
            ldnet = problem.surrogate("ldnet")
            encoder = problem.surrogate(ENCODERS[METHODS[method][1]])
            L = ldnet.latent
            z_obs = encoder.encode_history(problem.operators, obs.y)
            z_true = latent_truth(ldnet, exp.u_true, problem.T)
            u_hat = ldnet.norm.unscale_params(z_obs[:, L:].astype(np.float64))
            result = exp.run("ld_ensf", obs)
            rows.append({"trajectory": int(j),
                         "encoder_latent_rel_error": float(relative_error(z_obs[:, :L], z_true[:, :L])),
                         "encoder_param_rel_error": float(relative_error(u_hat, np.broadcast_to(exp.u_true, u_hat.shape))),
                         "full_rel_rmse": result["full_rel_rmse"], "param_rel_error": result["param_rel_error"],
                         "latent_obs_std": result["latent_obs_std"]})
        out[method] = {
            "encoder_latent_rel_error": float(np.mean([r["encoder_latent_rel_error"] for r in rows])),
            "encoder_param_rel_error": float(np.mean([r["encoder_param_rel_error"] for r in rows])),
            "full_rel_rmse_last": float(np.mean([r["full_rel_rmse"][-1] for r in rows])),
            "full_rel_rmse_mean": float(np.mean([np.mean(r["full_rel_rmse"]) for r in rows])),
            "param_rel_error_last": float(np.mean([r["param_rel_error"][-1] for r in rows])),
            "wall_s": time.perf_counter() - t0, "trajectories": rows}
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
    cfg = replace(cfg, observe=replace(cfg.observe, noise=level))

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
        summary = train(cfg, work / "data", work / "models", ["set_encoder"], progress=not args.quiet)["set_encoder"]
        configure_threads(cfg.train.threads)
        grid = Experiment(cfg, work / "data", work / "models")
        test = grid.splits["test"][:args.trajectories]
        n_points = int(np.unique(grid.grid_operator.index % grid.grid_operator.n_points).size)
        print(f"{cfg.case} {preset}: {len(test)} test trajectories, noise {level:g}, K = {cfg.ensf.ensemble_size}; "
              f"grid {grid.grid_operator.m} observations, moving sensors {n_points} locations x "
              f"{grid.store.n_fields} fields per time", flush=True)
        results = evaluate(cfg, work, test, progress=not args.quiet)

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
                     "grid_observations": grid.grid_operator.m, "moving_locations": n_points,
                     "set_encoder_training": {k: v for k, v in summary.items() if "rel_error" in k},
                     "methods": results, "table": table, "wall_s": time.perf_counter() - started})
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()

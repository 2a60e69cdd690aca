"""How much the Kolmogorov case needs assimilation: the free run's error against warm-up and horizon.

Every trajectory starts from the one shared vorticity (``initial_seed``) and differs only in
Re, so a short run leaves the prior ensemble near the truth and doing nothing wins. For
``--truths`` truths and a prior ensemble of ``ensf.ensemble_size`` members (Re drawn as the
pipeline's ``free`` method draws them), one long solver run per member gives the full-state
rel-RMSE of the ensemble mean at every frame; the free run of a case with ``W`` warm-up and
``H`` kept frames is its mean over frames ``W .. W + H - 1``. The table lists that mean (over
truths) for each ``(W, H)``: the issue's bar is >= 0.3.

    python benchmarks/kolmogorov_horizon.py --preset small   # writes results/kolmogorov_horizon_small.json
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from common import RESULTS, describe, machine, markdown_table, write_json

from ldensf_hpc import cases
from ldensf_hpc.cases import load_config
from ldensf_hpc.experiment import prior_members
from ldensf_hpc.metrics import rel_rmse
from ldensf_hpc.backend import rng_for


def free_run_curve(cfg, truth_seed: int, n_frames: int) -> np.ndarray:
    """Rel-RMSE of the prior ensemble mean against one truth at each of ``n_frames`` frames from t = 0."""
    model = cases.get("kolmogorov").model(cfg)
    K = cfg.ensf.ensemble_size
    truth_params = model.sample_params(rng_for(truth_seed, 99), 1)
    state, params = prior_members(model, slice(0, K), cfg.data.seed)
    state = np.concatenate([model.initial_state(truth_params), state])
    params = np.concatenate([truth_params, params])
    errors = []
    for _ in range(n_frames):
        fields = np.asarray(model.to_fields(state))
        errors.append(rel_rmse(fields[1:], fields[0]))
        state = model.step(state, params, cfg.model.steps_per_frame)
    return np.array(errors)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--truths", type=int, default=4)
    parser.add_argument("--warmups", default="0,25,50,100")
    parser.add_argument("--horizons", default="60,100,200")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    warmups = [int(w) for w in args.warmups.split(",")]
    horizons = [int(h) for h in args.horizons.split(",")]
    cfg = load_config(args.preset, case="kolmogorov", overrides=args.set)
    info = machine()
    print(f"Machine: {describe(info)}", flush=True)
    curves = np.array([free_run_curve(cfg, seed, max(warmups) + max(horizons)) for seed in range(args.truths)])
    mean_curve = curves.mean(axis=0)
    grid = {f"{w},{h}": float(mean_curve[w:w + h].mean()) for w in warmups for h in horizons}
    table = markdown_table(["warm-up frames", *(f"H = {h}" for h in horizons)],
                           [[w, *(f"{grid[f'{w},{h}']:.3f}" for h in horizons)] for w in warmups])
    print(f"free-run time-mean rel-RMSE (mean of {args.truths} truths, K = {cfg.ensf.ensemble_size}, "
          f"n = {cfg.model.n}, {cfg.model.steps_per_frame} steps of {cfg.model.dt} per frame)\n{table}")
    record = {"command": " ".join(["python", "benchmarks/kolmogorov_horizon.py", *(argv or sys.argv[1:])]),
              "machine": info, "model": cfg.to_dict()["kolmogorov"], "members": cfg.ensf.ensemble_size,
              "truths": args.truths, "free_run_time_mean": grid, "curve_mean": mean_curve.tolist(),
              "curves": curves.tolist(), "table": table}
    write_json(RESULTS / f"kolmogorov_horizon_{args.preset}.json", record)
    return record


if __name__ == "__main__":
    main()

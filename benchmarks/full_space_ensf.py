"""Full-space EnSF analysis (Algorithm 1 in the state space): the fused BLAS path against the old one.

One analysis of the registered ``ensf`` method at the paper's sizes (SWE 150 x 150, d = 67 500;
Kolmogorov 150 x 150, d = 45 000), K = 100 members, 100 Euler steps, the 10 x 10 observation
grid of every field with noise 0.1 of each field's std, fields standardised by the truth's mean
and std per field. The forecast ensemble is the prior of the case (``prior_members``) run
``--steps`` solver steps; the truth a member drawn apart. Rows, all from one run:

- ``reference, float64``: the torch reference backend (the path before the ``blas`` backend:
  two torch GEMMs and several elementwise passes per Euler step, normals drawn per step);
- ``blas, float64`` and ``blas, float32`` (the default): per step two BLAS GEMMs on tiles of
  the forecast and one fused pass (score, clip, drift, Philox noise, update), components in
  parallel chunks (:mod:`ldensf_hpc.kernels.blas`).

Each row gives the seconds per analysis (best and median of ``--repeats``; the reference once),
the speed-up over the reference, the GEMM rate (``4 K^2 d`` flops per Euler step) as a fraction
of the machine's peak (``cores x FMA lanes x 2 x PEAK_GHZ``: 16 float32 / 8 float64 FMA per
cycle per Zen 4 core), the projected T_f of the paper's trajectory (50 SWE / 39 Kolmogorov
analyses), and the relative difference of the analysis mean from the reference's (the same
Philox noise: the target is <= 1e-4)::

    python benchmarks/full_space_ensf.py              # both cases, paper sizes (~2 min on 2 cores)
    python benchmarks/full_space_ensf.py --quick      # 48 x 48, K = 20 (seconds)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import PEAK_GHZ, RESULTS, best_of, describe, machine, markdown_table, peak_gflops, write_json
from timing_study import PAPER, full_trajectory

from ldensf_hpc import cases
from ldensf_hpc.backend import rng_for
from ldensf_hpc.cases import load_config
from ldensf_hpc.experiment import prior_members
from ldensf_hpc.filters.base import Observation
from ldensf_hpc.filters.ensf import EnSF
from ldensf_hpc.models import Standardized, trajectory
from ldensf_hpc.observe import grid_operator, observe

VARIANTS = (("reference", "float64"), ("blas", "float64"), ("blas", "float32"))


def problem(case: str, n: int, K: int, steps: int, seed: int = 0):
    """A standardised forecast ensemble ``(K, d)`` and one observation of a truth drawn apart."""
    cfg = load_config("paper", case=case, overrides=[f"{case}.n={n}"])
    model = cases.get(case).model(cfg)
    state, params = prior_members(model, slice(0, K), seed)
    forecast = trajectory(model, state, params, 1, steps)[:, -1]
    rng = rng_for(seed, 3)
    truth_params = model.sample_params(rng, 1)
    truth = trajectory(model, model.initial_state(truth_params, rng), truth_params, 1, steps)[0, -1]
    scaled = Standardized(model, truth.mean(axis=(1, 2)), truth.std(axis=(1, 2)))
    truth, forecast = scaled.standardize(truth[None])[0], scaled.standardize(forecast)
    op = grid_operator(truth.shape, max(1, n // 10))
    std = np.full(op.m, cfg.observe.noise)
    obs = Observation(op, observe(op, truth, std, rng_for(seed, 0, 0)), std)
    return cfg, forecast.reshape(K, -1), obs


def run_case(case: str, n: int, K: int, steps: int, repeats: int) -> list[dict]:
    cfg, forecast, obs = problem(case, n, K, steps)
    d = forecast.shape[1]
    analyses, paper_T_f = full_trajectory(load_config("paper", case=case)).cycles, PAPER[(case, "EnSF")]["T_f"]
    rows, reference_mean, reference_s = [], None, None
    for kernel, precision in VARIANTS:
        method = EnSF(**EnSF.settings(cfg, kernel), precision=precision)
        analyse = lambda: method.analyse(forecast, obs, np.random.default_rng(1))  # noqa: E731
        mean = analyse().mean(axis=0)  # untimed: compiles, and the analysis compared below
        timing = best_of(analyse, repeats=1 if kernel == "reference" else repeats, warmup=0)
        seconds = timing["median_s"]
        if reference_mean is None:
            reference_mean, reference_s = mean, seconds
        gflops = 4.0 * K * K * d * method.n_steps / seconds / 1e9
        peak = peak_gflops(precision)
        rows.append({"case": case, "n": n, "d": d, "K": K, "n_steps": method.n_steps, "kernel": kernel,
                     "precision": precision, "analysis_s_best": timing["best_s"], "analysis_s_median": seconds,
                     "repeats": len(timing["times_s"]), "speedup_vs_reference": reference_s / seconds,
                     "gemm_gflops": gflops, "peak_gflops": peak, "fraction_of_peak": gflops / peak,
                     "T_f_trajectory_s": seconds * analyses, "paper_T_f_s": paper_T_f,
                     "mean_rel_diff_vs_reference": float(np.linalg.norm(mean - reference_mean)
                                                         / np.linalg.norm(reference_mean))})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=("swe", "kolmogorov", "both"), default="both")
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--steps", type=int, default=40, help="solver steps from the prior to the forecast")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="48 x 48, K = 20")
    parser.add_argument("--out", type=Path, default=RESULTS / "full_space_ensf_cpu.json", help="JSON path")
    args = parser.parse_args(argv)
    n, K = (48, 20) if args.quick else (150, args.members)
    start = time.perf_counter()
    rows = [row for case in (("swe", "kolmogorov") if args.case == "both" else (args.case,))
            for row in run_case(case, n, K, args.steps, args.repeats)]
    table = markdown_table(
        ["case", "d", "K", "kernel", "precision", "s / analysis (median)", "vs reference", "GEMM GFLOP/s",
         "of peak", "T_f / trajectory (s)", "paper T_f (32 cores)", "mean rel. diff"],
        [[r["case"], r["d"], r["K"], r["kernel"], r["precision"], f"{r['analysis_s_median']:.3g}",
          f"{r['speedup_vs_reference']:.2f}x", f"{r['gemm_gflops']:.0f}", f"{r['fraction_of_peak']:.0%}",
          f"{r['T_f_trajectory_s']:.0f}", r["paper_T_f_s"], f"{r['mean_rel_diff_vs_reference']:.1e}"] for r in rows])
    info = machine()
    print(f"Full-space EnSF, one analysis, {rows[0]['n_steps']} Euler steps; {describe(info)}\n\n{table}")
    path = write_json(args.out, {"machine": info, "command": "python benchmarks/full_space_ensf.py"
                      + (" --quick" if args.quick else ""), "peak_ghz": PEAK_GHZ, "rows": rows,
                      "wall_s": time.perf_counter() - start, "table": table})
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fused latent EnSF analysis timings (d = 12, 100 Euler steps) beside the anchors.

- CPU: the torch reference (mixture score as dot-product attention) against the Numba
  kernel for K = 20 ... 10 000 with the same pre-drawn noise (ratio = reference / numba),
  and the Numba kernel with its in-kernel Philox noise (``seed``, the filters' mode).
  Per analysis: best and median of repeats through ``ensf_update`` (input checks included).
  Trajectory: 50 successive analyses, each analysis the next prior, a new observation each.
- GPU, when CuPy sees one: the CUDA kernel against the torch reference on the same device,
  K up to 100 000 (the device is named in the table).

Every CPU Numba row gives its rate on the attention-form count ``4 K^2 d`` flops per Euler step
and its fraction of the arithmetic limit ``2 K^2 d`` FMA + ``K^2`` exponentials (each
``EXP_FMA`` FMA-equivalents: our polynomial exp) per step at the machine's float32 peak. The
profile table splits the Numba kernel's time (pre-drawn noise) at every K: the mixture score
(the full analysis less the one without it, ``mixture=False``: the per-member update, the
noise reads and the parallel region remain), its cost per member pair against the kernel's
own instruction count (``3 d`` FMA: distance and weighted sum, plus the exponential), and the
speed-up of two threads over one.

Combinations whose estimated time exceeds the budgets (``--budget``) are skipped and listed.
Anchors printed beside: the torch matmul reference at 9.5 ms per analysis (K = 100, 2-core
CI machine), the paper's LD-EnSF filter time T_f = 0.37 s per 50-analysis trajectory
(K = 100, 32-core AMD EPYC 7543, Table 1), and on an H100 the torch reference at 22 ms
(K = 100), 0.15 s (10^4) and 15.4 s (10^5) per analysis; GPU targets: <= 0.1 ms at K = 100,
<= 1 s at K = 10^5 (float32).

    python benchmarks/kernel.py              # full run (a few minutes on 2 cores)
    python benchmarks/kernel.py --quick      # K = 20 and 100 only (seconds)
    python benchmarks/kernel.py --gpu-only   # the GPU rows alone (benchmarks/gpu_suite.sh)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from common import (FMA_PER_CYCLE, PEAK_GHZ, RESULTS, best_of, describe, load_average, machine, markdown_table,
                    peak_gflops, write_json)

from ldensf_hpc.backend import cupy_available
from ldensf_hpc.kernels import ensf_update, reference, step_table
from ldensf_hpc.kernels.cpu import PAD

D, N_STEPS, N_ANALYSES, OBS_STD = 12, 100, 50, 0.5
CPU_K, QUICK_K, GPU_K = (20, 100, 1000, 10_000), (20, 100), (100, 1000, 10_000, 100_000)
ANALYSIS_BUDGET_S = 150.0  # skip one analysis estimated to take longer
TRAJECTORY_BUDGET_S = 60.0  # skip a 50-analysis trajectory estimated to take longer
REPEAT_BUDGET_S = 2.0  # repeat single analyses for about this long (at least 3 times unless > 10 s each)
ANCHORS = {
    "torch_reference_ms_per_analysis_K100_ci_2core": 9.5,
    "paper_ld_ensf_T_f_s_per_50_analyses_K100_epyc7543_32core": 0.37,
    "torch_reference_s_per_analysis_h100": {100: 0.022, 10_000: 0.15, 100_000: 15.4},
}
GPU_TARGETS_S = {100: 1e-4, 100_000: 1.0}
"""Issue targets for the CUDA kernel per analysis (float32, one launch for all Euler steps)."""
REFERENCE = "reference (torch)"
EXP_FMA = 11
"""FMA-equivalents of one float32 exponential of the Numba kernel (7 of Horner, 4 of range reduction)."""
LANES = FMA_PER_CYCLE["float32"]


def problem(K: int, seed: int = 0):
    """Forecast ensemble (K, D), N_ANALYSES observations along a random walk, noise."""
    rng = np.random.default_rng(seed)
    prior = rng.standard_normal((K, D)).astype(np.float32)
    obs = np.cumsum(0.1 * rng.standard_normal((N_ANALYSES, D)), axis=0)
    noise = rng.standard_normal((N_STEPS + 1, K, D), dtype=np.float32)
    return prior, obs, noise


def timings(analyse, prior, obs, sync, budget: float) -> dict:
    """Best/median seconds of one analysis and of a 50-analysis trajectory (when affordable)."""
    times = []
    while not times or (len(times) < 3 and max(times) < 10.0) or (sum(times) < REPEAT_BUDGET_S and len(times) < 20):
        start = time.perf_counter()
        analyse(prior, obs[0])
        sync()
        times.append(time.perf_counter() - start)
    row = {"analysis_s_best": min(times), "analysis_s_median": float(np.median(times)), "repeats": len(times)}
    if N_ANALYSES * min(times) <= budget:
        start = time.perf_counter()
        ensemble = prior
        for y in obs:
            ensemble = analyse(ensemble, y)
        sync()
        row["trajectory_s"] = time.perf_counter() - start
    else:
        row["trajectory_skipped"] = f"estimated {N_ANALYSES * min(times):.0f} s > {budget:.0f} s"
    return row


def run_cases(cases, Ks, sync, device: str, budget: float = ANALYSIS_BUDGET_S) -> tuple[list, list]:
    """Time every (K, case) with the K^2 cost model guarding the budgets."""
    rows, skipped, last = [], [], {}
    for K in Ks:
        prior, obs, noise = problem(K)
        for name, noise_mode, make in cases:
            case = (name, noise_mode)
            estimate = last[case][1] * (K / last[case][0]) ** 2 if case in last else 0.0
            if estimate > budget:
                skipped.append({"K": K, "backend": name, "noise": noise_mode, "device": device,
                                "reason": f"estimated {estimate:.0f} s per analysis > {budget:.0f} s"})
                continue
            analyse = make(noise)
            analyse(prior[:20], obs[0])  # compile (Numba, NVRTC) and warm up on 20 members
            sync()
            row = {"K": K, "backend": name, "noise": noise_mode, "device": device}
            row.update(timings(analyse, prior, obs, sync, min(budget, TRAJECTORY_BUDGET_S)))
            last[case] = (K, row["analysis_s_best"])
            rows.append(row)
            print(f"  K={K:>6} {name:<18} {noise_mode:<9} {row['analysis_s_best'] * 1e3:10.2f} ms/analysis", flush=True)
    for row in rows:
        ref = [r for r in rows if (r["K"], r["device"], r["backend"]) == (row["K"], row["device"], REFERENCE)]
        if ref:
            row["reference_over_this"] = ref[0]["analysis_s_best"] / row["analysis_s_best"]
    return rows, skipped


def cpu_cases():
    """(backend, noise, make): ``make(noise)`` returns ``analyse(prior, y) -> analysis``."""

    def pre_drawn(backend):
        def make(noise):
            return lambda prior, y: ensf_update(prior, y, OBS_STD, n_steps=N_STEPS, noise=noise[:, :len(prior)],
                                                backend=backend)
        return make

    def seeded(noise):
        return lambda prior, y: ensf_update(prior, y, OBS_STD, n_steps=N_STEPS, seed=1, backend="numba")

    return [(REFERENCE, "pre-drawn", pre_drawn("reference")), ("numba", "pre-drawn", pre_drawn("numba")),
            ("numba", "philox", seeded)]


def gpu_cases():
    import cupy as cp
    import torch

    table = step_table(N_STEPS, dtype=np.float32)
    inv_var = np.full(D, 1.0 / OBS_STD**2, dtype=np.float32)

    def cuda_pre_drawn(noise):
        noise_gpu = cp.asarray(noise)
        return lambda prior, y: ensf_update(cp.asarray(prior), y, OBS_STD, n_steps=N_STEPS,
                                            noise=noise_gpu[:, :len(prior)], backend="cuda")

    def cuda_seeded(noise):
        return lambda prior, y: ensf_update(cp.asarray(prior), y, OBS_STD, n_steps=N_STEPS, seed=1, backend="cuda")

    def torch_gpu(noise):  # the reference module called directly with CUDA tensors
        noise_gpu = torch.as_tensor(noise, device="cuda")
        return lambda prior, y: reference.analysis(
            torch.as_tensor(prior, device="cuda"), torch.as_tensor(y, dtype=torch.float32, device="cuda"),
            torch.as_tensor(inv_var, device="cuda"), table, noise_gpu[:, :len(prior)], 0, True, None, device="cuda")

    cases = [("cuda", "pre-drawn", cuda_pre_drawn), ("cuda", "philox", cuda_seeded)]
    if torch.cuda.is_available():
        cases.insert(0, (REFERENCE, "pre-drawn", torch_gpu))
    return cases


def arithmetic(K: int) -> dict:
    """Flop counts of one analysis (see the module docstring) and the limit at the float32 peak."""
    pairs = K * K * N_STEPS
    peak = peak_gflops("float32")
    return {"flops": 4.0 * pairs * D, "limit_s": 2 * (2 * D + EXP_FMA) * pairs / (peak * 1e9), "peak_gflops": peak}


def with_rates(rows) -> list:
    """Add GFLOP/s and the fraction of the arithmetic limit to the CPU Numba rows."""
    for row in rows:
        if row["device"] == "cpu" and row["backend"] == "numba":
            a = arithmetic(row["K"])
            row.update(gflops=a["flops"] / row["analysis_s_best"] / 1e9, limit_s=a["limit_s"],
                       fraction_of_limit=a["limit_s"] / row["analysis_s_best"])
    return rows


def best(run) -> float:
    """Best seconds of ``run()`` over about ``REPEAT_BUDGET_S`` (1 to 100 calls after a warm-up)."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    return best_of(run, repeats=int(min(100, max(1, REPEAT_BUDGET_S / first))), warmup=0)["best_s"]


def profile(Ks, budget: float) -> list:
    """Where the Numba kernel's time goes at each K: mixture score, the rest, two threads vs one."""
    import numba

    threads, cores = numba.get_num_threads(), len(os.sched_getaffinity(0))
    out = []
    for K in Ks:
        prior, obs, noise = problem(K)

        def run(mixture):
            return lambda: ensf_update(prior, obs[0], OBS_STD, n_steps=N_STEPS, noise=noise[:, :K],
                                       mixture=mixture, backend="numba")

        full, rest = run(True), run(False)
        t_rest, t_full = best(rest), best(full)
        row = {"K": K, "threads": threads, "full_s": t_full, "rest_s": t_rest, "mixture_s": t_full - t_rest}
        if t_full <= budget:
            numba.set_num_threads(1)
            try:
                row["one_thread_s"] = best(full)
            finally:
                numba.set_num_threads(threads)
            row["thread_speedup"] = row["one_thread_s"] / t_full
        step_cycles = (t_full - t_rest) * min(threads, cores) * PEAK_GHZ * 1e9 / (K * N_STEPS)
        pair_cycles = step_cycles / K
        row.update(padded_K=-(-K // PAD) * PAD, cycles_per_member_step=step_cycles, cycles_per_pair=pair_cycles,
                   ideal_cycles_per_pair=(3 * D + EXP_FMA) / LANES,
                   limit_cycles_per_pair=(2 * D + EXP_FMA) / LANES)
        out.append(row)
        print(f"  profile K={K:>6}: mixture {row['mixture_s'] * 1e3:9.2f} ms, rest {t_rest * 1e3:7.2f} ms, "
              f"{pair_cycles:5.1f} cycles per pair", flush=True)
    return out


def overhead_fit(rows) -> dict | None:
    """Least squares ``cycles per member-step = c0 + c1 K_pad``: ``c0`` what every member-step pays
    whatever K (loop set-up, the running maximum, rescaling, the update), ``c1`` per padded pair."""
    if len(rows) < 2:
        return None
    kp = np.array([r["padded_K"] for r in rows], float)
    c = np.array([r["cycles_per_member_step"] for r in rows])
    c1, c0 = np.polyfit(kp, c, 1, w=1 / c)  # relative residuals: small K weighs as much as large
    return {"c0_cycles_per_member_step": c0, "c1_cycles_per_padded_pair": c1,
            "share_of_c0_at_K100": c0 / (c0 + c1 * -(-100 // PAD) * PAD), "pad": PAD}


def profile_markdown(rows) -> str:
    cells = [[r["K"], f"{r['full_s'] * 1e3:.3g}", f"{r['mixture_s'] * 1e3:.3g}", f"{r['rest_s'] * 1e3:.3g}",
              f"{r['cycles_per_pair']:.1f}", f"{r['ideal_cycles_per_pair']:.1f}",
              f"{r['limit_cycles_per_pair']:.1f}",
              f"{r['thread_speedup']:.2f}x" if "thread_speedup" in r else "-"] for r in rows]
    table = markdown_table(["K", "analysis ms", "mixture score ms", "rest ms (update, noise, threads)",
                            "core cycles / pair", f"kernel's count / {LANES} lanes", f"limit count / {LANES} lanes",
                            "2 threads vs 1"], cells)
    fit = overhead_fit(rows)
    if fit:
        table += (f"\n\nMixture score per member-step = {fit['c0_cycles_per_member_step']:.0f} cycles + "
                  f"{fit['c1_cycles_per_padded_pair']:.2f} cycles x K padded to a multiple of {PAD} (fit over K); "
                  f"at K = 100 the fixed part is {fit['share_of_c0_at_K100']:.0%} of the mixture score.")
    return table


def markdown(rows, skipped) -> str:
    cells = [[r["device"], r["K"], r["backend"], r["noise"], f"{r['analysis_s_best'] * 1e3:.2f}",
              f"{r['analysis_s_median'] * 1e3:.2f}", f"{r['trajectory_s']:.3f}" if "trajectory_s" in r else "skipped",
              f"{r['reference_over_this']:.1f}" if "reference_over_this" in r else "",
              f"{r['gflops']:.0f}" if "gflops" in r else "", f"{r['limit_s'] * 1e3:.3g}" if "limit_s" in r else "",
              f"{r['fraction_of_limit']:.0%}" if "fraction_of_limit" in r else ""] for r in rows]
    lines = [markdown_table(["device", "K", "backend", "noise", "ms / analysis (best)", "median", "50 analyses [s]",
                             "reference / this", "GFLOP/s (4 K^2 d N)", "limit ms", "of limit"], cells), ""]
    lines.append(f"Anchors: torch reference {ANCHORS['torch_reference_ms_per_analysis_K100_ci_2core']} ms/analysis "
                 f"at K = 100 (2-core CI); paper LD-EnSF T_f "
                 f"{ANCHORS['paper_ld_ensf_T_f_s_per_50_analyses_K100_epyc7543_32core']} s per 50 analyses "
                 "at K = 100 (32-core EPYC 7543); torch reference on an H100: 22 ms (K = 100), 0.15 s (10^4), "
                 "15.4 s (10^5).")
    lines.append(f"Limit: 2 K^2 d N FMA + K^2 N exponentials ({EXP_FMA} FMA each) at the float32 peak "
                 f"({peak_gflops('float32'):.0f} GFLOP/s: {len(os.sched_getaffinity(0))} cores x {LANES} FMA x 2 x "
                 f"{PEAK_GHZ} GHz).")
    for r in rows:
        if r["device"] != "cpu" and r["backend"] == "cuda" and r["K"] in GPU_TARGETS_S:
            target = GPU_TARGETS_S[r["K"]]
            lines.append(f"Target: cuda ({r['noise']}) at K = {r['K']}: {r['analysis_s_best'] * 1e3:.3g} ms vs "
                         f"<= {target * 1e3:g} ms: {'met' if r['analysis_s_best'] <= target else 'missed'}.")
    for s in skipped:
        lines.append(f"Skipped: {s['device']} K = {s['K']} {s['backend']} ({s['noise']} noise): {s['reason']}.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 20 and 100 only (seconds)")
    parser.add_argument("--gpu-only", action="store_true", help="only the GPU rows (none without a GPU)")
    parser.add_argument("--budget", type=float, default=ANALYSIS_BUDGET_S,
                        help="skip an analysis estimated longer than this many seconds "
                             f"(default {ANALYSIS_BUDGET_S:g}); "
                             f"trajectories likewise, at most {TRAJECTORY_BUDGET_S:g} s")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default: benchmarks/results/kernel_cpu.json, kernel_gpu.json with a GPU)")
    args = parser.parse_args(argv)

    info = machine()
    gpu = cupy_available()
    started = time.perf_counter()
    print(f"Machine: {describe(info)}")
    rows, skipped = [], []
    if not args.gpu_only:
        rows, skipped = run_cases(cpu_cases(), QUICK_K if args.quick else CPU_K, lambda: None, "cpu", args.budget)
        rows = with_rates(rows)
        print("Profile of the Numba kernel (pre-drawn noise):")
        profiled = profile(QUICK_K if args.quick else CPU_K, args.budget / 10)
    if not gpu:
        print("no CUDA GPU (CuPy): no GPU rows")
        skipped.append({"K": None, "backend": "cuda", "noise": "-", "device": "gpu", "reason": "no CUDA GPU (CuPy)"})
    else:
        import cupy as cp

        print(f"GPU: {info['gpu']}")
        gpu_rows, gpu_skipped = run_cases(gpu_cases(), QUICK_K if args.quick else GPU_K,
                                          cp.cuda.Device().synchronize, info["gpu"], args.budget)
        rows, skipped = rows + gpu_rows, skipped + gpu_skipped
    table = markdown(rows, skipped)
    if not args.gpu_only:
        table += "\n\nProfile of the Numba kernel (best of repeats):\n\n" + profile_markdown(profiled)
    print(table)
    out = args.out or RESULTS / ("kernel_gpu.json" if gpu else "kernel_cpu.json")
    info["load_average_end"] = load_average()
    write_json(out, {"machine": info, "command": "python benchmarks/kernel.py " + " ".join(argv or sys.argv[1:]),
                     "quick": args.quick, "gpu_only": args.gpu_only, "budget_s": args.budget, "d": D,
                     "n_steps": N_STEPS, "n_analyses": N_ANALYSES,
                     "anchors": ANCHORS, "rows": rows, "skipped": skipped,
                     "profile": [] if args.gpu_only else profiled, "exp_fma": EXP_FMA,
                     "profile_fit": None if args.gpu_only else overhead_fit(profiled),
                     "wall_s": time.perf_counter() - started, "table": table})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""T_r against the arithmetic limit: full-field reconstruction of the LDNet (LD-EnSF) and decode of
the coupled VAE (Latent-EnSF) at the paper's sizes, with their flop counts.

For each case (SWE and Kolmogorov, 150 x 150, the paper preset's networks with random weights, as
in ``timing_study.py``) and each surrogate, one state and K = 100 states are decoded through the
same calls as the timing study (:func:`timing_study.time_reconstruction`: ``fields_on_grid`` of
the LDNet, ``decode`` of the VAE), in float32 and with bfloat16 autocast (Zen 4 has AVX512-BF16:
twice the float32 multiply rate; the bf16 fields' relative difference from float32's is given).
The flops of one state are counted by ``torch.utils.flop_counter`` (matrix products and
convolutions). Each row gives the achieved GFLOP/s, its fraction of the peak of its precision
(``common.peak_gflops``), and the time the flops need at that peak: the lower bound of T_r on
this machine, beside the issue's targets (LDNet, SWE: <= 10 ms per state, <= 0.5 s for 100;
VAE: <= 0.2 s for 100). The LDNet's first layer already runs its point part once per point
and its latent part once per state (``LDNet.reconstruct``), so the count is of the layers every
(state, point) pair needs::

    python benchmarks/reconstruction.py            # both cases (~6 min on 2 cores)
    python benchmarks/reconstruction.py --quick    # 48 x 48, K = 4 (seconds)
"""
from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, describe, machine, markdown_table, peak_gflops, write_json
from timing_study import time_reconstruction, untrained_surrogates
from torch.utils.flop_counter import FlopCounterMode

from ldensf_hpc import cases
from ldensf_hpc.cases import load_config

TARGETS_S = {("ldnet", 1): 0.010, ("ldnet", 100): 0.5, ("vae", 100): 0.2}
"""Issue targets (SWE 150 x 150, CPU): LDNet one field / 100 fields, VAE decode of 100 members."""
PRECISIONS = ("float32", "bfloat16")
BUDGET_S = 30.0  # K-member times past this are extrapolated from a block (time_reconstruction)


def decoders(case: str, n: int, seed: int = 0) -> dict:
    """``name -> (module, decode)`` of the untrained surrogates of the paper preset at n x n."""
    cfg = load_config("paper", case=case, overrides=[f"{case}.n={n}"])
    spec = cases.get(case)
    model = spec.model(cfg)
    operator = spec.observation_operator(cfg, (len(model.field_names), n, n))
    nets = untrained_surrogates(cfg, model, spec, operator, seed)
    x, y = spec.coordinates(model, n, n)
    ldnet, vae = nets["ldnet"], nets["vae"]
    return {"ldnet": (ldnet, lambda s: ldnet.fields_on_grid(s, x, y)), "vae": (vae, vae.decode)}


def flops_of(decode, z: torch.Tensor) -> float:
    """Flops of ``decode(z)`` (matrix products and convolutions) counted by torch."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        decode(z)
    return float(counter.get_total_flops())


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bfloat16" else contextlib.nullcontext()


def measure(case: str, n: int, K: int) -> list[dict]:
    rows = []
    for name, (net, decode) in decoders(case, n).items():
        z = np.random.default_rng(1).standard_normal((K, net.latent))
        one = torch.as_tensor(z[:1], dtype=torch.float32)
        flops = flops_of(decode, one)
        with torch.no_grad():
            want = decode(one)
        for precision in PRECISIONS:
            with autocast(precision):
                t = time_reconstruction(net, decode, z, BUDGET_S, "cpu")
                with torch.no_grad():
                    got = decode(one).float()
            K_s, peak = t["members"]["seconds"], peak_gflops(precision)
            row = {"case": case, "n": n, "surrogate": name, "precision": precision, "K": K,
                   "flops_per_state": flops, "one_state_s": t["one_state"], "K_states_s": K_s,
                   "K_states_extrapolated": t["members"]["extrapolated"], "gflops": K * flops / K_s / 1e9,
                   "peak_gflops": peak, "fraction_of_peak": K * flops / K_s / 1e9 / peak,
                   "limit_one_state_s": flops / (peak * 1e9), "limit_K_states_s": K * flops / (peak * 1e9),
                   "rel_diff_vs_float32": float(torch.linalg.norm(got - want) / torch.linalg.norm(want))}
            rows.append(row)
            print(f"  {case:<10} {name:<5} {precision:<8} one {t['one_state'] * 1e3:9.2f} ms, {K} states "
                  f"{K_s:8.3f} s, {row['gflops']:6.1f} GFLOP/s", flush=True)
    return rows


def target_lines(rows) -> list[str]:
    """The issue's targets beside the best measured time and the float32 bound (SWE rows)."""
    lines = []
    for (name, k), target in TARGETS_S.items():
        swe = [r for r in rows if r["case"] == "swe" and r["surrogate"] == name]
        if not swe:
            continue
        key, bound = ("one_state_s", "limit_one_state_s") if k == 1 else ("K_states_s", "limit_K_states_s")
        best = min(swe, key=lambda r: r[key])
        verdict = "met" if best[key] <= target else "missed"
        bounds = ", ".join(f"{r[bound]:.3g} s at the {r['precision']} peak" for r in swe)
        lines.append(f"Target {name} SWE, {k} state(s): <= {target:g} s; best {best[key]:.3g} s "
                     f"({best['precision']}): {verdict}. The flops alone need {bounds}.")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="48 x 48, K = 4")
    parser.add_argument("--out", type=Path, default=RESULTS / "reconstruction_cpu.json", help="JSON path")
    args = parser.parse_args(argv)
    n, K = (48, 4) if args.quick else (150, 100)
    start = time.perf_counter()
    info = machine()
    print(f"Machine: {describe(info)}")
    rows = [row for case in ("swe", "kolmogorov") for row in measure(case, n, K)]
    table = markdown_table(
        ["case", "surrogate", "precision", "GFLOP / state", "T_r one state (s)", f"T_r {K} states (s)",
         "GFLOP/s", "of its peak", "bound at peak, one (s)", f"bound at peak, {K} (s)", "rel. diff vs fp32"],
        [[r["case"], r["surrogate"], r["precision"], f"{r['flops_per_state'] / 1e9:.3g}", f"{r['one_state_s']:.3g}",
          f"{r['K_states_s']:.3g}" + (" (extrapolated)" if r["K_states_extrapolated"] else ""),
          f"{r['gflops']:.0f}", f"{r['fraction_of_peak']:.0%}", f"{r['limit_one_state_s']:.3g}",
          f"{r['limit_K_states_s']:.3g}", f"{r['rel_diff_vs_float32']:.1e}"] for r in rows])
    table += (f"\n\nPeaks: float32 {peak_gflops('float32'):.0f}, bfloat16 {peak_gflops('bfloat16'):.0f} GFLOP/s. "
              f"Issue targets at the paper's size (150 x 150, K = 100):\n")
    table += "\n".join(target_lines(rows)) if (n, K) == (150, 100) else "not evaluated (--quick)."
    print(table)
    path = write_json(args.out, {"machine": info, "command": "python benchmarks/reconstruction.py"
                                 + (" --quick" if args.quick else ""), "rows": rows, "targets_s":
                                 {f"{k[0]}_{k[1]}": v for k, v in TARGETS_S.items()},
                                 "wall_s": time.perf_counter() - start, "table": table})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

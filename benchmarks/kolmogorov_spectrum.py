"""Energy spectra of the Kolmogorov-flow solver at several Reynolds numbers.

Spins up from the model's random initial state, averages E(k) over frames, fits the
inertial-range slope (forcing at k = 4; 2-D enstrophy cascade ~ k^-3, steeper with drag)
and writes ``benchmarks/results/kolmogorov_spectrum.json``.

    python benchmarks/kolmogorov_spectrum.py --n 128 --re 500 1000 1500
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ldensf_hpc.models.kolmogorov import Kolmogorov, KolmogorovConfig, energy_spectrum


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--dt", type=float, default=0.005)
    ap.add_argument("--re", type=float, nargs="+", default=[500.0, 1000.0, 1500.0])
    ap.add_argument("--spinup", type=float, default=20.0, help="model time before averaging")
    ap.add_argument("--average", type=float, default=10.0, help="model time averaged over (20 frames)")
    ap.add_argument("--kmin", type=int, default=6, help="inertial range fitted: kmin <= k <= n/4")
    ap.add_argument("--backend", default="scipy")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "kolmogorov_spectrum.json"))
    args = ap.parse_args(argv)

    model = Kolmogorov(KolmogorovConfig(n=args.n, dt=args.dt, backend=args.backend))
    params = np.asarray(args.re, float)[:, None]
    state = model.initial_state(params, np.random.default_rng(0))
    start = time.perf_counter()
    state = model.step(state, params, round(args.spinup / args.dt))
    spectra = []
    for _ in range(20):
        state = model.step(state, params, round(args.average / args.dt / 20))
        k, E = energy_spectrum(model.to_fields(state))
        spectra.append(E)
    seconds = time.perf_counter() - start
    E = np.mean(spectra, axis=0)
    inertial = (k >= args.kmin) & (k <= args.n // 4)
    slopes = [float(np.polyfit(np.log(k[inertial]), np.log(e[inertial]), 1)[0]) for e in E]

    print(f"Kolmogorov flow {args.n}^2, dt={args.dt}, t={args.spinup}..{args.spinup + args.average}, "
          f"fit {args.kmin} <= k <= {args.n // 4}  ({seconds:.1f} s, all members batched)")
    print(f"{'Re':>8} {'slope':>8} {'energy':>10}")
    for re, slope, e in zip(args.re, slopes, E):
        print(f"{re:8.0f} {slope:8.2f} {e.sum():10.4f}")
    result = {
        "n": args.n, "dt": args.dt, "spinup": args.spinup, "average": args.average, "kmin": args.kmin,
        "kmax": args.n // 4, "re": args.re, "slope": slopes, "k": k.tolist(), "E": E.tolist(), "seconds": seconds,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

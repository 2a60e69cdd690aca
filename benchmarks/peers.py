"""Our Kolmogorov solver beside jax-cfd and our LETKF beside DAPPER, on the same machine.

1. Kolmogorov flow (DESIGN.md "Test cases"): 150 x 150 on [0, 2 pi]^2, Re 1000, drag 0.1,
   forcing sin(4 y) x-hat, dt 0.004, float64 in both codes. Ours:
   :class:`ldensf_hpc.models.kolmogorov.Kolmogorov` (IF-RK4) with the "numpy" (reference),
   "scipy" and, when installed, "ducc0" backends (the fused CPU step: member blocks on
   workers = cores threads). Peer: jax-cfd's pseudo-spectral
   ``ForcedNavierStokes2D`` (the same equations: 2/3 dealiasing, k = 4, drag 0.1) stepped by
   ``crank_nicolson_rk4``, vmapped over members and jit-compiled; compile time is reported
   apart and one step is run before timing. Metric: member-steps per second over
   ``--steps`` steps for each K in ``--members``. Both start from the same vorticity, and the
   relative L2 difference of the final vorticity fields is reported (the time steppers
   differ, so the runs agree to the steppers' truncation error, not bitwise).
2. Lorenz-96 LETKF: DAPPER's ``mods.Lorenz96.sakov2008`` set-up (40 variables, F = 8, every
   variable observed with R = I every 0.05, one RK4 step of 0.05 per cycle), N = 20 members,
   ``--spinup`` + ``--cycles`` cycles on truths and observations simulated by DAPPER; both
   filters assimilate the same ones. Ours: :class:`ldensf_hpc.filters.letkf.LETKF` through
   :func:`ldensf_hpc.filters.base.assimilate` with :class:`ldensf_hpc.models.lorenz96.Lorenz96`;
   peer: ``dapper.da_methods.LETKF(N, infl, rot=True, loc_rad)`` with DAPPER's lightest
   statistics (``rc.comps["error_only"]``). Metrics: cycles per second of the whole cycle
   (forecast, analysis, the statistics each code keeps), seconds per analysis, and the
   analysis RMSE ``sqrt(mean_j (xbar_j - x_j)^2)`` averaged over the cycles after the spin-up,
   all averaged over ``--repeats`` truths.

   Settings map (ours is not tuned apart): DAPPER multiplies the analysis anomalies by ``infl``,
   ours inflates the forecast covariance (Hunt et al. 2007) -> ``inflation = infl^2``;
   DAPPER's Gaspari-Cohn taper has half-width ``1.82 loc_rad`` (``sqrt(10/3)``, so that the
   taper is exp(-1/2) at ``loc_rad``) -> ``radius = 1.82 loc_rad`` grid points. DAPPER also
   batches two neighbouring variables per local analysis; ours does one per variable.
   Defaults: DAPPER loc_rad 12, infl 1.02 (the best of loc_rad 5/8/12/20 x infl 1.01/1.02 on
   this set-up, RMSE 0.177); ours then radius 21.84, inflation 1.0404. Scanning ours over radii
   14.6 / 21.8 / 29.1 x inflations 1.01-1.04 gave 0.180-0.184 at radii 14.6 and 21.8 (best 0.180
   at 21.8 / 1.0201), 0.184-0.204 at 29.1, and one divergence (14.6 / 1.01): no tuning gain.

Nothing in the package imports jax or DAPPER; they are the optional extra ``[peers]``
(DAPPER 1.7.1 is its last release for Python 3.11)::

    pip install -e ".[peers]"
    python benchmarks/peers.py            # K = 8 and 100, 50 steps; 3 x 1400 cycles (~4 min)
    python benchmarks/peers.py --quick    # K = 8, 10 steps; 1 x 400 cycles (under a minute)
    python benchmarks/peers.py --lorenz96-only   # the LETKF part alone (DAPPER only)
    python benchmarks/peers.py --gpu      # part 1 on a GPU: ours (CuPy) vs jax-cfd on the same GPU
    python benchmarks/peers.py --kolmogorov-only   # part 1 on the CPU (jax-cfd only, no DAPPER)

With ``--gpu`` (``benchmarks/gpu_suite.sh``) only part 1 runs, ours with the "cupy" backend and
jax-cfd on jax's GPU backend, both float64 (the H100 anchor, 77 000 member-steps/s, is jax-cfd
in float32; target: ours >= 1x jax-cfd); without a GPU it says so and times nothing.

Prints a Markdown table and writes ``benchmarks/results/peers_cpu.json`` (machine, load,
package versions, precision, sizes, every figure).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import math
import os
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from types import SimpleNamespace

import numpy as np
from common import RESULTS, describe, load_average, machine, markdown_table, timed, write_json

from ldensf_hpc import cases
from ldensf_hpc.backend import cupy_available, rng_for, to_numpy
from ldensf_hpc.cases import load_config
from ldensf_hpc.filters.base import Observation
from ldensf_hpc.filters.cycle import cycle
from ldensf_hpc.filters.letkf import LETKF
from ldensf_hpc.models.lorenz96 import Lorenz96, Lorenz96Config
from ldensf_hpc.observe import full_operator

PEERS = ("jax", "jaxlib", "jax-cfd", "dapper")

# Kolmogorov flow: jax-cfd's ForcedNavierStokes2D fixes drag 0.1 and forcing wavenumber 4.
GRID, DT, RE, DRAG, FORCING_K = 150, 0.004, 1000.0, 0.1, 4

# Lorenz-96 twin experiment of DAPPER's sakov2008 module.
L96_D, L96_F, DT_OBS, OBS_STD, MEMBERS = 40, 8.0, 0.05, 1.0, 20
X0_VARIANCE = 0.001  # sakov2008: X0 = GaussRV(mu=x0, C=0.001)
GC_HALF_WIDTH_PER_LOC_RAD = 1.82  # DAPPER's "GC" taper: half-width c = 1.82 loc_rad


def peer_machine() -> dict:
    """:func:`common.machine` plus the versions of the peer packages (None where absent)."""
    info = machine()
    for name in PEERS:
        try:
            info["versions"][name] = version(name)
        except PackageNotFoundError:
            info["versions"][name] = None
    return info


# -- 1. Kolmogorov flow ---------------------------------------------------------------------
def kolmogorov_model(backend: str):
    settings = {"backend": backend, "workers": os.cpu_count(), "n": GRID, "dt": DT, "drag": DRAG,
                "forcing_wavenumber": FORCING_K, "initial_seed": "null"}  # null: one random field per member
    overrides = [f"kolmogorov.{key}={value}" for key, value in settings.items()]
    return cases.get("kolmogorov").model(load_config("paper", case="kolmogorov", overrides=overrides))


def jax_cfd_runner():
    """A jitted ``run(omega_hat, n_steps)`` of jax-cfd's Kolmogorov flow, vmapped over members.

    jax-cfd's arrays are indexed ``[ix, iy]`` with the real FFT along y; ``omega_hat`` is
    ``rfft2`` of vorticity fields ``(K, nx, ny)``.
    """
    import jax

    jax.config.update("jax_enable_x64", True)  # float64, as ours
    from jax_cfd.base import grids
    from jax_cfd.spectral import equations, time_stepping

    grid = grids.Grid((GRID, GRID), domain=((0.0, 2 * math.pi), (0.0, 2 * math.pi)))
    flow = equations.ForcedNavierStokes2D(viscosity=1.0 / RE, grid=grid, smooth=True)
    step = jax.vmap(time_stepping.crank_nicolson_rk4(flow, DT))
    return jax.jit(lambda w, n_steps: jax.lax.fori_loop(0, n_steps, lambda _, v: step(v), w))


def kolmogorov_rows(K: int, steps: int, backends=("numpy", "scipy")) -> tuple[list[dict], dict]:
    """Member-steps per second of ours (each of ``backends``) and jax-cfd, and their agreement."""
    import jax.numpy as jnp

    ours = {backend: kolmogorov_model(backend) for backend in backends}
    params = np.full((K, 1), RE)
    w0 = kolmogorov_model("numpy").initial_state(params, rng_for(0, K))
    omega0 = np.fft.irfft2(w0, s=(GRID, GRID))  # (K, iy, ix)

    rows, finals = [], {}
    for backend, model in ours.items():
        xp = model.fft.xp
        w_in = xp.asarray(w0)
        synchronize = xp.cuda.Device().synchronize if backend == "cupy" else (lambda: None)

        def run(model=model, w_in=w_in, synchronize=synchronize):
            w = model.step(w_in, params, steps)
            synchronize()
            return w

        model.step(w_in, params, 1)  # FFT plans, caches, kernels
        synchronize()
        w, seconds, cpu = timed(run)
        finals[backend] = np.fft.irfft2(to_numpy(w), s=(GRID, GRID))
        workers = os.cpu_count() if model.fft.fused else 1
        device = "GPU" if backend == "cupy" else f"{workers} thread{'s' * (workers > 1)}"
        rows.append({"code": "ours", "variant": f"{backend} FFT ({device})",
                     "K": K, "steps": steps, "seconds": seconds, "cpu_seconds": cpu,
                     "member_steps_per_s": K * steps / seconds})

    run = jax_cfd_runner()
    w0_jax = jnp.fft.rfft2(jnp.asarray(omega0.transpose(0, 2, 1)))
    compiled, compile_seconds, _ = timed(lambda: run.lower(w0_jax, steps).compile())
    compiled(w0_jax, 1).block_until_ready()  # warm-up
    w, seconds, cpu = timed(lambda: compiled(w0_jax, steps).block_until_ready())
    finals["jax-cfd"] = np.asarray(jnp.fft.irfft2(w, s=(GRID, GRID))).transpose(0, 2, 1)
    import jax

    rows.append({"code": "jax-cfd", "variant": f"ForcedNavierStokes2D + crank_nicolson_rk4, vmap + jit "
                                               f"({jax.default_backend()})",
                 "K": K, "steps": steps, "seconds": seconds, "cpu_seconds": cpu,
                 "member_steps_per_s": K * steps / seconds, "compile_seconds": compile_seconds})

    ref = finals["jax-cfd"]
    agreement = {"K": K, "steps": steps, "time": steps * DT,
                 "relative_change_of_omega": float(np.linalg.norm(ref - omega0) / np.linalg.norm(omega0)),
                 **{f"numpy_vs_{b}": float(np.linalg.norm(finals[b] - finals["numpy"]) / np.linalg.norm(ref))
                    for b in finals if "numpy" in finals and b not in ("numpy", "jax-cfd")},
                 "ours_vs_jax_cfd": float(np.linalg.norm(finals[backends[0]] - ref) / np.linalg.norm(ref))}
    return rows, agreement


# -- 2. Lorenz-96 LETKF ---------------------------------------------------------------------
def dapper_modules() -> SimpleNamespace:
    """DAPPER's methods, LETKF internals, sakov2008 set-up and seeding; progress bars off."""
    with contextlib.redirect_stdout(io.StringIO()):  # DAPPER prints a live-plotting notice on import
        import dapper
        import dapper.da_methods as da
        import dapper.mods as modelling
        from dapper.da_methods import ensemble
        from dapper.mods.Lorenz96 import sakov2008
        from dapper.tools import progressbar, seeding
    progressbar.disable_progbar = True
    dapper.rc.comps["error_only"] = True  # DAPPER's lightest per-cycle statistics
    return SimpleNamespace(da=da, ensemble=ensemble, modelling=modelling, sakov2008=sakov2008,
                           set_seed=seeding.set_seed)


def lorenz96_case(spinup: int, cycles: int, seed: int):
    """DAPPER's sakov2008 HMM with ``spinup + cycles`` cycles, and one truth ``(n + 1, 40)`` with
    observations ``(n, 40)`` simulated by it (``yy[c]`` observes ``xx[c + 1]``)."""
    dpr = dapper_modules()
    hmm = dpr.sakov2008.HMM.copy()
    hmm.tseq = dpr.modelling.Chronology(DT_OBS, dko=1, Ko=spinup + cycles - 1, BurnIn=spinup * DT_OBS)
    dpr.set_seed(seed)  # DAPPER's own generator (seed > 0)
    xx, yy = hmm.simulate()
    return hmm, xx, np.stack(yy)


def run_dapper(hmm, xx, yy, loc_rad: float, infl: float, spinup: int, seed: int) -> dict:
    dpr = dapper_modules()
    clock = [0.0]

    def stopwatch(fn):
        def timed_fn(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            clock[0] += time.perf_counter() - t0
            return out
        return timed_fn

    method = dpr.da.LETKF(N=MEMBERS, infl=infl, rot=True, loc_rad=loc_rad)
    originals = dpr.ensemble.local_analyses, dpr.ensemble.post_process
    dpr.ensemble.local_analyses, dpr.ensemble.post_process = map(stopwatch, originals)  # analysis time
    dpr.set_seed(seed)  # initial ensemble and random rotations
    try:
        _, seconds, cpu = timed(lambda: method.assimilate(hmm, xx, yy))
    finally:
        dpr.ensemble.local_analyses, dpr.ensemble.post_process = originals
    mean = np.asarray(method.stats.mu.a)  # analysis means at the observation times
    rmse = np.sqrt(np.mean((mean - xx[1:]) ** 2, axis=1))
    method.stats.average_in_time()
    return {"seconds": seconds, "cpu_seconds": cpu, "analysis_seconds": clock[0],
            "rmse": float(rmse[spinup:].mean()), "dapper_own_rmse_a": float(method.avrgs.err.rms.a.val)}


def run_ours(hmm, xx, yy, radius: float, inflation: float, spinup: int, seed: int) -> dict:
    model = Lorenz96(Lorenz96Config(d=L96_D, forcing=L96_F, dt=DT_OBS))
    rng = rng_for(seed, 1)
    ensemble = hmm.X0.mu + math.sqrt(X0_VARIANCE) * rng.standard_normal((MEMBERS, L96_D))
    operator = full_operator((L96_D,), periodic=True)
    filt = LETKF(radius=radius, inflation=inflation)
    std = np.full(L96_D, OBS_STD)
    observations = [Observation(operator, y, std) for y in yy]
    result, seconds, cpu = timed(lambda: cycle(model, filt, ensemble, observations, np.ones(len(yy), dtype=int)))
    rmse = np.sqrt(np.mean((result.analysis.mean - xx[1:]) ** 2, axis=1))
    same_dynamics = float(np.abs(model.step(xx[:-1], None, 1) - xx[1:]).max())
    return {"seconds": seconds, "cpu_seconds": cpu, "analysis_seconds": result.T_f,
            "rmse": float(rmse[spinup:].mean()), "max_abs_step_difference_to_dapper_truth": same_dynamics}


def lorenz96_rows(spinup: int, cycles: int, repeats: int, loc_rad: float, infl: float,
                  radius: float, inflation: float) -> dict:
    runs = {"ours": [], "dapper": []}
    for seed in range(1, repeats + 1):
        hmm, xx, yy = lorenz96_case(spinup, cycles, seed)
        runs["dapper"].append(run_dapper(hmm, xx, yy, loc_rad, infl, spinup, seed=1000 + seed))
        runs["ours"].append(run_ours(hmm, xx, yy, radius, inflation, spinup, seed))
    n_cycles = repeats * (spinup + cycles)
    out = {"members": MEMBERS, "d": L96_D, "forcing": L96_F, "dt_obs": DT_OBS, "obs_std": OBS_STD,
           "spinup": spinup, "cycles": cycles, "repeats": repeats,
           "settings": {"dapper": {"loc_rad": loc_rad, "infl": infl, "rot": True, "taper": "GC"},
                        "ours": {"radius": radius, "inflation": inflation}}}
    for code, rs in runs.items():
        seconds, cpu = (sum(r[key] for r in rs) for key in ("seconds", "cpu_seconds"))
        out[code] = {"cycles_per_s": n_cycles / seconds, "seconds": seconds, "cycles_per_cpu_s": n_cycles / cpu,
                     "analysis_ms_per_cycle": 1e3 * sum(r["analysis_seconds"] for r in rs) / n_cycles,
                     "rmse": float(np.mean([r["rmse"] for r in rs])), "runs": rs}
    out["speedup"] = out["ours"]["cycles_per_s"] / out["dapper"]["cycles_per_s"]
    out["speedup_cpu"] = out["ours"]["cycles_per_cpu_s"] / out["dapper"]["cycles_per_cpu_s"]
    out["rmse_ratio"] = out["ours"]["rmse"] / out["dapper"]["rmse"]
    return out


# -- report ---------------------------------------------------------------------------------
def print_table(result: dict) -> None:
    """The Markdown table; ratios by wall time and by process-CPU time (all threads), which a
    shared machine disturbs less."""
    rows = []
    for K, timings in result["kolmogorov"]["rows"].items():
        peer = next(r for r in timings if r["code"] == "jax-cfd")
        for r in (r for r in timings if r["code"] == "ours"):
            rows.append([f"Kolmogorov member-steps/s: ours {r['variant']} vs jax-cfd",
                         f"150², K={K}, {r['steps']} steps", r["member_steps_per_s"], peer["member_steps_per_s"],
                         r["member_steps_per_s"] / peer["member_steps_per_s"], peer["cpu_seconds"] / r["cpu_seconds"]])
        rows.append(["jax-cfd compile time [s], excluded above", f"K={K}", None, peer["compile_seconds"], None, None])
        agree = result["kolmogorov"]["agreement"][K]
        fused = [k for k in agree if k.startswith("numpy_vs_")]
        what = (f"Kolmogorov rel. L2 difference of ω after {agree['steps']} steps (ω itself changed by "
                f"{agree['relative_change_of_omega']:.2f}); ours: numpy vs {', '.join(k[9:] for k in fused)} "
                "(largest), peer: ours vs jax-cfd")
        rows.append([what, f"K={K}", max((agree[k] for k in fused), default=None), agree["ours_vs_jax_cfd"],
                     None, None])
    print(f"Ours vs peers, float64 — {describe(result['machine'])} (at the end; at the start "
          f"{result['load_before']})\n")
    lr = result["lorenz96"]
    if lr is None:  # --gpu, --kolmogorov-only: part 1 only
        print(markdown_table(["comparison", "size", "ours", "peer", "ours / peer", "ours / peer by CPU s"], rows))
        return
    ours, peer = lr["ours"], lr["dapper"]
    size = f"N={lr['members']}, {lr['repeats']}×({lr['spinup']}+{lr['cycles']}) cycles"
    rows += [["Lorenz-96 LETKF cycles/s (whole cycle) vs DAPPER", size, ours["cycles_per_s"], peer["cycles_per_s"],
              lr["speedup"], lr["speedup_cpu"]],
             ["Lorenz-96 LETKF analysis [ms/cycle]", size, ours["analysis_ms_per_cycle"],
              peer["analysis_ms_per_cycle"], ours["analysis_ms_per_cycle"] / peer["analysis_ms_per_cycle"], None],
             ["Lorenz-96 analysis RMSE after the spin-up", size, ours["rmse"], peer["rmse"], lr["rmse_ratio"], None],
             ["Lorenz-96: max abs difference of one RK4 step of ours from DAPPER's truth", size,
              max(r["max_abs_step_difference_to_dapper_truth"] for r in ours["runs"]), None, None, None]]
    print(markdown_table(["comparison", "size", "ours", "peer", "ours / peer", "ours / peer by CPU s"], rows))
    s = lr["settings"]
    print(f"\nLETKF settings: DAPPER loc_rad={s['dapper']['loc_rad']:g}, infl={s['dapper']['infl']:g}, rot=True, "
          f"GC taper; ours radius={s['ours']['radius']:.5g}, inflation={s['ours']['inflation']:.5g} "
          f"(mapped: 1.82 loc_rad = {GC_HALF_WIDTH_PER_LOC_RAD * s['dapper']['loc_rad']:.5g}, "
          f"infl² = {s['dapper']['infl'] ** 2:.5g}). Target ours >= 5x DAPPER's cycles/s at an RMSE within 5 %: "
          f"{lr['speedup']:.2f}x (by CPU time {lr['speedup_cpu']:.2f}x), RMSE ratio {lr['rmse_ratio']:.3f}.")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="K = 8, 10 steps; one truth of 100 + 300 cycles")
    ap.add_argument("--members", type=int, nargs="+", default=None, help="Kolmogorov ensemble sizes (8 100)")
    ap.add_argument("--steps", type=int, default=None, help="Kolmogorov timed steps (50)")
    ap.add_argument("--spinup", type=int, default=None, help="Lorenz-96 spin-up cycles (400, DAPPER's BurnIn)")
    ap.add_argument("--cycles", type=int, default=None, help="Lorenz-96 cycles after the spin-up (1000)")
    ap.add_argument("--repeats", type=int, default=None, help="Lorenz-96 truths (3)")
    ap.add_argument("--loc-rad", type=float, default=12.0, help="DAPPER LETKF loc_rad")
    ap.add_argument("--infl", type=float, default=1.02, help="DAPPER LETKF infl (on anomalies)")
    ap.add_argument("--radius", type=float, default=None, help="our LETKF radius (default 1.82 loc_rad)")
    ap.add_argument("--inflation", type=float, default=None, help="our LETKF inflation (default infl^2)")
    ap.add_argument("--gpu", action="store_true", help="Kolmogorov only, ours (CuPy) and jax-cfd on the GPU")
    ap.add_argument("--kolmogorov-only", action="store_true", help="part 1 only (no DAPPER needed); JSON "
                    "results/peers_kolmogorov_cpu.json")
    ap.add_argument("--lorenz96-only", action="store_true", help="part 2 only (no jax needed); JSON "
                    "results/peers_lorenz96_cpu.json")
    ap.add_argument("--out", default=None, help="JSON path (default results/peers_cpu.json, peers_gpu.json)")
    args = ap.parse_args(argv)
    part1 = args.gpu or args.kolmogorov_only
    if part1 and args.lorenz96_only:
        raise SystemExit("--lorenz96-only runs part 2 alone: drop --gpu / --kolmogorov-only, or run it separately")
    out = args.out or str(RESULTS / ("peers_gpu.json" if args.gpu else "peers_kolmogorov_cpu.json" if part1 else
                                     "peers_lorenz96_cpu.json" if args.lorenz96_only else "peers_cpu.json"))
    needed = ("jax", "jax_cfd") if part1 else ("dapper",) if args.lorenz96_only else ("jax", "jax_cfd", "dapper")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"benchmarks/peers.py needs {', '.join(missing)}: pip install -e \".[peers]\"")
    if args.gpu:
        import jax

        reason = ("no CUDA GPU (CuPy)" if not cupy_available() else
                  None if jax.default_backend() == "gpu" else f"jax runs on {jax.default_backend()}, not a GPU")
        if reason:
            print(f"{reason}: nothing timed")
            return {"machine": peer_machine(), "skipped": reason, "path": write_json(out, {
                "machine": peer_machine(), "command": "python benchmarks/peers.py --gpu", "skipped": reason})}
    members = args.members or ([8] if args.quick else [8, 100])
    steps = args.steps or (10 if args.quick else 50)
    spinup = args.spinup or (100 if args.quick else 400)
    cycles = args.cycles or (300 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 3)
    radius = args.radius or GC_HALF_WIDTH_PER_LOC_RAD * args.loc_rad
    inflation = args.inflation or args.infl**2

    load_before = load_average()
    kolmogorov = {"grid": GRID, "dt": DT, "Re": RE, "drag": DRAG, "forcing_wavenumber": FORCING_K,
                  "precision": "float64", "rows": {}, "agreement": {}, "load": {}}
    backends = ("cupy",) if args.gpu else ("numpy", "scipy", *(("ducc0",) if importlib.util.find_spec("ducc0") else ()))
    for K in () if args.lorenz96_only else members:
        kolmogorov["rows"][K], kolmogorov["agreement"][K] = kolmogorov_rows(K, steps, backends)
        kolmogorov["load"][K] = load_average()
    lorenz96 = None if part1 else lorenz96_rows(spinup, cycles, repeats, args.loc_rad, args.infl, radius, inflation)
    result = {"machine": peer_machine(), "command": "python benchmarks/peers.py " + " ".join(argv or sys.argv[1:]),
              "precision": "float64", "load_before": load_before,
              "load_after": load_average(), "quick": args.quick, "kolmogorov": kolmogorov, "lorenz96": lorenz96}
    print_table(result)
    print(f"wrote {write_json(out, result)}")
    return result


if __name__ == "__main__":
    main()

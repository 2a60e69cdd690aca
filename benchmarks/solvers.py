"""Truth-solver timings beside the paper's T_d (LD-EnSF Table 1: K = 100, full trajectory).

- SWE, 150 x 150, K = 100 members x 2000 steps: NumPy reference vs Numba kernel (and the
  CUDA kernel when CuPy sees a GPU). The NumPy reference is timed on fewer members and
  steps and extrapolated linearly (its cost is linear in both); the table says so.
- Kolmogorov, 150 x 150, K = 8 members: frames per second (frame = steps_per_frame steps)
  with the "numpy" and "scipy" (scipy.fft, ``workers`` threads) FFT backends, extrapolated
  linearly to the paper's K = 100 x 300 frames.

Prints a Markdown table and writes JSON (machine, versions, load, every timing)::

    python benchmarks/solvers.py              # full CPU run (about a minute on 2 cores)
    python benchmarks/solvers.py --quick      # same grids, fewer members/steps (seconds)
    python benchmarks/solvers.py --gpu-only   # the CuPy rows alone (benchmarks/gpu_suite.sh)

- Atmosphere (forced shallow water on the sphere), K = 4 members at 64 x 128, 128 x 256 and 256 x 512:
  member-steps per second of ours (ducc0 transforms, members on ``workers`` threads) beside
  torch-harmonics' example solver (``torch_harmonics.examples.ShallowWaterSolver``, one member, same
  grid and truncation) when that package is importable, and the projected cost of the paper's dataset
  (the paper preset's trajectories, burn-in and step).

GPU target (issue): SWE K = 100 x 2000 steps at 150^2 in <= 0.1 s (a batched torch port: 0.76 s on an H100).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from common import RESULTS, describe, load_average, machine, markdown_table, timed, write_json

from ldensf_hpc import cases
from ldensf_hpc.backend import cupy_available
from ldensf_hpc.cases import load_config

PAPER_K = 100
PAPER_TD = {"swe": 100.95, "kolmogorov": 10829.09}  # seconds, AMD EPYC 7543 (Table 1)
PAPER_STEPS = {"swe": 2000, "kolmogorov": 300}  # solver steps / frames of one trajectory
GPU_TARGET_SWE_S = 0.1  # K = 100 x 2000 steps at 150^2


def synchronize(backend: str) -> None:
    if backend == "cupy":
        import cupy

        cupy.cuda.Device().synchronize()


def time_swe(backend: str, K: int, steps: int) -> tuple[float, float]:
    """Wall and CPU seconds for K members x steps on the paper's 150 x 150 grid (after a warm-up step)."""
    cfg = load_config("paper", case="swe", overrides=[f"swe.backend={backend}"])
    model = cases.get("swe").model(cfg)
    params = model.sample_params(np.random.default_rng(0), K)
    state = model.initial_state(params)
    model.step(state[:1], params[:1], 1)  # compile / load the kernel
    synchronize(backend)

    def run():
        model.step(state, params, steps)
        synchronize(backend)

    _, wall, cpu = timed(run)
    return wall, cpu


def time_kolmogorov(backend: str, K: int, frames: int) -> tuple[float, float, int]:
    """Wall and CPU seconds for ``frames`` frames of K members (after a warm-up frame), steps per frame."""
    cfg = load_config("paper", case="kolmogorov", overrides=[f"kolmogorov.backend={backend}"])
    model = cases.get("kolmogorov").model(cfg)
    params = model.sample_params(np.random.default_rng(0), K)
    state = model.initial_state(params, np.random.default_rng(1))
    spf = cfg.model.steps_per_frame
    state = model.step(state, params, spf)  # FFT plans, caches
    synchronize(backend)

    def run():
        w = state
        for _ in range(frames):
            w = model.step(w, params, spf)
        synchronize(backend)

    _, wall, cpu = timed(run)
    return wall, cpu, spf


SPHERE_GRIDS = ((64, 128), (128, 256), (256, 512))
SPHERE_K = 4
SPHERE_PAPER = load_config("paper", case="atmosphere")


def paper_member_steps() -> int:
    """Member-steps of the paper preset's dataset: trajectories x (burn-in + kept intervals) x steps per frame."""
    c = SPHERE_PAPER.model
    return SPHERE_PAPER.data.n_trajectories * (c.warmup_frames + c.n_frames - 1) * c.steps_per_frame


def time_sphere(nlat: int, nlon: int, K: int, steps: int) -> dict:
    """Ours: member-steps per second for K members at nlat x nlon (the step the CFL allows, after a warm-up step)."""
    paper = SPHERE_PAPER.model
    dt = paper.dt * paper.nlat / nlat  # the paper preset's step, scaled with the resolution
    cfg = load_config("paper", case="atmosphere", overrides=[f"atmosphere.nlat={nlat}", f"atmosphere.nlon={nlon}",
                                                             f"atmosphere.dt={dt}"])
    model = cases.get("atmosphere").model(cfg)
    params = model.sample_params(np.random.default_rng(0), K)
    state = model.step(model.initial_state(params), params, 1)
    _, wall, cpu = timed(lambda: model.step(state, params, steps))
    return {"nlat": nlat, "nlon": nlon, "lmax": model.lmax, "dt": dt, "K": K, "steps": steps, "seconds": wall,
            "cpu_seconds": cpu, "member_steps_per_s": K * steps / wall, "workers": cfg.model.workers}


def time_torch_harmonics(nlat: int, nlon: int, lmax: int, dt: float, steps: int) -> dict:
    """torch-harmonics' example solver (one member, float64, CPU) on the same grid and truncation, or why not."""
    try:
        import torch
        from torch_harmonics.examples import ShallowWaterSolver
    except ImportError as exc:
        return {"skipped": f"torch-harmonics not importable ({exc})"}
    solver = ShallowWaterSolver(nlat, nlon, dt, lmax=lmax + 1, mmax=lmax + 1, grid="legendre-gauss").to(torch.float64)
    uspec = solver.timestep(solver.galewsky_initial_condition(), 1)
    with torch.no_grad():
        _, wall, cpu = timed(lambda: solver.timestep(uspec, steps))
    return {"seconds": wall, "cpu_seconds": cpu, "steps": steps, "member_steps_per_s": steps / wall,
            "threads": torch.get_num_threads()}


def sphere_rows(quick: bool) -> list[dict]:
    rows = []
    for nlat, nlon in SPHERE_GRIDS[:2] if quick else SPHERE_GRIDS:
        steps = max(2, int(400 * (64 / nlat) ** 3)) if not quick else 2
        ours = time_sphere(nlat, nlon, SPHERE_K, steps)
        peer = time_torch_harmonics(nlat, nlon, ours["lmax"], ours["dt"], steps)
        if (nlat, nlon) == (SPHERE_PAPER.model.nlat, SPHERE_PAPER.model.nlon):
            ours["paper_dataset_cpu_hours"] = paper_member_steps() / ours["member_steps_per_s"] / 3600
        ours["torch_harmonics"] = peer
        if "member_steps_per_s" in peer:
            ours["ours_over_torch_harmonics"] = ours["member_steps_per_s"] / peer["member_steps_per_s"]
        rows.append(ours)
    return rows


def row(case, backend, K, steps, seconds, cpu_seconds, unit="steps"):
    """One timing (wall seconds), extrapolated linearly to K = 100 x the paper's trajectory length."""
    full = seconds * (PAPER_K / K) * (PAPER_STEPS[case] / steps)
    return {"case": case, "backend": backend, "K": K, unit: steps, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "extrapolated": (K, steps) != (PAPER_K, PAPER_STEPS[case]),
            "full_K100_seconds": full, "paper_T_d": PAPER_TD[case], "paper_over_ours": PAPER_TD[case] / full}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer members/steps on the same grids (seconds)")
    ap.add_argument("--gpu-only", action="store_true", help="only the CuPy rows (none without a GPU)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/solvers_cpu.json, "
                                                "solvers_gpu.json when a GPU is used)")
    args = ap.parse_args(argv)
    gpu = cupy_available()
    if args.gpu_only and not gpu:
        print("no CUDA GPU (CuPy): no GPU rows")
        result = {"machine": machine(), "command": "python benchmarks/solvers.py " + " ".join(argv or sys.argv[1:]),
                  "rows": [], "skipped": "no CUDA GPU (CuPy)"}
        print(f"wrote {write_json(args.out or RESULTS / 'solvers_gpu.json', result)}")
        return result
    out = args.out or RESULTS / ("solvers_gpu.json" if gpu else "solvers_cpu.json")
    load_before = load_average()

    swe_numba = (10, 100) if args.quick else (PAPER_K, PAPER_STEPS["swe"])
    swe_numpy = (4, 20) if args.quick else (10, 100)
    kol_K, kol_frames = (2, 1) if args.quick else (8, 3)
    cpu_backends = {"swe": [] if args.gpu_only else ["numpy", "numba"],
                    "kolmogorov": [] if args.gpu_only else ["numpy", "scipy"]}
    sizes = {"numpy": swe_numpy, "numba": swe_numba, "cupy": swe_numba}
    rows = [row("swe", backend, *sizes[backend], *time_swe(backend, *sizes[backend]))
            for backend in cpu_backends["swe"] + (["cupy"] if gpu else [])]
    for backend in cpu_backends["kolmogorov"] + (["cupy"] if gpu else []):
        seconds, cpu_seconds, spf = time_kolmogorov(backend, kol_K, kol_frames)
        r = row("kolmogorov", backend, kol_K, kol_frames, seconds, cpu_seconds, unit="frames")
        r["steps_per_frame"], r["frames_per_second"] = spf, kol_frames / seconds
        rows.append(r)

    sphere = [] if args.gpu_only else sphere_rows(args.quick)

    def ratio(case, fast, slow):
        by = {r["backend"]: r["full_K100_seconds"] for r in rows if r["case"] == case}
        return by[slow] / by[fast] if fast in by and slow in by else None

    result = {"machine": machine(), "command": "python benchmarks/solvers.py " + " ".join(argv or sys.argv[1:]),
              "load_before": load_before, "load_after": load_average(), "quick": args.quick,
              "grid": 150, "rows": rows, "sphere": sphere, "swe_numba_speedup_over_numpy": ratio("swe", "numba", "numpy"),
              "kolmogorov_scipy_speedup_over_numpy": ratio("kolmogorov", "scipy", "numpy"),
              "kolmogorov_cupy_speedup_over_scipy": ratio("kolmogorov", "cupy", "scipy"),
              "swe_cupy_speedup_over_numba": ratio("swe", "cupy", "numba")}
    swe_gpu = [r for r in rows if r["case"] == "swe" and r["backend"] == "cupy"]
    if swe_gpu:
        result["gpu_target_swe_s"] = GPU_TARGET_SWE_S
        result["gpu_target_swe_met"] = bool(swe_gpu[0]["full_K100_seconds"] <= GPU_TARGET_SWE_S)

    print(f"Truth solvers, 150 x 150 grids — {describe(result['machine'])}; "
          f"load {load_before} -> {result['load_after']}\n")
    cells = []
    for r in rows:
        unit = "frames" if r["case"] == "kolmogorov" else "steps"
        measured = f"K={r['K']} x {r[unit]} {unit}"
        if r["case"] == "kolmogorov":
            measured += f" ({r['frames_per_second']:.3g} frames/s)"
        full = f"{r['full_K100_seconds']:.4g}" + (" (extrapolated)" if r["extrapolated"] else "")
        cells.append([r["case"], r["backend"], measured, f"{r['seconds']:.3g}", f"{r['cpu_seconds']:.3g}", full,
                      f"{r['paper_T_d']:g}", f"{r['paper_over_ours']:.3g}"])
    print(markdown_table(["case", "backend", "measured", "wall s", "CPU s", "K=100 full trajectory [s]",
                          "paper T_d [s]", "paper / ours"], cells))
    ratios = [f"{what}: {result[key]:.3g}x" for what, key in (
        ("SWE numba / numpy", "swe_numba_speedup_over_numpy"), ("SWE cupy / numba", "swe_cupy_speedup_over_numba"),
        ("Kolmogorov scipy / numpy", "kolmogorov_scipy_speedup_over_numpy"),
        ("Kolmogorov cupy / scipy", "kolmogorov_cupy_speedup_over_scipy")) if result[key] is not None]
    print("\nSpeed-ups: " + "; ".join(ratios) + ". Extrapolated rows are linear in K and steps/frames "
          "(the solvers' cost is).")
    if swe_gpu:
        print(f"GPU target SWE K=100 x 2000 steps <= {GPU_TARGET_SWE_S} s: "
              f"{swe_gpu[0]['full_K100_seconds']:.3g} s, {'met' if result['gpu_target_swe_met'] else 'missed'}.")
    if sphere:
        print(f"\nAtmosphere (shallow water on the sphere), K = {SPHERE_K}, float64: member-steps per second\n")
        print(markdown_table(
            ["grid", "lmax", "dt [s]", "ours", "torch-harmonics example (1 member)", "ours / theirs"],
            [[f"{r['nlat']} x {r['nlon']}", r["lmax"], f"{r['dt']:g}", f"{r['member_steps_per_s']:.4g}",
              f"{r['torch_harmonics']['member_steps_per_s']:.4g}" if "member_steps_per_s" in r["torch_harmonics"]
              else r["torch_harmonics"]["skipped"],
              f"{r['ours_over_torch_harmonics']:.3g}" if "ours_over_torch_harmonics" in r else "-"] for r in sphere]))
        paper = [r for r in sphere if "paper_dataset_cpu_hours" in r]
        if paper:
            print(f"Paper-size dataset ({paper_member_steps():,} member-steps, the paper preset): "
                  f"{paper[0]['paper_dataset_cpu_hours']:.3g} h on this machine.")
    print(f"wrote {write_json(out, result)}")
    return result


if __name__ == "__main__":
    main()

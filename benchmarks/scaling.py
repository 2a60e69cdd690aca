"""Parallel scaling on this machine, and a projection to N nodes.

1. Dataset generation (``ldensf_hpc.data.generate``), Kolmogorov "small" preset by default
   (compute-bound: 0.5 s of solver per shard of 4 trajectories, 1.1 MB each; "tiny" with --quick):
   - Dask ``LocalCluster`` with 1, 2, ... single-threaded workers; the cluster start-up and an
     untimed warm-up run (one shard per worker: imports, compiled kernels) are reported apart;
   - MPI ranks, ``mpiexec -n R ldensf generate ... --backend mpi`` as a subprocess, one thread
     per rank; the time is the run's own (from its start on rank 0), the launch total beside it.
   Strong scaling: a fixed number of shards; weak scaling: a fixed number of shards per worker.
2. Full-space EnSF with members sharded over MPI ranks (SWE, K = 100, ``benchmarks/mpi_ensf.py``
   run under ``mpiexec -n R``, one thread per rank): seconds per forecast + analysis cycle.
3. The fused latent EnSF kernel (Numba, d = 12): throughput (members x Euler steps per second)
   for K = 10 ... 100 000. The cost is O(K^2) per step, so large K run fewer Euler steps
   (throughput per step does not depend on their number) and a K whose single step is
   estimated above the budget is skipped; both are listed.
4. A projection to N = 1 ... 64 nodes (one rank per node at the speed measured here) from the
   measured one-rank compute and the messages of the sharding design over an assumed network
   (default 100 Gb/s, 2 us latency): generation ``ceil(S / N)`` shards per node plus a result
   record per shard to the client and each node's shard files to shared storage at the link
   bandwidth; EnSF ``ceil(K / N) / K`` of the compute plus a ring Allgather of the K x d float64
   forecast and a Gather of the analysis to rank 0. Labelled "projection" wherever printed.

Targets on this machine (2 cores): generation with 2 workers >= 1.8x one worker; MPI EnSF
with 2 ranks >= 1.7x one rank. Writes ``benchmarks/results/scaling_cpu.json``, a plot of the
measured speed-ups (``scaling_cpu.png``) and of the projection (``scaling_cpu_projection.png``)::

    python benchmarks/scaling.py                   # a few minutes on 2 cores
    python benchmarks/scaling.py --quick           # small sizes, under 2 minutes
    python benchmarks/scaling.py --only kernel     # one part (generation, ensf, kernel)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, best_of, describe, machine, markdown_table, write_json

from ldensf_hpc import plots
from ldensf_hpc.cases import load_config
from ldensf_hpc.data.generate import generate
from ldensf_hpc.kernels import ensf_update
from ldensf_hpc.parallel import thread_env
from ldensf_hpc.parallel.dask import dask_client

TARGETS = {"generation": 1.8, "ensf": 1.7}  # speed-up of 2 workers / ranks over 1 on this machine
PARTS = ("generation", "ensf", "kernel")
PROJECTED_NODES = (1, 2, 4, 8, 16, 32, 64)
RECORD_BYTES = 300  # a shard's result record sent to the client (index, sha256, size)
LATENT_D, EULER_STEPS = 12, 100
SIZES = {  # quick / full workloads
    "quick": {"gen_preset": "tiny", "shards_per_worker": 2, "ensf": {"n": 32, "members": 100, "cycles": 2},
              "kernel_K": (10, 100, 1000), "kernel_budget_s": 2.0},
    "full": {"gen_preset": "small", "shards_per_worker": 24, "ensf": {"n": 150, "members": 100, "cycles": 1},
             "kernel_K": (10, 30, 100, 300, 1000, 3000, 10_000, 30_000, 100_000), "kernel_budget_s": 40.0},
}
SUMMARY_WALL = re.compile(r"written in ([0-9.]+) s")


def rank_counts(max_ranks: int) -> list[int]:
    """1, 2, 4, ... up to ``max_ranks``, and ``max_ranks`` itself."""
    counts = [1 << i for i in range(max_ranks.bit_length()) if 1 << i <= max_ranks]
    return sorted(set(counts + [max_ranks]))


def mpiexec() -> str:
    path = shutil.which(os.environ.get("MPIEXEC", "mpiexec"))
    if path is None:
        raise SystemExit("scaling.py: mpiexec not found (install mpich, or set MPIEXEC)")
    return path


def single_threaded_env() -> dict:
    return {**os.environ, **thread_env(1)}


# ---------------------------------------------------------------- 1. dataset generation


def generation_config(case: str, preset: str, shards: int):
    return load_config(preset, case=case, overrides=[f"data.n_trajectories={4 * shards}", "data.shard_size=4"])


def time_dask(case: str, preset: str, workers: int, shards: list[int], workdir: Path) -> list[dict]:
    """Wall seconds of ``generate`` for each shard count, on one cluster of ``workers`` workers."""
    t0 = time.perf_counter()
    with dask_client("local", workers) as client:
        startup = time.perf_counter() - t0
        address = client.scheduler.address
        t0 = time.perf_counter()
        generate(generation_config(case, preset, workers), workdir / f"dask{workers}-warmup", scheduler=address,
                 progress=False)
        warmup = time.perf_counter() - t0
        rows = []
        for s in shards:
            t0 = time.perf_counter()
            summary = generate(generation_config(case, preset, s), workdir / f"dask{workers}-{s}", scheduler=address,
                               progress=False)
            rows.append({"backend": "dask", "workers": workers, "shards": s, "wall_s": time.perf_counter() - t0,
                         "startup_s": startup, "warmup_s": warmup, "bytes": summary.bytes_written})
    return rows


def time_mpi_generate(case: str, preset: str, ranks: int, shards: int, workdir: Path) -> dict:
    """``mpiexec -n ranks ldensf generate --backend mpi``: the run's own wall time and the launch total."""
    ldensf = shutil.which("ldensf")
    if ldensf is None:
        raise SystemExit("scaling.py: the ldensf command is not on PATH (pip install -e .)")
    cmd = [mpiexec(), "-n", str(ranks), ldensf, "generate", "--case", case, "--preset", preset,
           "--set", f"data.n_trajectories={4 * shards}", "--set", "data.shard_size=4",
           "--out", str(workdir / f"mpi{ranks}-{shards}"), "--backend", "mpi"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=single_threaded_env())
    total = time.perf_counter() - t0
    found = SUMMARY_WALL.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    written = sum(f.stat().st_size for f in (workdir / f"mpi{ranks}-{shards}" / "shards").glob("*.h5"))
    return {"backend": "mpi", "workers": ranks, "shards": shards, "wall_s": float(found.group(1)),
            "launch_total_s": total, "bytes": written}


def generation(case: str, preset: str, counts: list[int], per_worker: int, workdir: Path) -> dict:
    """Strong (``per_worker x max`` shards) and weak (``per_worker`` shards per worker) scaling."""
    strong_shards = per_worker * max(counts)
    rows = []
    for w in counts:
        wanted = sorted({strong_shards, per_worker * w})
        rows += time_dask(case, preset, w, wanted, workdir)
        rows += [time_mpi_generate(case, preset, w, s, workdir) for s in wanted]
        print(f"  generation: {w} worker(s) done", flush=True)

    def wall(backend, w, s):
        return next(r["wall_s"] for r in rows if (r["backend"], r["workers"], r["shards"]) == (backend, w, s))

    table = []
    for backend in ("dask", "mpi"):
        for w in counts:
            strong = wall(backend, 1, strong_shards) / wall(backend, w, strong_shards)
            weak = wall(backend, 1, per_worker) / wall(backend, w, per_worker * w)
            extra = next(r for r in rows if (r["backend"], r["workers"]) == (backend, w))
            table.append({"backend": backend, "workers": w, "strong_shards": strong_shards,
                          "strong_wall_s": wall(backend, w, strong_shards), "strong_speedup": strong,
                          "strong_efficiency": strong / w, "weak_shards": per_worker * w,
                          "weak_wall_s": wall(backend, w, per_worker * w), "weak_efficiency": weak,
                          "startup_s": extra.get("startup_s"), "warmup_s": extra.get("warmup_s"),
                          "launch_total_s": extra.get("launch_total_s")})
    one = next(r for r in rows if r["backend"] == "mpi" and r["workers"] == 1 and r["shards"] == strong_shards)
    return {"case": case, "preset": preset, "shard_size": 4, "runs": rows, "table": table,
            "shard_s": one["wall_s"] / strong_shards, "shard_bytes": one["bytes"] / strong_shards}


# ---------------------------------------------------------------- 2. MPI-sharded EnSF


def ensf_rank_main(argv) -> None:
    """One rank of the sharded EnSF run (``--ensf-rank``); rank 0 prints its record as JSON."""
    import mpi_ensf
    from mpi4py import MPI

    parser = argparse.ArgumentParser()
    for name in ("n", "members", "cycles", "euler_steps", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=0)
    record = mpi_ensf.run(parser.parse_args(argv), MPI.COMM_WORLD)
    if MPI.COMM_WORLD.rank == 0:
        print("RESULT " + json.dumps(record))


def time_mpi_ensf(ranks: int, n: int, members: int, cycles: int) -> dict:
    cmd = [mpiexec(), "-n", str(ranks), sys.executable, str(Path(__file__).resolve()), "--ensf-rank",
           "--n", str(n), "--members", str(members), "--cycles", str(cycles), "--euler-steps", str(EULER_STEPS)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=single_threaded_env())
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    record = json.loads(lines[-1][len("RESULT "):])
    record["launch_total_s"] = time.perf_counter() - t0
    return record


def ensf(counts: list[int], n: int, members: int, cycles: int) -> dict:
    runs = []
    for r in counts:
        runs.append(time_mpi_ensf(r, n, members, cycles))
        print(f"  EnSF: {r} rank(s) done", flush=True)
    one = runs[0]
    for run in runs:
        run["speedup"] = one["cycle_s"] / run["cycle_s"]
        run["efficiency"] = run["speedup"] / run["ranks"]
        run["max_rel_rmse_diff_vs_1_rank"] = float(np.max(np.abs(np.subtract(run["analysis_rel_rmse"],
                                                                             one["analysis_rel_rmse"]))))
    return {"n": n, "members": members, "state_dim": one["state_dim"], "cycles": cycles, "runs": runs}


# ---------------------------------------------------------------- 3. latent kernel vs K


def kernel_sweep(Ks, budget: float) -> dict:
    """Numba latent EnSF update, d = 12, Philox noise: members x Euler steps per second."""
    rng = np.random.default_rng(0)
    obs = np.zeros(LATENT_D)
    ensf_update(rng.standard_normal((20, LATENT_D)).astype(np.float32), obs, 0.5, n_steps=2, seed=1)  # compile
    rows, skipped, last = [], [], None
    for K in Ks:
        per_step = last[1] * (K / last[0]) ** 2 if last else 0.0
        if per_step > budget:
            skipped.append({"K": K, "reason": f"one Euler step estimated at {per_step:.0f} s > {budget:g} s"})
            continue
        steps = EULER_STEPS if per_step == 0 else int(min(EULER_STEPS, max(1, budget / per_step)))
        prior = rng.standard_normal((K, LATENT_D)).astype(np.float32)
        timing = best_of(lambda: ensf_update(prior, obs, 0.5, n_steps=steps, seed=1),
                         repeats=3 if per_step * steps < 0.3 else 1, warmup=0)
        seconds = timing["best_s"]
        last = (K, seconds / steps)
        rows.append({"K": K, "euler_steps": steps, "seconds": seconds,
                     "member_steps_per_s": K * steps / seconds, "capped_steps": steps < EULER_STEPS})
        print(f"  kernel: K = {K:>6}: {steps:3d} Euler steps in {seconds:.3g} s", flush=True)
    return {"d": LATENT_D, "backend": "numba", "budget_s": budget, "rows": rows, "skipped": skipped}


# ---------------------------------------------------------------- 4. projection


def project(gen: dict | None, ens: dict | None, bandwidth_gbit: float, latency_s: float) -> dict:
    """Time on N nodes from the measured one-rank compute and the design's messages (see the docstring)."""
    beta = bandwidth_gbit * 1e9 / 8  # bytes per second
    out = {"assumptions": {"bandwidth_Gbit_s": bandwidth_gbit, "latency_s": latency_s,
                           "rank_speed": "one rank per node, as fast as one rank measured here",
                           "storage": "shared storage takes each node's shard files at the link bandwidth"},
           "nodes": list(PROJECTED_NODES)}
    if gen is not None:
        shards = gen["table"][0]["strong_shards"]
        rows = []
        for N in PROJECTED_NODES:
            compute = math.ceil(shards / N) * gen["shard_s"]
            comm = shards * (latency_s + RECORD_BYTES / beta) + math.ceil(shards / N) * gen["shard_bytes"] / beta
            rows.append({"nodes": N, "compute_s": compute, "comm_s": comm, "total_s": compute + comm})
        for r in rows:
            r["speedup"] = rows[0]["total_s"] / r["total_s"]
        out["generation"] = {"shards": shards, "shard_s": gen["shard_s"], "shard_bytes": gen["shard_bytes"],
                             "rows": rows}
    if ens is not None:
        one = ens["runs"][0]
        K, d = ens["members"], ens["state_dim"]
        cycle = one["T_d_per_cycle"] + one["T_f_per_cycle"]
        message = K * d * 8
        rows = []
        for N in PROJECTED_NODES:
            compute = cycle * math.ceil(K / N) / K
            allgather = (N - 1) * latency_s + (N - 1) / N * message / beta
            gather = (N - 1) * latency_s + (N - 1) / N * message / beta
            rows.append({"nodes": N, "compute_s": compute, "comm_s": allgather + gather,
                         "total_s": compute + allgather + gather})
        for r in rows:
            r["speedup"] = rows[0]["total_s"] / r["total_s"]
        out["ensf"] = {"members": K, "state_dim": d, "cycle_compute_1_rank_s": cycle,
                       "allgather_bytes": message, "rows": rows}
    return out


# ---------------------------------------------------------------- report


def tables(result: dict) -> str:
    parts = []
    gen = result.get("generation")
    if gen:
        rows = [[r["backend"], r["workers"], r["strong_shards"], r["strong_wall_s"], r["strong_speedup"],
                 r["strong_efficiency"], r["weak_shards"], r["weak_wall_s"], r["weak_efficiency"],
                 r["startup_s"] if r["backend"] == "dask" else r["launch_total_s"]] for r in gen["table"]]
        parts.append(f"Dataset generation, {gen['case']} {gen['preset']} preset, shards of {gen['shard_size']} "
                     f"trajectories (target: 2 workers >= {TARGETS['generation']}x one)\n" + markdown_table(
                         ["backend", "workers", "strong shards", "wall [s]", "speed-up", "efficiency",
                          "weak shards", "weak wall [s]", "weak efficiency",
                          "dask cluster start / mpiexec launch total [s]"], rows))
    ens = result.get("ensf")
    if ens:
        rows = [[r["ranks"], r["T_d_per_cycle"], r["T_f_per_cycle"], r["cycle_s"], r["speedup"], r["efficiency"],
                 f"{r['max_rel_rmse_diff_vs_1_rank']:.1e}"] for r in ens["runs"]]
        parts.append(f"Full-space EnSF, members sharded over MPI ranks: SWE {ens['n']}x{ens['n']} "
                     f"(d = {ens['state_dim']}), K = {ens['members']}, {ens['cycles']} cycle(s) "
                     f"(target: 2 ranks >= {TARGETS['ensf']}x one)\n" + markdown_table(
                         ["ranks", "T_d / cycle [s]", "T_f / cycle [s]", "cycle [s]", "speed-up", "efficiency",
                          "max |rel-RMSE diff| vs 1 rank"], rows))
    ker = result.get("kernel")
    if ker:
        rows = [[r["K"], r["euler_steps"], r["seconds"], r["member_steps_per_s"]] for r in ker["rows"]]
        text = (f"Latent EnSF kernel (numba, d = {ker['d']}): throughput vs K (Euler steps capped so each K takes "
                f"about {ker['budget_s']:g} s)\n"
                + markdown_table(["K", "Euler steps", "seconds", "members x steps / s"], rows))
        text += "".join(f"\nCapped: K = {s['K']} skipped, {s['reason']}." for s in ker["skipped"])
        parts.append(text)
    proj = result.get("projection", {})
    a = proj.get("assumptions", {})
    for name, label in (("generation", "dataset generation"), ("ensf", "EnSF cycle")):
        if name not in proj:
            continue
        measured = ({r["workers"]: r["strong_wall_s"] for r in gen["table"] if r["backend"] == "mpi"}
                    if name == "generation" else {r["ranks"]: r["cycle_s"] for r in ens["runs"]})
        rows = [[r["nodes"], r["compute_s"], r["comm_s"], r["total_s"], r["speedup"], measured.get(r["nodes"])]
                for r in proj[name]["rows"]]
        parts.append(f"PROJECTION ({label}, not measured): N nodes at {a['bandwidth_Gbit_s']:g} Gb/s, "
                     f"{a['latency_s'] * 1e6:g} us latency, one rank per node at this machine's speed\n"
                     + markdown_table(["nodes", "compute [s]", "communication [s]", "projected [s]",
                                       "projected speed-up", "measured here (MPI) [s]"], rows))
    parts.append(target_lines(result))
    return "\n\n".join(parts)


def target_lines(result: dict) -> str:
    """The 2-worker / 2-rank speed-ups against the targets (when 2 was measured)."""
    lines = []
    for r in result.get("generation", {}).get("table", []):
        if r["workers"] == 2:
            met = "met" if r["strong_speedup"] >= TARGETS["generation"] else "NOT met"
            lines.append(f"Target generation ({r['backend']}): 2 workers {r['strong_speedup']:.2f}x one "
                         f"(target >= {TARGETS['generation']}x): {met}")
    for r in result.get("ensf", {}).get("runs", []):
        if r["ranks"] == 2:
            met = "met" if r["speedup"] >= TARGETS["ensf"] else "NOT met"
            lines.append(f"Target EnSF: 2 ranks {r['speedup']:.2f}x one (target >= {TARGETS['ensf']}x): {met}")
    return "\n".join(lines) + ("\n(measured on a machine with load average "
                               f"{result['machine']['load_average']}; other work on the cores lowers them)"
                               if lines else "")


def write_plots(result: dict, out: Path) -> list[str]:
    written = []
    series = {}
    gen, ens = result.get("generation"), result.get("ensf")
    if gen:
        for backend in ("dask", "mpi"):
            series[f"generation, {backend} (strong)"] = [r["strong_speedup"] for r in gen["table"]
                                                         if r["backend"] == backend]
    if ens:
        series["EnSF, MPI ranks"] = [r["speedup"] for r in ens["runs"]]
    if series:
        counts = result["counts"]
        written.append(plots.scaling(counts, {k: np.asarray(v) for k, v in series.items()}, out.with_suffix(".png")))
    proj = result.get("projection", {})
    projected = {f"{name} (projection)": np.asarray([r["speedup"] for r in proj[name]["rows"]])
                 for name in ("generation", "ensf") if name in proj}
    if projected:
        written.append(plots.scaling(list(PROJECTED_NODES), projected,
                                     out.with_name(out.stem + "_projection.png")))
    return [str(p) for p in written]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small workloads (under 2 minutes)")
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling_cpu.json", help="JSON path (PNGs beside it)")
    parser.add_argument("--max-ranks", type=int, default=2, help="largest worker / rank count (default 2)")
    parser.add_argument("--only", choices=PARTS, action="append", help="run only this part (repeatable)")
    parser.add_argument("--gen-case", choices=("kolmogorov", "swe"), default="kolmogorov",
                        help="case of the generation workload (default kolmogorov)")
    parser.add_argument("--bandwidth-gbit", type=float, default=100.0, help="projection: link bandwidth [Gb/s]")
    parser.add_argument("--latency-us", type=float, default=2.0, help="projection: message latency [us]")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.max_ranks < 1:
        parser.error("--max-ranks must be >= 1")
    parts = args.only or PARTS
    size = SIZES["quick" if args.quick else "full"]
    counts = rank_counts(args.max_ranks)

    info = machine()
    print(f"Machine: {describe(info)}", flush=True)
    started = time.perf_counter()
    result = {"machine": info, "quick": args.quick, "counts": counts, "targets": TARGETS}
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        if "generation" in parts:
            result["generation"] = generation(args.gen_case, size["gen_preset"], counts, size["shards_per_worker"],
                                              Path(scratch))
    if "ensf" in parts:
        result["ensf"] = ensf(counts, **size["ensf"])
    if "kernel" in parts:
        result["kernel"] = kernel_sweep(size["kernel_K"], size["kernel_budget_s"])
    result["projection"] = project(result.get("generation"), result.get("ensf"), args.bandwidth_gbit,
                                   args.latency_us * 1e-6)
    text = tables(result)
    print("\n" + text)
    result["plots"] = write_plots(result, args.out)
    result["table"] = text
    result["wall_s"] = time.perf_counter() - started
    info["load_average_end"] = machine()["load_average"]
    write_json(args.out, result)
    print(f"wrote {', '.join([str(args.out), *result['plots']])}")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--ensf-rank":
        ensf_rank_main(sys.argv[2:])
    else:
        main()

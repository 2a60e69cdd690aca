"""Full-space EnSF with members sharded over MPI ranks: time per forecast + analysis cycle.

SWE at the paper's size by default (150 x 150, d = 67 500, K = 100 members, 40 solver
steps between observations on the 10 x 10 grid, 100 Euler steps, noise 0.1 of each
field's std). One run times the forecasts (T_d) and the analyses (T_f, Allgather
included) on N ranks; rank 0 stores the run in ``benchmarks/results/mpi_ensf.json``
under its size and rank count and prints every stored run of that size, with the
speed-up over 1 rank and the largest difference of the per-cycle analysis rel-RMSE
from the 1-rank run (round-off: the mixture products are blocked by rows per rank)::

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/mpi_ensf.py
    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 mpiexec -n 2 python benchmarks/mpi_ensf.py
    jobs/mpirun/bench.sh 2                 # both of the above, then the table
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import RESULTS, machine, markdown_table, write_json

from ldensf_hpc import cases
from ldensf_hpc.backend import rng_for
from ldensf_hpc.cases import load_config
from ldensf_hpc.experiment import prior_members
from ldensf_hpc.filters.base import Observation
from ldensf_hpc.filters.cycle import cycle
from ldensf_hpc.filters.ensf import EnSF
from ldensf_hpc.models import Standardized, trajectory
from ldensf_hpc.observe import grid_operator, observe
from ldensf_hpc.parallel.mpi import Sharding

RUNS = RESULTS / "mpi_ensf.json"


def run(args, comm) -> dict:
    """The filter works on fields standardised by the truth trajectory's mean and std per field."""
    cfg = load_config("paper", case="swe", overrides=[f"swe.n={args.n}"])
    model = cases.get("swe").model(cfg)
    gap = cfg.model.save_every * cfg.observe.every
    rng = rng_for(args.seed, 3)
    truth = trajectory(model, model.initial_state(model.sample_params(rng, 1)), None, args.cycles, gap)[0]
    filter_model = Standardized(model, truth.mean(axis=(0, 2, 3)), truth.std(axis=(0, 2, 3)))
    truth = filter_model.standardize(truth)
    op = grid_operator(truth.shape[1:], max(1, args.n // 10))
    std = np.full(op.m, cfg.observe.noise)
    obs = [Observation(op, observe(op, truth[c + 1], std, rng_for(args.seed, 0, c)), std) for c in range(args.cycles)]
    shards = Sharding(args.members, comm)
    state, params = prior_members(model, shards.rows, args.seed)
    comm.Barrier()
    t0 = time.perf_counter()
    result = cycle(filter_model, EnSF(n_steps=args.euler_steps), state, obs, np.full(args.cycles, gap),
                   params=params, seed=args.seed, sharding=shards, keep_members=False)
    wall = time.perf_counter() - t0
    if shards.rank != 0:
        return {}
    flat = truth[1:].reshape(args.cycles, -1)
    rel = np.linalg.norm(result.analysis.mean - flat, axis=1) / np.linalg.norm(flat, axis=1)
    return {"ranks": shards.size, "n": args.n, "members": args.members, "state_dim": int(truth[0].size),
            "cycles": args.cycles, "euler_steps": args.euler_steps, "steps_per_cycle": gap,
            "T_d_per_cycle": result.T_d / args.cycles, "T_f_per_cycle": result.T_f / args.cycles,
            "cycle_s": wall / args.cycles, "analysis_rel_rmse": rel.tolist(), "machine": machine()}


def table(runs: dict, n: int, members: int) -> str:
    rows = sorted((r for r in runs.values() if (r["n"], r["members"]) == (n, members)), key=lambda r: r["ranks"])
    one = next((r for r in rows if r["ranks"] == 1), None)
    cells = []
    for r in rows:
        speedup = f"{one['cycle_s'] / r['cycle_s']:.2f}" if one else "-"
        diff = (f"{np.max(np.abs(np.subtract(r['analysis_rel_rmse'], one['analysis_rel_rmse']))):.1e}"
                if one and len(one["analysis_rel_rmse"]) == len(r["analysis_rel_rmse"]) else "-")
        cells.append([r["ranks"], f"{r['T_d_per_cycle']:.2f}", f"{r['T_f_per_cycle']:.2f}", f"{r['cycle_s']:.2f}",
                      speedup, diff])
    return (f"SWE {n}x{n} (d = {3 * n * n}), K = {members}: seconds per forecast + analysis cycle\n"
            + markdown_table(["ranks", "T_d / cycle", "T_f / cycle", "cycle", "speed-up",
                              "max abs d(rel-RMSE) vs 1 rank"], cells))


def main() -> None:
    from mpi4py import MPI

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=150, help="grid points per direction (default 150)")
    parser.add_argument("--members", type=int, default=100, help="ensemble size K (default 100)")
    parser.add_argument("--cycles", type=int, default=1, help="forecast + analysis cycles (default 1)")
    parser.add_argument("--euler-steps", type=int, default=100, help="EnSF Euler steps (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    record = run(args, comm)
    if comm.rank != 0:
        return
    runs = json.loads(RUNS.read_text()) if RUNS.is_file() else {}
    runs[f"n{args.n}-K{args.members}-ranks{comm.size}"] = record
    write_json(RUNS, runs)
    print(table(runs, args.n, args.members))
    print(f"-> {RUNS}")


if __name__ == "__main__":
    main()

"""LD-EnSF paper Table 1 reproduced: T_d, T_f, T_r and D_s of EnSF, Latent-EnSF and LD-EnSF, K = 100.

A "full trajectory" (paper preset, the paper's sizes):

- SWE 150 x 150: 2000 solver steps; an analysis every 40 steps (50 analyses). LD-EnSF
  takes one latent step per 40 solver steps from s_{-1} = 0 to s_50: 51 latent steps and
  51 analyses (an observation at t = 0 too, as in the paper's Algorithm 2).
- Kolmogorov 150 x 150, dt 0.004: 100 warm-up frames + 200 stored frames of 10 steps; an
  observation every 5 stored frames (40; the last at 2950 steps): LD-EnSF 40 latent steps
  and 40 analyses, EnSF 39 analyses after the prior at the first.

Measured, for K members (100):

- EnSF T_d: the full solver for all members over the full trajectory (SWE Numba kernel,
  Kolmogorov scipy.fft with workers = cores); T_f: full-space EnSF analyses (d = 67 500 /
  45 000, 100 Euler steps, 10 x 10 observations of every field, noise 0.1 of each field's
  std, analyses fed back to the solver): the registered ``ensf`` method on a problem of the
  full trajectory's first ``n`` analyses, ``n`` as many as fit in ``--budget`` seconds after
  a one-analysis run; the rest is extrapolated linearly (per analysis, per solver step) and
  the table says "extrapolated from i/n". ``--budget 0`` measures everything (Kolmogorov
  EnSF: about an hour on 2 cores).
- Latent-EnSF (§2.3): T_d is EnSF's (the same full solver between analyses; the paper reports
  the same number). T_f: the registered ``latent_ensf`` method on the first analysis (state
  encoder on the K forecast members, observation encoder on the 10 x 10 observations, the
  latent EnSF update with d = latent (400), 100 steps on the Numba kernel, decoder on the K
  analysis members), best of 3 after an untimed one that compiles the kernel, times the
  number of analyses ("per analysis x n"); one more analysis is timed step by step for the
  breakdown. The coupled VAE has the config's sizes (``vae``) and untrained weights, like
  the LDNet below; the latent observation noise is 0.1.
- LD-EnSF: the registered ``ld_ensf`` method over all latent steps, once per kernel backend
  present (torch reference, Numba, blas (the full-space path, slow at this d), cuda_host (the
  CUDA C emulated on the host, for tests); CUDA when CuPy sees a GPU), with the LDNet and the LSTM
  encoder of the paper's sizes and untrained weights (timing needs no training) and a latent
  observation std of 0.1: T_d the LDNet dynamics F, T_f the latent analyses
  (d = latent + p = 12 / 10), T_e the LSTM encoding of the observation history (in the
  pipeline's T_f; not in Table 1). The problem asks for mean fields only (one R per time).
- Truth and units (all methods): a trajectory of the solver from a parameter drawn apart from
  the prior members; fields standardised by the truth trajectory's mean and std per field
  (untrained surrogates need no train split).
- T_r: the full fields of the final K members, and of one state (the latent ensemble mean):
  the LDNet's reconstruction network R on the grid (LD-EnSF), the VAE decoder (Latent-EnSF),
  without autograd. The paper's LD-EnSF T_r (GPU) fits one state: R of the Kolmogorov LDNet
  (15 x 500) costs 3.6 M multiply-adds per grid point, so 100 x 150 x 150 points are 16
  TFLOP, 80x what an RTX A6000 (39 TFLOP/s float32) does in 0.0054 s, while one state is 0.16
  TFLOP; compare the one-state rows with the paper. CPU here, and the GPU when torch sees one.

Prints a Markdown table beside the paper's numbers (AMD EPYC 7543, 32 cores; T_r on an RTX
A6000) and writes JSON (``benchmarks/results/timing_study_cpu.json``; with a GPU the file
is named after it)::

    python benchmarks/timing_study.py                     # paper sizes, both cases (~30 min, 2 cores)
    python benchmarks/timing_study.py --case swe --budget 0
    python benchmarks/timing_study.py --quick             # tiny preset, K = 20 (seconds)
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, best_of, describe, device_tag, machine, markdown_table, timed, write_json

from ldensf_hpc import cases, kernels
from ldensf_hpc.backend import cupy_available, rng_for
from ldensf_hpc.cases import load_config
from ldensf_hpc.data.dataset import Normalization
from ldensf_hpc.errors import ConfigError
from ldensf_hpc.experiment import prior_members, rel_error
from ldensf_hpc.filters import make_method
from ldensf_hpc.filters.base import Problem
from ldensf_hpc.filters.latent_ensf import decode_states, encode_observations, encode_states
from ldensf_hpc.models import trajectory
from ldensf_hpc.surrogate.encoder import LSTMEncoder
from ldensf_hpc.surrogate.ldnet import LDNet
from ldensf_hpc.surrogate.vae import CoupledVAE

PAPER = {  # Table 1, K = 100, full trajectory; AMD EPYC 7543 (32 cores), T_r on an RTX A6000
    ("swe", "EnSF"): {"T_d": 100.95, "T_f": 83.86, "T_r": None, "D_s": 67500},
    ("swe", "Latent-EnSF"): {"T_d": 100.95, "T_f": 0.66, "T_r": 0.78, "D_s": 400},
    ("swe", "LD-EnSF"): {"T_d": 0.050, "T_f": 0.37, "T_r": 0.00094, "D_s": 12},
    ("kolmogorov", "EnSF"): {"T_d": 10829.09, "T_f": 40.13, "T_r": None, "D_s": 45000},
    ("kolmogorov", "Latent-EnSF"): {"T_d": 10829.09, "T_f": 0.62, "T_r": 0.41, "D_s": 400},
    ("kolmogorov", "LD-EnSF"): {"T_d": 0.049, "T_f": 0.35, "T_r": 0.0054, "D_s": 10},
}
PRIOR_STREAM, TRUTH_STREAM = 1, 2  # rng_for(seed, STREAM): the parameter range of untrained nets, the truth


@dataclass(frozen=True)
class Trajectory:
    """What one full trajectory is, in solver steps, analyses and latent steps."""

    warmup_steps: int  # solver steps before the first forecast cycle (Kolmogorov: dropped frames)
    gap: int  # solver steps per forecast cycle = per latent step
    cycles: int  # EnSF forecast + analysis cycles
    latent_steps: int  # LD-EnSF latent steps = analyses (s_0 ... from s_{-1} = 0)

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.cycles * self.gap


def full_trajectory(cfg) -> Trajectory:
    """The case's full trajectory: observations every ``observe.every`` stored frames (one per latent
    step); EnSF analyses every observation after the first (the prior), LD-EnSF every one."""
    case = cases.get(cfg.case)
    schedule, every = case.schedule(cfg.model), cfg.observe.every
    gap = every * schedule.steps_per_frame
    latent_steps = len(range(0, schedule.n_frames, every))
    if latent_steps < 2:
        raise ConfigError(f"{cfg.case}: the trajectory is shorter than one observation gap ({gap} steps)")
    return Trajectory(schedule.warmup_steps, gap, latent_steps - 1, latent_steps)


def extrapolated(seconds: float, done: int, total: int) -> dict:
    """A timing of ``done`` of ``total`` equal units, extrapolated linearly to all of them."""
    return {"seconds": seconds * total / done, "measured_s": seconds, "measured_units": done, "units": total,
            "extrapolated": done < total}


# ---------------------------------------------------------------- EnSF (full space)


def untrained_normalization(model, case, seed: int) -> Normalization:
    """Surrogate scaling without data: the prior's parameter range (1000 draws) and the grid,
    fields unscaled (timing needs no training)."""
    x, y = case.coordinates(model, model.grid["n"], model.grid["n"])
    u = model.sample_params(rng_for(seed, PRIOR_STREAM, 2), 1000)
    n_fields = len(model.field_names)
    return Normalization(field_mean=(0.0,) * n_fields, field_std=(1.0,) * n_fields,
                         param_min=tuple(u.min(axis=0)), param_max=tuple(u.max(axis=0)),
                         xi_min=(x.min(), y.min()), xi_max=(x.max(), y.max()))


def untrained_surrogates(cfg, model, case, operator, seed: int) -> dict:
    """The LDNet, LSTM encoder and coupled VAE of the config's sizes with random weights."""
    norm = untrained_normalization(model, case, seed)
    torch.manual_seed(seed)
    ldnet = LDNet(cfg.ldnet, len(model.param_names), len(model.field_names), norm, model.field_names,
                  model.param_names).eval()
    spec = {"name": "grid", "options": {"stride": cfg.observe.stride, "periodic": operator.periodic}}
    encoder = LSTMEncoder(cfg.encoder, operator.m, ldnet.latent, ldnet.n_params, norm, spec,
                          cfg.ldnet.frame_every).eval()
    vae = CoupledVAE(cfg.vae, *operator.shape, operator.m, norm, spec).eval()
    return {"ldnet": ldnet, "encoder": encoder, "vae": vae}


@dataclass
class Setup:
    """The timing problem of one case: model, truth, prior and untrained surrogates."""

    cfg: object
    traj: Trajectory
    problem: Problem  # the full trajectory
    truth: np.ndarray  # (T, F, ny, nx) at the observation times
    T_warmup: float  # solver time of the prior members' warm-up

    def first(self, T: int, fields: str = "moments") -> tuple[Problem, object]:
        """The problem of the first ``T`` observation times, and its observations (noise 0.1)."""
        p = replace(self.problem, frames=self.problem.frames[:T], times=self.problem.times[:T],
                    gaps=self.problem.gaps[:T - 1], operators=self.problem.operators[:T], fields=fields)
        return p, p.observe(self.truth[:T], self.cfg.observe.noise, 0)


def setup(cfg, traj: Trajectory, K: int, seed: int) -> Setup:
    case = cases.get(cfg.case)
    model = case.model(cfg)
    warm = model.sample_params(rng_for(seed, 9), 1)
    model.step(model.initial_state(warm, rng_for(seed, 9)), warm, 1)  # compile kernels, plan FFTs
    true_params = model.sample_params(rng_for(seed, TRUTH_STREAM), 1)
    state = model.initial_state(true_params, rng_for(seed, TRUTH_STREAM, 1))
    if traj.warmup_steps:
        state = model.step(state, true_params, traj.warmup_steps)
    truth = trajectory(model, state, true_params, traj.latent_steps - 1, traj.gap)[0].astype(np.float64)
    t0 = time.perf_counter()
    start, params = prior_members(model, slice(0, K), seed, traj.warmup_steps)
    T_warmup = time.perf_counter() - t0
    operator = case.observation_operator(cfg, truth.shape[1:])
    x, y = case.coordinates(model, *truth.shape[-2:])
    frames = np.arange(traj.latent_steps) * cfg.observe.every
    nets = untrained_surrogates(cfg, model, case, operator, seed)
    problem = Problem(cfg=cfg, model=model, field_mean=truth.mean(axis=(0, 2, 3)), field_std=truth.std(axis=(0, 2, 3)),
                      start=start, prior_params=params, frames=frames, times=frames * traj.gap * model.dt,
                      gaps=np.full(traj.latent_steps - 1, traj.gap), operators=[operator] * traj.latent_steps,
                      x=x, y=y, seed=seed, surrogates=nets.__getitem__)
    return Setup(cfg, traj, problem, truth, T_warmup)


def time_ensf(s: Setup, budget: float) -> dict:
    """T_d and T_f of the registered full-space EnSF over the full trajectory (extrapolated past ``budget``)."""
    method = make_method("ensf", s.cfg)
    problem, obs = s.first(2)
    one = method.assimilate(problem, obs, seed=1)
    per = one.timings["T_f"]
    n = s.traj.cycles if not math.isfinite(budget) else int(min(s.traj.cycles, max(1, budget // max(per, 1e-9))))
    run = one if n == 1 else method.assimilate(*s.first(n + 1), seed=1)
    steps = s.traj.warmup_steps + n * s.traj.gap
    return {"T_d": extrapolated(s.T_warmup + run.timings["T_d"], steps, s.traj.total_steps),
            "T_f": extrapolated(run.timings["T_f"], n, s.traj.cycles), "D_s": method.state_dim(problem),
            "observations": problem.operators[0].m, "kernel": method.kernel,
            "final_rel_rmse": rel_error(run.mean[-1], s.truth[n]),
            "solver": {"backend": s.cfg.model.backend, "workers": getattr(s.cfg.model, "workers", None)}}


def kernel_backends() -> list[str]:
    """The EnSF kernel backends usable here: every registered one, cuda only with a CuPy GPU."""
    return [name for name in kernels.BACKENDS if name != "cuda" or cupy_available()]


def time_ld_ensf(s: Setup) -> dict:
    """T_d (LDNet F), T_f per kernel backend and T_e (LSTM encoding) of the registered LD-EnSF over the
    latent steps, with a latent observation std of 0.1 (mean fields only: one R per time)."""
    ldnet = s.problem.surrogate("ldnet")
    runs = {}
    for backend in kernel_backends():
        method = replace(make_method("ld_ensf", s.cfg), kernel=backend, latent_std=np.full(ldnet.latent + ldnet.n_params,
                                                                                             s.cfg.observe.noise))
        problem, obs = s.first(s.traj.latent_steps, fields="mean")
        run = method.assimilate(problem, obs, seed=1)
        t = run.timings
        runs[backend] = {"T_d": t["T_d"], "T_f": t["T_f"] - t["T_encode"], "T_e": t["T_encode"],
                         "T_r_mean_per_time": t["T_r"], "final_rel_rmse": rel_error(run.mean[-1], s.truth[-1]),
                         "final": run.params[-1]}
    final = runs["numba"] if "numba" in runs else next(iter(runs.values()))
    return {"D_s": method.state_dim(problem), "T_e": final["T_e"],
            "kernels": {b: {k: v for k, v in r.items() if k != "final"} for b, r in runs.items()}}


def time_latent_ensf(s: Setup) -> dict:
    """T_f of the registered Latent-EnSF: one analysis (encode, latent EnSF, decode) times the analyses,
    and the parts of one more timed one by one."""
    vae = s.problem.surrogate("vae")
    method = replace(make_method("latent_ensf", s.cfg), vae=vae, latent_std=s.cfg.observe.noise)
    problem, obs = s.first(2)
    times = [method.assimilate(problem, obs, seed=1).timings["T_f"] for _ in range(4)][1:]  # the first compiles
    per = min(times)
    fields = problem.filter_model.to_fields(problem.start)
    forecast = fields.reshape(len(fields), -1)
    y = problem.standardized(obs)[1].y
    z, t_enc, _ = timed(lambda: encode_states(vae, forecast))
    z_obs, t_obs, _ = timed(lambda: encode_observations(vae, y[None])[0])
    z_a, t_kernel, _ = timed(lambda: method.update(z, z_obs, obs_std=method.latent_std, seed=5))
    _, t_dec, _ = timed(lambda: decode_states(vae, z_a))
    return {"final": np.asarray(z_a), "D_s": method.state_dim(problem),
            "T_f": {"seconds": per * s.traj.cycles, "per_analysis": per, "analyses": s.traj.cycles,
                    "times_s": times, "parts_s": {"encode_states": t_enc, "encode_obs": t_obs,
                                                  "latent_ensf": t_kernel, "decode": t_dec}},
            "observations": problem.operators[0].m}


# ---------------------------------------------------------------- reconstruction


def time_reconstruction(net, decode, z: np.ndarray, budget: float, device: str) -> dict:
    """T_r: ``decode`` (latents ``(B, L)`` -> full fields) of one state (the ensemble mean) and of
    all K latents ``z``, ``net`` (the module ``decode`` runs) on ``device``, without autograd.

    The K-member time is extrapolated linearly from a block of members when ``K`` times the
    one-state time exceeds ``budget``.
    """
    net.to(device)
    s = torch.as_tensor(np.asarray(z, np.float32), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else None
    with torch.no_grad():
        one = best_of(lambda: decode(s.mean(dim=0, keepdim=True)), sync=sync)["best_s"]
        K = len(s)
        block = K if not math.isfinite(budget) or K * one <= budget else max(1, int(budget / one))
        members = best_of(lambda: decode(s[:block]), repeats=1 if block < K else 3,
                          warmup=0 if block < K else 1, sync=sync)["best_s"]
    net.to("cpu")
    return {"device": device, "one_state": one, "members": extrapolated(members, block, K)}


# ---------------------------------------------------------------- the table


def study(case: str, args) -> dict:
    """All timings of one case."""
    overrides = {"swe": ["swe.backend=numba"], "kolmogorov": ["kolmogorov.backend=scipy",
                                                              f"kolmogorov.workers={os.cpu_count() or 1}"]}[case]
    cfg = load_config(args.preset, case=case, overrides=overrides + [f"ensf.ensemble_size={args.members}"])
    traj = full_trajectory(cfg)
    budget = args.budget if args.budget > 0 else math.inf
    print(f"[{case}] {cfg.preset} preset, K = {args.members}: {traj.total_steps} solver steps "
          f"({traj.warmup_steps} warm-up), {traj.cycles} EnSF analyses every {traj.gap} steps, "
          f"{traj.latent_steps} latent steps", flush=True)
    s = setup(cfg, traj, args.members, args.seed)
    ensf = time_ensf(s, budget)
    print(f"[{case}] EnSF done", flush=True)
    latent = time_latent_ensf(s)
    print(f"[{case}] Latent-EnSF done", flush=True)
    ld = time_ld_ensf(s)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    ldnet, vae = s.problem.surrogate("ldnet"), s.problem.surrogate("vae")
    z = torch.as_tensor(ldnet.norm.scale_params(s.problem.prior_params), dtype=torch.float32)
    with torch.no_grad():
        final = ldnet.rollout(z, traj.latent_steps)[:, -1].numpy()  # the K members' last latent states
    x, y = s.problem.x, s.problem.y
    recon = [time_reconstruction(ldnet, lambda s_: ldnet.fields_on_grid(s_, x, y), final, budget, d) for d in devices]
    vae_recon = [time_reconstruction(vae, vae.decode, latent["final"], budget, d) for d in devices]
    return {"preset": cfg.preset, "trajectory": {**asdict(traj), "total_steps": traj.total_steps},
            "members": args.members, "ensf": ensf,
            "latent_ensf": {"D_s": latent["D_s"], "T_d": ensf["T_d"]["seconds"], "T_f": latent["T_f"],
                            "T_r": vae_recon, "observations": latent["observations"], "vae": asdict(cfg.vae)},
            "ld_ensf": {"D_s": ld["D_s"], "T_e": ld["T_e"], "kernels": ld["kernels"], "T_r": recon,
                        "ldnet": asdict(cfg.ldnet), "encoder": asdict(cfg.encoder)}}


def how(t: dict) -> str:
    if t["extrapolated"]:
        return f"extrapolated from {t['measured_units']}/{t['units']} ({t['measured_s']:.3g} s measured)"
    return "measured"


def table_rows(case: str, r: dict) -> list[list]:
    """Rows: case, method, quantity, ours, paper, ours / paper, how it was obtained."""
    ensf, vae, latent = (PAPER[(case, m)] for m in ("EnSF", "Latent-EnSF", "LD-EnSF"))

    def row(method, quantity, ours, paper, note):
        ratio = ours / paper if ours is not None and paper else None
        return [case, method, quantity, ours, "-" if paper is None else f"{paper:g}", ratio, note]

    e, le, ld = r["ensf"], r["latent_ensf"], r["ld_ensf"]
    solver = e["solver"]["backend"] + (f", {e['solver']['workers']} workers" if e["solver"]["workers"] else "")
    rows = [row("EnSF", "T_d", e["T_d"]["seconds"], ensf["T_d"], f"{solver}; {how(e['T_d'])}"),
            row("EnSF", "T_f", e["T_f"]["seconds"], ensf["T_f"], how(e["T_f"])),
            row("EnSF", "T_r", None, ensf["T_r"], "none needed (full state)"),
            row("EnSF", "D_s", e["D_s"], ensf["D_s"], f"{e['observations']} observations")]

    def reconstruction_rows(method, records, paper, what):
        out = []
        for rec in records:
            out.append(row(method, f"T_r ({rec['device']}, 1 state)", rec["one_state"], paper, what))
            out.append(row(method, f"T_r ({rec['device']}, {r['members']} members)", rec["members"]["seconds"],
                           paper, how(rec["members"])))
        return out

    tf, parts = le["T_f"], le["T_f"]["parts_s"]
    rows.append(row("Latent-EnSF", "T_d", le["T_d"], vae["T_d"],
                    "= EnSF's T_d (the same full solver), as in the paper"))
    rows.append(row("Latent-EnSF", "T_f", tf["seconds"], vae["T_f"],
                    f"per analysis x {tf['analyses']} ({tf['per_analysis']:.3g} s, best of {len(tf['times_s'])}; "
                    f"encode members {parts['encode_states']:.2g} s, encode y {parts['encode_obs']:.2g} s, "
                    f"latent EnSF (numba) {parts['latent_ensf']:.2g} s, decode {parts['decode']:.2g} s)"))
    rows += reconstruction_rows("Latent-EnSF", le["T_r"], vae["T_r"], "VAE decoder (untrained)")
    rows.append(row("Latent-EnSF", "D_s", le["D_s"], vae["D_s"], f"VAE latent; {le['observations']} observations"))
    runs = ld["kernels"]
    first = "numba" if "numba" in runs else next(iter(runs))
    rows.append(row("LD-EnSF", "T_d", runs[first]["T_d"], latent["T_d"], f"LDNet F (untrained), {first} run"))
    rows += [row("LD-EnSF", f"T_f ({backend})", k["T_f"], latent["T_f"], "latent analyses")
             for backend, k in runs.items()]
    rows.append(row("LD-EnSF", "T_e", ld["T_e"], None, "LSTM encoding of the history (in the pipeline's T_f)"))
    rows += reconstruction_rows("LD-EnSF", ld["T_r"], latent["T_r"], "R on the full grid")
    rows.append(row("LD-EnSF", "D_s", ld["D_s"], latent["D_s"], "latent + parameters"))
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=("swe", "kolmogorov", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="tiny preset, K = 20, no budget (seconds)")
    parser.add_argument("--preset", default=None, help="config preset (default: paper; tiny with --quick)")
    parser.add_argument("--members", type=int, default=None, help="ensemble size K (default 100; 20 with --quick)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds measured per EnSF run and per K-member T_r before extrapolating "
                             "(default 300; 0: measure everything, the default with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default benchmarks/results/timing_study_<cpu|gpu name>.json)")
    args = parser.parse_args(argv)
    args.preset = args.preset or ("tiny" if args.quick else "paper")
    args.members = args.members or (20 if args.quick else 100)
    args.budget = args.budget if args.budget is not None else (0.0 if args.quick else 300.0)
    if args.members < 2:
        parser.error("--members must be >= 2")

    info = machine()
    print(f"Machine: {describe(info)}", flush=True)
    started = time.perf_counter()
    cases = ("swe", "kolmogorov") if args.case == "all" else (args.case,)
    results = {case: study(case, args) for case in cases}
    rows = [row for case in cases for row in table_rows(case, results[case])]
    table = markdown_table(["case", "method", "quantity", "ours", "paper", "ours / paper", "how"], rows)
    print(f"\nTable 1 (K = {args.members}, full trajectory, {args.preset} preset; seconds, D_s a dimension) on "
          f"{info['cpu']}, {info['cores']} cores, GPU {info['gpu'] or 'none'}; paper: AMD EPYC 7543 32 cores, "
          "T_r on an RTX A6000")
    print(table)
    for case in cases:
        e, ld = results[case]["ensf"], results[case]["ld_ensf"]["kernels"]
        fastest = min(k["T_d"] for k in ld.values())
        print(f"{case}: T_d EnSF / LD-EnSF = {e['T_d']['seconds'] / fastest:.3g} "
              f"(paper {PAPER[(case, 'EnSF')]['T_d'] / PAPER[(case, 'LD-EnSF')]['T_d']:.3g})")
        tf = results[case]["latent_ensf"]["T_f"]["seconds"]
        if "numba" in ld:
            print(f"{case}: T_f Latent-EnSF / LD-EnSF (numba) = {tf / ld['numba']['T_f']:.3g} "
                  f"(paper {PAPER[(case, 'Latent-EnSF')]['T_f'] / PAPER[(case, 'LD-EnSF')]['T_f']:.3g})")
    info["load_average_end"] = machine()["load_average"]
    out = args.out or RESULTS / f"timing_study_{device_tag(info['gpu'])}.json"
    write_json(out, {"machine": info, "command": "python benchmarks/timing_study.py " + " ".join(argv or sys.argv[1:]),
                     "quick": args.quick, "preset": args.preset, "members": args.members,
                     "budget_s": args.budget, "wall_s": time.perf_counter() - started,
                     "paper": {f"{c}/{m}": v for (c, m), v in PAPER.items()}, "cases": results, "table": table})
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()

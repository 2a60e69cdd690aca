"""LD-EnSF paper Table 1 reproduced: T_d, T_f, T_r and D_s of EnSF, Latent-EnSF and LD-EnSF, K = 100.

A "full trajectory" (paper preset, the paper's sizes):

- SWE 150 x 150: 2000 solver steps; an analysis every 40 steps (50 analyses). LD-EnSF
  takes one latent step per 40 solver steps from s_{-1} = 0 to s_50: 51 latent steps and
  51 analyses (an observation at t = 0 too, as in the paper's Algorithm 2).
- Kolmogorov 150 x 150, dt 0.004: 100 warm-up frames + 200 frames of 10 steps = 300 frames
  (3000 steps); an analysis every 5 frames after the warm-up (40 analyses). LD-EnSF: 40
  latent steps and 40 analyses.

Measured, for K members (100):

- EnSF T_d: the full solver for all members over the full trajectory (SWE Numba kernel,
  Kolmogorov scipy.fft with workers = cores); T_f: full-space EnSF analyses (d = 67 500 /
  45 000, 100 Euler steps, 10 x 10 observations of every field, noise 0.1 in standardised
  units, analyses fed back to the solver). Forecast and analysis alternate as in
  ``filters.base.assimilate``. Analyses stop once T_f passes ``--budget`` seconds (the
  forecasts then run on freely), forecasts once T_d does; the rest is extrapolated linearly
  (per analysis, per solver step) and the table says "extrapolated from i/n". ``--budget 0``
  measures everything (Kolmogorov EnSF: about an hour on 2 cores).
- Latent-EnSF (§2.3): T_d is EnSF's (the same full solver between analyses; the paper reports
  the same number). T_f: one analysis through ``LatentEnSF.analyse`` (state encoder on the K
  forecast members, observation encoder on the 10 x 10 observations, the latent EnSF update
  with d = latent (400), 100 steps on the Numba kernel, decoder on the K analysis members),
  best of 3 after an untimed one that compiles the kernel, times the number of analyses
  ("per analysis x n"); one more analysis is timed step by step for the breakdown. The
  coupled VAE has the config's sizes (``vae``) and untrained weights, like the LDNet below;
  members are prior states standardised per field over the ensemble (EnSF's units), the
  latent observation noise is 0.1.
- LD-EnSF T_d: the LDNet dynamics F (paper sizes, untrained weights: timing needs no
  training) over the latent steps; T_f: latent analyses (d = latent + p = 12 / 10) through
  every kernel backend present (torch reference, Numba; CUDA when CuPy sees a GPU); T_e:
  the LSTM encoding of the observation history (in the pipeline's T_f; not in Table 1).
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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from common import RESULTS, best_of, describe, device_tag, machine, markdown_table, timed, write_json
from ldensf_hpc import kernels
from ldensf_hpc.backend import cupy_available, rng_for
from ldensf_hpc.config import ConfigError, load_config
from ldensf_hpc.data.dataset import Normalization
from ldensf_hpc.data.generate import case_layout, frame_schedule
from ldensf_hpc.filters.base import Observation, assimilate
from ldensf_hpc.filters.ensf import EnSF
from ldensf_hpc.filters.latent_ensf import LatentEnSF, decode_states, encode_observations, encode_states
from ldensf_hpc.filters.ld_ensf import EPS_ALPHA_BY_CASE, LatentModel, LDEnSF, latent_operator, latent_truth
from ldensf_hpc.models import make_model
from ldensf_hpc.observe import grid_operator, observe
from ldensf_hpc.parallel.mpi import check_stable
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
OBS_STREAM, PRIOR_STREAM, TRUTH_STREAM, FILTER_STREAM = 0, 1, 2, 3


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


FORECAST_STEPS = {  # solver steps after the warm-up
    "swe": lambda cfg: cfg.swe.n_steps,
    "kolmogorov": lambda cfg: cfg.kolmogorov.n_frames * cfg.kolmogorov.steps_per_frame,
}


def ldnet_config(cfg):
    return getattr(cfg, f"ldnet_{cfg.case}")


def encoder_config(cfg):
    return getattr(cfg, f"encoder_{cfg.case}")


def full_trajectory(cfg) -> Trajectory:
    """The case's full trajectory: observations every ``frame_every`` stored frames (LDNet step)."""
    schedule, frame_every = frame_schedule(cfg), ldnet_config(cfg).frame_every
    gap = frame_every * schedule.steps_per_frame
    if FORECAST_STEPS[cfg.case](cfg) < gap:
        raise ConfigError(f"{cfg.case}: the trajectory is shorter than one observation gap ({gap} steps)")
    return Trajectory(schedule.warmup_steps, gap, FORECAST_STEPS[cfg.case](cfg) // gap,
                      len(range(0, schedule.n_frames, frame_every)))


def extrapolated(seconds: float, done: int, total: int) -> dict:
    """A timing of ``done`` of ``total`` equal units, extrapolated linearly to all of them."""
    return {"seconds": seconds * total / done, "measured_s": seconds, "measured_units": done, "units": total,
            "extrapolated": done < total}


# ---------------------------------------------------------------- EnSF (full space)


def time_ensf(cfg, traj: Trajectory, K: int, budget: float, seed: int) -> dict:
    """T_d and T_f of full-space EnSF over the full trajectory (extrapolated past ``budget`` seconds).

    Fields are standardised by the mean and std of each field over the first forecast
    ensemble (members and grid points), the filter's units. ``first_analysis`` holds the
    standardised forecast ``(K, d)`` and the observation of the first analysis.
    """
    model = make_model(cfg.case, cfg)
    params = model.sample_params(rng_for(seed, PRIOR_STREAM), K)
    state = model.initial_state(params, rng_for(seed, PRIOR_STREAM, 1))
    true_params = model.sample_params(rng_for(seed, TRUTH_STREAM), 1)
    truth = model.initial_state(true_params, rng_for(seed, TRUTH_STREAM, 1))
    filt = EnSF.from_config(cfg)
    model.step(state[:1], params[:1], 1)  # load compiled kernels and FFT plans

    # warm-up (Kolmogorov): its share of the T_d budget, in chunks of one cycle's steps
    warm_done, warm_s = 0, 0.0
    while warm_done < traj.warmup_steps and (warm_done == 0 or warm_s < budget * traj.warmup_steps / traj.total_steps):
        n = min(traj.gap, traj.warmup_steps - warm_done)
        t0 = time.perf_counter()
        state = model.step(state, params, n)
        warm_s += time.perf_counter() - t0
        truth = model.step(truth, true_params, n)
        warm_done += n

    # cycles: analyses while T_f is within the budget, forecasts (free-running once the
    # analyses stop) while T_d is
    T_d = T_f = 0.0
    cycles = analyses = 0
    scale = op = std = None
    while cycles < traj.cycles:
        analyse = analyses == 0 or T_f < budget
        if not analyse and warm_s + T_d >= budget:
            break
        t0 = time.perf_counter()
        state = model.step(state, params, traj.gap)
        T_d += time.perf_counter() - t0
        cycles += 1
        if not analyse:
            continue
        truth = model.step(truth, true_params, traj.gap)
        fields = np.asarray(model.to_fields(state))
        if scale is None:
            scale = (fields.mean(axis=(0, 2, 3))[:, None, None], fields.std(axis=(0, 2, 3))[:, None, None])
            op = grid_operator(fields.shape[1:], cfg.observe.stride, periodic=cfg.case == "kolmogorov")
            std = np.full(op.m, cfg.observe.noise)
            check_stable(filt, std)
        true_fields = (np.asarray(model.to_fields(truth))[0] - scale[0]) / scale[1]
        y = observe(op, true_fields.reshape(-1), std, rng_for(seed, OBS_STREAM, analyses))
        forecast, obs = ((fields - scale[0]) / scale[1]).reshape(K, -1), Observation(op, y, std)
        if analyses == 0:
            first = (forecast, obs)
        t0 = time.perf_counter()
        analysis = filt.analyse(forecast, obs, rng_for(seed, FILTER_STREAM, analyses))
        T_f += time.perf_counter() - t0
        state = model.from_fields(analysis.reshape(fields.shape) * scale[1] + scale[0])
        analyses += 1

    steps_done = warm_done + cycles * traj.gap
    return {"T_d": extrapolated(warm_s + T_d, steps_done, traj.total_steps),
            "T_f": extrapolated(T_f, analyses, traj.cycles),
            "D_s": int(np.prod(fields.shape[1:])), "observations": op.m, "first_analysis": first,
            "solver": {"backend": getattr(cfg, cfg.case).backend,
                       "workers": cfg.kolmogorov.workers if cfg.case == "kolmogorov" else None}}


# ---------------------------------------------------------------- LD-EnSF (latent space)


def grid_coordinates(model, case: str):
    """Physical 1-D coordinates ``x (nx,)``, ``y (ny,)`` of the stored fields."""
    n, dx = model.grid["n"], model.grid["dx"]
    coords = (np.arange(n) + case_layout(case).offset) * dx
    return coords, coords


def untrained_normalization(model, case: str, seed: int) -> Normalization:
    """Surrogate scaling without data: the prior's parameter range (1000 draws) and the grid,
    fields unscaled (timing needs no training)."""
    x, y = grid_coordinates(model, case)
    u = model.sample_params(rng_for(seed, PRIOR_STREAM, 2), 1000)
    n_fields = len(model.field_names)
    return Normalization(field_mean=(0.0,) * n_fields, field_std=(1.0,) * n_fields,
                         param_min=tuple(u.min(axis=0)), param_max=tuple(u.max(axis=0)),
                         xi_min=(x.min(), y.min()), xi_max=(x.max(), y.max()))


def untrained_ldnet(cfg, model, seed: int) -> LDNet:
    """An LDNet of the config's sizes with random weights (:func:`untrained_normalization`)."""
    norm = untrained_normalization(model, cfg.case, seed)
    torch.manual_seed(seed)
    return LDNet(ldnet_config(cfg), len(model.param_names), len(model.field_names), norm, model.field_names,
                 model.param_names).eval()


def kernel_backends() -> list[str]:
    """The latent-kernel backends usable here: reference and numba; cuda with a CuPy GPU."""
    return [name for name in kernels.BACKENDS if name != "cuda" or cupy_available()]


def time_ld_ensf(cfg, traj: Trajectory, K: int, seed: int) -> dict:
    """T_d (LDNet F), T_f per kernel backend and T_e (LSTM encoding) over the latent steps.

    The truth is the LDNet trajectory at a true parameter; latent observations are that
    truth plus noise 0.1 in filter units, each component standardised by the mean and
    std of a free prior run of the same LDNet (all members, all latent steps).
    """
    model = make_model(cfg.case, cfg)
    ldnet = untrained_ldnet(cfg, model, seed)
    params = model.sample_params(rng_for(seed, PRIOR_STREAM), K)
    true_params = model.sample_params(rng_for(seed, TRUTH_STREAM), 1)
    free = LatentModel(ldnet)
    z, run = free.initial_state(params), []
    for _ in range(traj.latent_steps):
        z = free.step(z)
        run.append(z)
    run = np.concatenate(run)
    latent = LatentModel(ldnet, run.mean(axis=0), np.maximum(run.std(axis=0), 1e-6))
    truth = np.concatenate([latent.initial_state(true_params),
                            latent_truth(ldnet, true_params[0], traj.latent_steps)])  # s_{-1} = 0, s_0, ...
    op = latent_operator(latent)
    std = np.full(op.m, cfg.observe.noise)
    prior = latent.initial_state(params)
    eps_alpha = EPS_ALPHA_BY_CASE[cfg.case]

    runs = {}
    for backend in kernel_backends():
        filt = LDEnSF(n_steps=cfg.ensf.n_steps, eps_alpha=eps_alpha, mixture=cfg.ensf.mixture, kernel=backend)
        warm = latent.to_fields(latent.step(prior))
        filt.analyse(warm, Observation(op, latent.to_fields(truth[1]), std), rng_for(seed, FILTER_STREAM))  # compile
        res = assimilate(latent, filt, prior, latent.to_fields(truth), op, std, 1, seed=seed)
        runs[backend] = {"T_d": res.T_d, "T_f": res.T_f,
                         "final_rel_rmse": float(res.analysis_rel_rmse[-1]), "ensemble": res.ensemble}

    y_op = grid_operator((len(model.field_names), model.grid["n"], model.grid["n"]), cfg.observe.stride)
    encoder = LSTMEncoder(encoder_config(cfg), y_op.m, ldnet.latent, ldnet.n_params, ldnet.norm).eval()
    history = torch.as_tensor(np.random.default_rng(seed).standard_normal((1, traj.latent_steps, y_op.m)),
                              dtype=torch.float32)
    with torch.no_grad():
        T_e = best_of(lambda: encoder.encode(history))

    final = runs["numba"]["ensemble"] if "numba" in runs else next(iter(runs.values()))["ensemble"]
    return {"ldnet": ldnet, "model": model, "final": final, "D_s": int(op.d), "T_e": T_e["best_s"],
            "kernels": {b: {k: v for k, v in r.items() if k != "ensemble"} for b, r in runs.items()}}


# ---------------------------------------------------------------- Latent-EnSF (VAE latent space)


def untrained_vae(cfg, model, operator, seed: int) -> CoupledVAE:
    """A coupled VAE of the config's sizes (``cfg.vae``) with random weights, for states of
    ``model`` and observations of the grid ``operator`` (:func:`untrained_normalization`)."""
    norm = untrained_normalization(model, cfg.case, seed)
    spec = {"name": "grid", "options": {"stride": cfg.observe.stride, "periodic": operator.periodic}}
    torch.manual_seed(seed)
    return CoupledVAE(cfg.vae, *operator.shape, operator.m, norm, spec).eval()


def time_latent_ensf(cfg, traj: Trajectory, forecast: np.ndarray, obs: Observation, seed: int) -> dict:
    """T_f of Latent-EnSF: one analysis (encode, latent EnSF, decode) times the trajectory's analyses.

    ``forecast (K, d)`` and ``obs`` are EnSF's first (standardised fields, the 10 x 10 grid);
    the latent observation noise is ``cfg.observe.noise``.
    """
    vae = untrained_vae(cfg, make_model(cfg.case, cfg), obs.operator, seed)
    filt = LatentEnSF(vae, cfg.observe.noise, n_steps=cfg.ensf.n_steps, eps_alpha=cfg.ensf.eps_alpha,
                      eps_beta=cfg.ensf.eps_beta, mixture=cfg.ensf.mixture, score_clip=cfg.ensf.score_clip,
                      kernel="numba")
    rng = rng_for(seed, FILTER_STREAM)
    analysis = best_of(lambda: filt.analyse(forecast, obs, rng))  # the untimed first call compiles the kernel

    z, t_enc, _ = timed(lambda: encode_states(vae, forecast))
    z_obs, t_obs, _ = timed(lambda: encode_observations(vae, obs.y[None])[0])
    z_a, t_kernel, _ = timed(lambda: kernels.ensf_update(
        z, z_obs, filt.latent_std, n_steps=filt.n_steps, eps_alpha=filt.eps_alpha, eps_beta=filt.eps_beta,
        mixture=filt.mixture, score_clip=filt.score_clip, seed=int(rng.integers(0, 2**63)), backend=filt.kernel))
    _, t_dec, _ = timed(lambda: decode_states(vae, z_a))
    per = analysis["best_s"]
    return {"vae": vae, "final": np.asarray(z_a), "D_s": vae.latent,
            "T_f": {"seconds": per * traj.cycles, "per_analysis": per, "analyses": traj.cycles,
                    "times_s": analysis["times_s"],
                    "parts_s": {"encode_states": t_enc, "encode_obs": t_obs, "latent_ensf": t_kernel,
                                "decode": t_dec}},
            "observations": obs.operator.m}


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
    overrides = ["swe.backend=numba", "kolmogorov.backend=scipy", f"kolmogorov.workers={os.cpu_count() or 1}"]
    cfg = load_config(args.preset, case=case, overrides=overrides)
    traj = full_trajectory(cfg)
    budget = args.budget if args.budget > 0 else math.inf
    print(f"[{case}] {cfg.preset} preset, K = {args.members}: {traj.total_steps} solver steps "
          f"({traj.warmup_steps} warm-up), {traj.cycles} EnSF analyses every {traj.gap} steps, "
          f"{traj.latent_steps} latent steps", flush=True)
    ensf = time_ensf(cfg, traj, args.members, budget, args.seed)
    print(f"[{case}] EnSF done", flush=True)
    latent = time_latent_ensf(cfg, traj, *ensf.pop("first_analysis"), args.seed)
    print(f"[{case}] Latent-EnSF done", flush=True)
    ld = time_ld_ensf(cfg, traj, args.members, args.seed)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    ldnet, vae = ld["ldnet"], latent["vae"]
    x, y = grid_coordinates(ld["model"], case)
    recon = [time_reconstruction(ldnet, lambda s: ldnet.fields_on_grid(s, x, y), ld["final"][:, :ldnet.latent],
                                 budget, d) for d in devices]
    vae_recon = [time_reconstruction(vae, vae.decode, latent["final"], budget, d) for d in devices]
    return {"preset": cfg.preset, "trajectory": {**asdict(traj), "total_steps": traj.total_steps},
            "members": args.members, "ensf": ensf,
            "latent_ensf": {"D_s": latent["D_s"], "T_d": ensf["T_d"]["seconds"], "T_f": latent["T_f"],
                            "T_r": vae_recon, "observations": latent["observations"], "vae": asdict(cfg.vae)},
            "ld_ensf": {"D_s": ld["D_s"], "T_e": ld["T_e"], "kernels": ld["kernels"], "T_r": recon,
                        "ldnet": asdict(ldnet_config(cfg)), "encoder": asdict(encoder_config(cfg))}}


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
    write_json(out, {"machine": info, "quick": args.quick, "preset": args.preset, "members": args.members,
                     "budget_s": args.budget, "wall_s": time.perf_counter() - started,
                     "paper": {f"{c}/{m}": v for (c, m), v in PAPER.items()}, "cases": results, "table": table})
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()

"""What the LDNet at the paper's sizes costs on this machine: training (LD-EnSF paper Table 3) and T_r.

One optimiser step (latent rollout over the kept frames, R at random points, MSE,
backward, Adam) is timed at the paper's network sizes on ``--points`` points per frame
and extrapolated linearly in the points (the cost is per point) to the paper's 5000,
then to an epoch (train trajectories / batch size steps) and to the two-stage schedule
(``epochs`` + ``retrain_epochs`` of the config); points per second are reported. T_r is
the reconstruction of one full field (R on the case's whole grid, one latent state, no
autograd), beside the paper's 0.94 ms (SWE) and 5.4 ms (Kolmogorov) on an RTX A6000.
Untrained weights: timing needs none. Runs on CUDA when torch sees a GPU, else the CPU, at every
``train.precision`` the device takes (fp32 and bf16 autocast; TF32 on CUDA); the case's headline
figures are at the training default (``auto``: TF32 on CUDA, fp32 on the CPU).

    python benchmarks/training_cost.py            # writes results/training_cost_<cpu|gpu>.json
"""
from __future__ import annotations

import argparse
import sys

import torch
from common import RESULTS, best_of, describe, device_tag, gpu_name, machine, markdown_table, write_json

from ldensf_hpc import cases
from ldensf_hpc.cases import load_config
from ldensf_hpc.data.dataset import Normalization
from ldensf_hpc.data.generate import frame_schedule
from ldensf_hpc.errors import BackendError
from ldensf_hpc.surrogate.ldnet import LDNet
from ldensf_hpc.surrogate.training import PRECISIONS, arithmetic, resolve_precision

PAPER_T_R_S = {"swe": 0.94e-3, "kolmogorov": 5.4e-3}  # one full field, RTX A6000 (Table 1)


def precisions(device) -> list[str]:
    """The ``train.precision`` values ``device`` can honour (``auto`` aside)."""
    out = []
    for name in PRECISIONS[1:]:
        try:
            out.append(resolve_precision(name, device))
        except BackendError:  # tf32 without CUDA
            continue
    return out


def step_seconds(cfg, case: str, points: int, device, precision: str) -> tuple[dict, dict, LDNet]:
    """Best wall seconds of one optimiser step at ``points`` points per frame in ``precision``, the sizes
    and the network timed."""
    lcfg = cfg.ldnet
    model = cases.get(case).model(cfg)
    p, F = len(model.param_names), len(model.field_names)
    frames = len(range(0, frame_schedule(cfg).n_frames, lcfg.frame_every))
    norm = Normalization((0.0,) * F, (1.0,) * F, (-1.0,) * p, (1.0,) * p, (-1.0, -1.0), (1.0, 1.0))
    net = LDNet(lcfg, p, F, norm).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lcfg.lr)
    B = lcfg.batch_size
    u = torch.rand(B, p, device=device) * 2 - 1
    xi = torch.rand(B, frames, points, 2, device=device) * 2 - 1
    target = torch.randn(B, frames, points, F, device=device)

    def step():
        opt.zero_grad()
        with arithmetic(precision, device):
            loss = torch.nn.functional.mse_loss(net.reconstruct(net.rollout(u, frames), xi), target)
        loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    sizes = {"latent": lcfg.latent, "F": f"{lcfg.dyn_depth}x{lcfg.dyn_width}",
             "R": f"{lcfg.rec_depth}x{lcfg.rec_width}", "frames": frames, "batch": B, "points_timed": points,
             "epochs": lcfg.epochs + lcfg.retrain_epochs}
    return best_of(step, repeats=2, warmup=1, sync=sync), sizes, net


def reconstruction_seconds(net, n: int, device) -> dict:
    """T_r: best and median seconds of R on the full n x n grid for one latent state."""
    s = torch.randn(1, net.latent, device=device)
    x = y = torch.linspace(-1.0, 1.0, n, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    with torch.no_grad():
        return best_of(lambda: net.fields_on_grid(s, x, y), repeats=5, warmup=2, sync=sync)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=250, help="points per frame actually timed")
    parser.add_argument("--gpu-only", action="store_true", help="time nothing without a CUDA GPU")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    info = machine()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    command = "python benchmarks/training_cost.py " + " ".join(argv or sys.argv[1:])
    if args.gpu_only and device.type != "cuda":
        print("no CUDA GPU (torch): nothing timed")
        out = args.out or RESULTS / "training_cost_gpu.json"
        write_json(out, {"machine": info, "command": command, "skipped": "no CUDA GPU (torch)", "cases": {}})
        return {}
    print(describe(info))
    rows, record = [], {"machine": info, "device": str(device), "cases": {}, "command": command}
    default = resolve_precision("auto", device)
    for case in ("swe", "kolmogorov"):
        cfg = load_config("paper", case=case)
        n_train = round(cfg.data.n_trajectories * cfg.data.split[0])
        full_points = cfg.data.points_per_frame
        record["cases"][case] = {"precisions": {}}
        for precision in precisions(device):
            timing, sizes, net = step_seconds(cfg, case, args.points, device, precision)
            points_per_s = sizes["batch"] * sizes["frames"] * args.points / timing["best_s"]
            step = timing["best_s"] * full_points / args.points
            epoch = step * n_train / sizes["batch"]
            schedule_h = epoch * sizes["epochs"] / 3600
            figures = {"step_s_timed": timing["best_s"], "step_s": step, "epoch_s": epoch,
                       "schedule_hours": schedule_h, "points_per_s": points_per_s}
            record["cases"][case]["precisions"][precision] = figures
            if precision == default:  # T_r once, in fp32 as assimilation runs R
                t_r = reconstruction_seconds(net, cfg.model.n, device)
                record["cases"][case].update(**sizes, **figures, precision=precision, points_per_frame=full_points,
                                             train_trajectories=n_train, T_r_one_field_s=t_r["best_s"],
                                             T_r_median_s=t_r["median_s"], paper_T_r_s=PAPER_T_R_S[case])
            rows.append([case, precision, sizes["latent"], sizes["F"], sizes["R"], sizes["frames"], sizes["batch"],
                         timing["best_s"], f"{points_per_s:.3g}", step, epoch, sizes["epochs"], schedule_h,
                         f"{t_r['best_s'] * 1e3:.3g}" if precision == default else "-",
                         f"{PAPER_T_R_S[case] * 1e3:g}"])
    print(markdown_table(["case", "precision", "latent", "F", "R", "frames", "batch", f"step at {args.points} pts [s]",
                          "points/s", f"step at {full_points} pts [s]", "epoch [s]", "epochs", "schedule [h]",
                          "T_r one field [ms]", "paper T_r [ms]"], rows))
    print("Extrapolated linearly in the points per frame; the schedule is the config's two stages; "
          f"training's default precision here: {default}.")
    out = args.out or RESULTS / f"training_cost_{device_tag(gpu_name())}.json"
    write_json(out, record)
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()

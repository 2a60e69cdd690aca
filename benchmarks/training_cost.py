"""What training the LDNet at the paper's sizes costs on this machine (LD-EnSF paper Table 3).

One optimiser step (latent rollout over the kept frames, R at random points, MSE,
backward, Adam) is timed at the paper's network sizes on ``--points`` points per frame
and extrapolated linearly in the points (the cost is per point) to the paper's 5000,
then to an epoch (train trajectories / batch size steps) and to the two-stage schedule
(``epochs`` + ``retrain_epochs`` of the config). Untrained weights: timing needs none.

    python benchmarks/training_cost.py            # writes results/training_cost_cpu.json
"""
from __future__ import annotations

import argparse

import torch
from common import RESULTS, best_of, describe, device_tag, gpu_name, machine, markdown_table, write_json

from ldensf_hpc import cases
from ldensf_hpc.cases import load_config
from ldensf_hpc.data.dataset import Normalization
from ldensf_hpc.data.generate import frame_schedule
from ldensf_hpc.surrogate.ldnet import LDNet


def step_seconds(cfg, case: str, points: int, device) -> tuple[dict, dict]:
    """Best wall seconds of one optimiser step at ``points`` points per frame, and the sizes."""
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
        loss = torch.nn.functional.mse_loss(net.reconstruct(net.rollout(u, frames), xi), target)
        loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    sizes = {"latent": lcfg.latent, "F": f"{lcfg.dyn_depth}x{lcfg.dyn_width}",
             "R": f"{lcfg.rec_depth}x{lcfg.rec_width}", "frames": frames, "batch": B, "points_timed": points,
             "epochs": lcfg.epochs + lcfg.retrain_epochs}
    return best_of(step, repeats=2, warmup=1, sync=sync), sizes


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=250, help="points per frame actually timed")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    info = machine()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(describe(info))
    rows, record = [], {"machine": info, "command": "python benchmarks/training_cost.py", "cases": {}}
    for case in ("swe", "kolmogorov"):
        cfg = load_config("paper", case=case)
        timing, sizes = step_seconds(cfg, case, args.points, device)
        n_train = round(cfg.data.n_trajectories * cfg.data.split[0])
        full_points = cfg.data.points_per_frame
        step = timing["best_s"] * full_points / args.points
        epoch = step * n_train / sizes["batch"]
        schedule_h = epoch * sizes["epochs"] / 3600
        record["cases"][case] = {**sizes, "step_s_timed": timing["best_s"], "points_per_frame": full_points,
                                 "train_trajectories": n_train, "step_s": step, "epoch_s": epoch,
                                 "schedule_hours": schedule_h}
        rows.append([case, sizes["latent"], sizes["F"], sizes["R"], sizes["frames"], sizes["batch"],
                     timing["best_s"], step, epoch, sizes["epochs"], schedule_h])
    print(markdown_table(["case", "latent", "F", "R", "frames", "batch", f"step at {args.points} pts [s]",
                          f"step at {full_points} pts [s]", "epoch [s]", "epochs", "schedule [h]"], rows))
    print("Extrapolated linearly in the points per frame; the schedule is the config's two stages.")
    out = args.out or RESULTS / f"training_cost_{device_tag(gpu_name())}.json"
    write_json(out, record)
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()

"""Whether the LDNet's reconstruction network R is what limits a case: R fitted with a free latent state per frame.

An auto-decoder bound (LD-EnSF paper §3.1 without the dynamics network F, eqs. 13-14): every kept frame of
the preset's train trajectories gets a latent vector of its own, learnt jointly with R, so R is handed the
best latent states any F could produce. It trains as the LDNet's first stage does (``run_phases``: Adam, the
warm-up + cosine schedule, clipping and precision of the preset; batches of ``ldnet.batch_size`` trajectories'
kept frames at ``data.points_per_frame`` random points each), and its full-grid relative error on the first
``EVAL_TRAIN`` train trajectories is scored like the LDNet's train error. The LDNet's latent states are
confined to an Euler rollout of F from ``u``, so with the same R and steps it has no more freedom to fit:
an auto-decoder error near the LDNet's says R (its size, its steps) is the limit, not F. Each row sets R's
width and the fraction of the preset's stage-one steps.
Run it alone on the machine (torch on two cores); the JSON is results/reconstruction_capacity_<case>_<preset>.json::

    python benchmarks/reconstruction_capacity.py --case kolmogorov
    python benchmarks/reconstruction_capacity.py --case kolmogorov --rows 128:1 256:0.33
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, describe, fmt, machine, markdown_table, write_json
from ldnet_ablation import CHAINS, dataset

from ldensf_hpc.backend import rng_for
from ldensf_hpc.cases import load_config
from ldensf_hpc.data.dataset import Normalization, TrajectoryStore, load_normalization, split_indices
from ldensf_hpc.surrogate.ldnet import LDNet, point_batches, point_frames
from ldensf_hpc.surrogate.training import (EVAL_TRAIN, ORDER_STREAM, Phase, configure_threads, relative_error,
                                           run_phases)


class AutoDecoder(torch.nn.Module):
    """An LDNet's R with a free latent state ``codes[j, t]`` for each train trajectory ``j`` and kept frame ``t``."""

    kind = "autodecoder"

    def __init__(self, ldnet: LDNet, n_trajectories: int, n_kept: int):
        super().__init__()
        self.ldnet = ldnet
        self.codes = torch.nn.Parameter(torch.randn(n_trajectories, n_kept, ldnet.latent))

    def to_checkpoint(self) -> dict:
        return {"kind": self.kind, "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}


def fit(cfg, store: TrajectoryStore, norm: Normalization, train: np.ndarray, frames: torch.Tensor, width: int,
        fraction: float, work: Path) -> dict:
    """Train the auto-decoder of R width ``width`` on the train trajectories ``train`` (their ``point_frames``)
    for ``fraction`` of the preset's stage-one epochs."""
    lcfg = dataclasses.replace(cfg.ldnet, rec_width=width)
    n, T, n_points, F = frames.shape
    xi = torch.as_tensor(norm.scale_xi(store.grid_points()), dtype=torch.float32)
    M = min(cfg.data.points_per_frame, n_points)
    steps = max(1, math.ceil(n / lcfg.batch_size))
    torch.manual_seed(cfg.train.seed)
    model = AutoDecoder(LDNet(lcfg, store.params.shape[1], F, norm), n, T)

    def batches(keys):
        return point_batches(frames, steps, M, rng_for(cfg.train.seed, ORDER_STREAM, *keys))

    def loss(batch):
        b, points, target = batch
        return ((model.ldnet.reconstruct(model.codes[b], xi[points]) - target) ** 2).mean()

    first = next(batches((1, 0)))  # one fixed batch scores the epochs (the phase keeps the best one's weights)
    epochs = max(1, round(fraction * lcfg.epochs))
    phase = Phase("joint", [model.codes, *model.ldnet.reconstruction_net.parameters()], epochs, lcfg.lr, batches,
                  lambda: [first], loss, steps_per_epoch=steps, warmup=lcfg.warmup, clip_norm=lcfg.clip_norm)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.perf_counter()
    run_phases(model, [phase], work / "autodecoder.pt", cfg.train, device=torch.device("cpu"), progress=True)
    wall = time.perf_counter() - start
    with torch.no_grad():
        errors = np.array([relative_error(model.ldnet.fields_on_grid(model.codes[i], store.x, store.y).numpy(),
                                          store.frames(int(j), lcfg.frame_every), axis=(0, 2, 3))
                           for i, j in enumerate(train[:EVAL_TRAIN])])
    return {"rec_width": width, "epochs": epochs, "steps": epochs * steps, "wall_s": wall,
            "train_rel_error": float(errors.mean()),
            "per_field": dict(zip(store.field_names, errors.mean(axis=0).tolist())),
            "parameters": sum(p.numel() for p in model.ldnet.reconstruction_net.parameters())}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=tuple(CHAINS), default="kolmogorov")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--rows", nargs="+", default=["128:1", "128:0.33", "256:0.33"], metavar="WIDTH:FRACTION",
                        help="R width and the fraction of the preset's stage-one epochs, one row each")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--work", type=Path, default=Path("runs") / "ldnet-ablation")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        rows = [(int(w), float(f)) for w, f in (r.split(":") for r in args.rows)]
    except ValueError:
        parser.error(f"--rows takes WIDTH:FRACTION pairs such as 128:1, got {' '.join(args.rows)}")
    cfg = load_config(args.preset, case=args.case, overrides=args.set)
    configure_threads(cfg.train.threads)
    info = machine()
    print(f"Machine: {describe(info)}", flush=True)
    work = args.work / f"{args.case}-{args.preset}"
    store = TrajectoryStore(dataset(cfg, work))
    norm = load_normalization(store, cfg.data.split, cfg.data.seed)
    train = split_indices(store.n_trajectories, cfg.data.split, cfg.data.seed)["train"]
    frames = point_frames(store, train, cfg.ldnet.frame_every, norm)
    results = []
    for width, fraction in rows:
        results.append(fit(cfg, store, norm, train, frames, width, fraction,
                           work / f"autodecoder-{width}-{fraction:g}"))
        r = results[-1]
        print(f"R width {width}, {r['steps']} steps: train rel. error {100 * r['train_rel_error']:.1f} % "
              f"in {r['wall_s']:.0f} s", flush=True)
    table = markdown_table(["R width", "R parameters", "steps", "train rel. error (free latent states)", "per field",
                            "wall [s]"],
                           [[r["rec_width"], r["parameters"], r["steps"], f"{100 * r['train_rel_error']:.1f} %",
                             ", ".join(f"{k} {100 * v:.1f} %" for k, v in r["per_field"].items()),
                             fmt(r["wall_s"], 3)] for r in results])
    print(table)
    record = {"command": " ".join(["python", "benchmarks/reconstruction_capacity.py", *(argv or sys.argv[1:])]),
              "machine": info, "case": args.case, "preset": args.preset, "overrides": args.set,
              "ldnet": dataclasses.asdict(cfg.ldnet), "precision": cfg.train.precision, "rows": results,
              "table": table}
    write_json(args.out or RESULTS / f"reconstruction_capacity_{args.case}_{args.preset}.json", record)
    return record


if __name__ == "__main__":
    main()

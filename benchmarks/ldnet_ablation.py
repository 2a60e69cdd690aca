"""What each LDNet training choice buys: test rel. error and wall time, one change at a time.

Trains the LDNet of a case's preset on one dataset (generated once into ``--work``) under a
chain of variants, each adding ``--set``-style overrides to the one before it, and reports
per variant the test (held-out trajectories, full grid, all kept frames) and train relative
errors, the epochs run and the training wall time. Stay within the paper's LDNet (F and R
MLPs, explicit Euler latent steps, continuous R(s, xi), §3.1): the variants change sizes,
the batch layout and the optimiser schedule only. Run it alone on the machine: two torch
jobs on two cores slow each other 2-5x.

    python benchmarks/ldnet_ablation.py --case swe --preset small       # writes results/ldnet_ablation_swe_small.json
    python benchmarks/ldnet_ablation.py --case swe --only 6,7   # rerun two; the others keep their results

Each variant's result records its overrides; one whose chain has not changed is kept from the
earlier JSON when ``--only`` leaves it out.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS, describe, fmt, machine, markdown_table, write_json

from ldensf_hpc.cases import load_config
from ldensf_hpc.data.dataset import TrajectoryStore, split_indices
from ldensf_hpc.data.generate import generate, generation_config
from ldensf_hpc.data.store import canonical_json
from ldensf_hpc.surrogate import train
from ldensf_hpc.surrogate.training import relative_error

# (label, overrides added to the previous variant's); the first is the preset as committed before the change
CHAINS = {
    "swe": [
        ("2 trajectories x 300 points per step, lr 3e-3, 140 epochs (the old preset)",
         ["ldnet.batch_size=2", "data.points_per_frame=300", "ldnet.lr=3e-3", "ldnet.epochs=120",
          "ldnet.retrain_epochs=20", "ldnet.latent=10", "ldnet.fourier_scale=2", "ldnet.warmup=0"]),
        ("8 trajectories x 64 points, 250 + 20 epochs", ["ldnet.batch_size=8", "data.points_per_frame=64",
                                                          "ldnet.epochs=250"]),
        ("Fourier frequency std 10 (xi in [-1, 1]), latent 16", ["ldnet.fourier_scale=10", "ldnet.latent=16"]),
        ("lr 1e-2 with 5 % linear warm-up, cosine", ["ldnet.lr=1e-2", "ldnet.warmup=0.05"]),
        ("R width 128", ["ldnet.rec_width=128"]),
        ("lr 2e-2", ["ldnet.lr=2e-2"]),
        ("lr 4e-2", ["ldnet.lr=4e-2"]),
        ("stage two: 40 epochs at lr 1e-3", ["ldnet.retrain_epochs=40", "ldnet.retrain_lr=1e-3"]),
        ("lr 2e-2, 125 + 20 epochs (with --set data.n_trajectories=200: the preset before the next rows)",
         ["ldnet.lr=2e-2", "ldnet.epochs=125", "ldnet.retrain_epochs=20"]),
        ("batches of 4 trajectories, 100 + 20 epochs", ["ldnet.batch_size=4", "ldnet.epochs=100"]),
        ("batches of 2 trajectories, 60 + 10 epochs", ["ldnet.batch_size=2", "ldnet.epochs=60",
                                                        "ldnet.retrain_epochs=10"]),
        ("bf16 autocast (latent steps in fp32), batches of 4, 200 + 40 epochs (the preset before the next row)",
         ["train.precision=bf16", "ldnet.batch_size=4", "ldnet.epochs=200", "ldnet.retrain_epochs=40"]),
        ("300 trajectories (180 train), 130 + 25 epochs", ["data.n_trajectories=300", "ldnet.epochs=130",
                                                           "ldnet.retrain_epochs=25"]),
        ("the latent Euler rollout and its adjoint fused in one Numba call each (code, no setting)", []),
        ("R's residual stream in bf16 under autocast, not fp32 (code, no setting)", []),
        ("gradients clipped to 2-norm 1", ["ldnet.clip_norm=1"]),
    ],
    "kolmogorov": [
        ("2 trajectories x 300 points per step, lr 3e-3, 140 epochs (the old preset)",
         ["ldnet.batch_size=2", "data.points_per_frame=300", "ldnet.lr=3e-3", "ldnet.epochs=120",
          "ldnet.retrain_epochs=20", "ldnet.fourier_scale=2", "ldnet.warmup=0"]),
        ("8 trajectories x 64 points, 250 + 20 epochs", ["ldnet.batch_size=8", "data.points_per_frame=64",
                                                          "ldnet.epochs=250"]),
        ("Fourier frequency std 10", ["ldnet.fourier_scale=10"]),
        ("lr 1e-2 with 5 % linear warm-up, cosine", ["ldnet.lr=1e-2", "ldnet.warmup=0.05"]),
        ("stage two 40 epochs (the preset before the next rows)", ["ldnet.retrain_epochs=40"]),
        ("latent 16 (from the row before)", ["ldnet.latent=16"]),
        ("latent 9, F 4 x 128 (from row 4)", ["ldnet.latent=9", "ldnet.dyn_width=128", "ldnet.dyn_depth=4"]),
        ("F 3 x 64, R width 256 (from row 4)", ["ldnet.dyn_width=64", "ldnet.dyn_depth=3", "ldnet.rec_width=256"]),
        ("R width 128, 500 epochs (from row 4)", ["ldnet.rec_width=128", "ldnet.epochs=500"]),
        ("1000 epochs", ["ldnet.epochs=1000"]),
        ("R width 192, 500 epochs", ["ldnet.rec_width=192", "ldnet.epochs=500"]),
        ("R width 128, batches of 4 trajectories, 600 epochs (the preset)",
         ["ldnet.rec_width=128", "ldnet.batch_size=4", "ldnet.epochs=600"]),
        ("bf16 autocast, 1200 + 80 epochs (from the preset)",
         ["train.precision=bf16", "ldnet.epochs=1200", "ldnet.retrain_epochs=80"]),
        ("R 4 x 256, 450 + 30 epochs, clipped, with the fused rollout (from row 12; R limits: "
         "reconstruction_capacity.py)",
         ["ldnet.rec_width=256", "ldnet.epochs=450", "ldnet.retrain_epochs=30", "ldnet.clip_norm=1"]),
    ],
    "atmosphere": [
        ("latent steps 8 h apart, fields standardised by their mean (the old preset)",
         ["ldnet.frame_every=1", "ldnet.climatology=0"]),
        ("R adds the train-mean field (degree-8 polynomial of xi), N learns the anomaly at unit scale",
         ["ldnet.climatology=8"]),
        ("latent steps 24 h apart (the daily forcing at the same longitude every step), no climatology",
         ["ldnet.frame_every=3", "ldnet.climatology=0"]),
        ("24 h steps with the climatology (the preset)", ["ldnet.climatology=8"]),
    ],
}


def dataset(cfg, work: Path) -> Path:
    """The dataset of ``cfg`` under ``work``, one per data configuration (generated when absent)."""
    key = hashlib.sha256(canonical_json(generation_config(cfg)).encode()).hexdigest()[:12]
    generate(cfg, work / f"data-{key}", backend="serial", progress=True)
    return work / f"data-{key}"


def climatology(cfg, data_dir: Path) -> dict:
    """The no-model baseline: every test frame predicted by the train trajectories' mean over
    trajectories and kept frames at each grid point, scored like the LDNet (rel. error per test
    trajectory and field, then the mean). An LDNet near it has learnt neither time nor parameters."""
    store = TrajectoryStore(data_dir)
    splits = split_indices(store.n_trajectories, cfg.data.split, cfg.data.seed)
    every = cfg.ldnet.frame_every
    mean = np.mean([store.frames(j, every).mean(axis=0) for j in splits["train"]], axis=0)
    errors = np.array([relative_error(np.broadcast_to(mean, f.shape), f, axis=(0, 2, 3))
                       for f in (store.frames(j, every) for j in splits["test"])])
    return {"test_rel_error": float(errors.mean()),
            "per_field": dict(zip(store.field_names, errors.mean(axis=0).tolist()))}


def run_variant(cfg, data_dir: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    summary = train(cfg, data_dir, out, ["ldnet"], progress=False)["ldnet"]
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "test_rel_error": summary["test_rel_error"], "train_rel_error": summary["train_rel_error"],
            "val_rel_error": summary["val_rel_error"], "per_field": summary["test_rel_error_per_field"],
            "epochs": {phase: len(h) for phase, h in summary["history"].items()}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=tuple(CHAINS), default="swe")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--only", default=None,
                        help="comma-separated variant numbers to train (default all; '' none: the baseline only)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra overrides applied to every variant (e.g. a shorter horizon)")
    parser.add_argument("--work", type=Path, default=Path("runs") / "ldnet-ablation")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    chain = CHAINS[args.case]
    only = set(range(len(chain))) if args.only is None else {int(i) for i in args.only.split(",") if i}
    info = machine()
    print(f"Machine: {describe(info)}", flush=True)
    base = load_config(args.preset, case=args.case, overrides=args.set)
    out_path = args.out or RESULTS / f"ldnet_ablation_{args.case}_{args.preset}.json"
    earlier = json.loads(out_path.read_text()) if out_path.is_file() else {}
    made_on = json.loads(json.dumps([base.data.__dict__, base.to_dict()[args.case]]))  # as the JSON holds them
    if earlier and [earlier.get("data"), earlier.get("model")] != made_on:
        print(f"{out_path} was made on another preset (data or {args.case} settings); its variants are not kept")
        earlier = {}
    kept = {r["variant"]: r for r in earlier.get("variants", [])}
    rows, overrides = [], list(args.set)
    for i, (label, extra) in enumerate(chain):
        overrides += extra
        if i not in only:  # a variant not rerun keeps its earlier result if it was made with the same settings
            if i in kept and kept[i]["overrides"] == overrides and kept[i]["label"] == label:
                rows.append(kept[i])
            continue
        cfg = load_config(args.preset, case=args.case, overrides=overrides)
        data_dir = dataset(cfg, args.work / f"{args.case}-{args.preset}")
        r = run_variant(cfg, data_dir, args.work / f"{args.case}-{args.preset}" / f"variant{i}")
        rows.append({"variant": i, "label": label, "overrides": list(overrides), **r})
        print(f"[{i}] {label}: test {100 * r['test_rel_error']:.1f} %, train {100 * r['train_rel_error']:.1f} %, "
              f"{r['wall_s']:.0f} s", flush=True)
    baseline = climatology(base, dataset(base, args.work / f"{args.case}-{args.preset}"))
    def per_field(errors):
        return ", ".join(f"{name} {100 * e:.1f} %" for name, e in errors.items())

    table = markdown_table(["#", "change (cumulative)", "test rel. error", "per field", "train rel. error", "epochs",
                            "wall [s]"],
                           [[r["variant"], r["label"], f"{100 * r['test_rel_error']:.1f} %", per_field(r["per_field"]),
                             f"{100 * r['train_rel_error']:.1f} %", r["epochs"], fmt(r["wall_s"], 3)] for r in rows]
                           + [["-", "no model: the train trajectories' mean field at every point",
                               f"{100 * baseline['test_rel_error']:.1f} %", per_field(baseline["per_field"]), "-",
                               "-", "-"]])
    print(table)
    record = {"command": " ".join(["python", "benchmarks/ldnet_ablation.py", *(argv or sys.argv[1:])]),
              "machine": info, "case": args.case, "preset": args.preset, "data": base.data.__dict__,
              "model": base.to_dict()[args.case], "variants": rows, "climatology": baseline, "table": table}
    write_json(out_path, record)
    return record


if __name__ == "__main__":
    main()

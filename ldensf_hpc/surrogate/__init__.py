"""Learned surrogates: the LDNet (latent dynamics + reconstruction), the LSTM observation encoder, the
point-set encoder for moving sensors and the coupled VAE of Latent-EnSF, registered by checkpoint name.

Each surrogate class has ``kind`` (its checkpoint name), ``requires`` (what must be trained
first) and ``fit(cfg, data_dir, out_dir)`` (its trainer, on :mod:`.training`'s loop).
Checkpoints hold the model config, its normalisation and weights; :func:`load` rebuilds
the model from the file alone::

    ldnet = load("out/ldnet.pt")          # LDNet, eval mode
    train(cfg, "data", "out", ["ldnet", "encoder"])
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..data.store import MANIFEST, canonical_json, read_manifest, sha256_file, sha256_text, write_json
from ..errors import DataError
from ..registry import Registry
from .training import configure_threads, load_checkpoint, resolve_precision, select_device

SURROGATES = Registry("surrogate", {
    "ldnet": "ldensf_hpc.surrogate.ldnet:LDNet",
    "encoder": "ldensf_hpc.surrogate.encoder:LSTMEncoder",
    "set_encoder": "ldensf_hpc.surrogate.set_encoder:SetEncoder",
    "vae": "ldensf_hpc.surrogate.vae:CoupledVAE",
})
"""Checkpoint name -> surrogate class."""


def load(path, device="cpu") -> torch.nn.Module:
    """Rebuild the surrogate saved at ``path`` (any of :data:`SURROGATES`) in eval mode on ``device``."""
    ckpt = load_checkpoint(path, device)
    kind = ckpt.get("kind") if isinstance(ckpt, dict) else None
    if kind not in SURROGATES:
        raise DataError(f"{path} is not a surrogate checkpoint (kind {kind!r}; known: {', '.join(SURROGATES)})")
    return SURROGATES[kind].from_checkpoint(ckpt).to(device).eval()


def training_order(names) -> list[str]:
    """``names`` and what they require, each after its requirements, in registry order."""
    for name in names:
        SURROGATES.check(name)
    wanted, order = set(), []

    def add(name):
        for need in SURROGATES[name].requires:
            add(need)
        if name not in wanted:
            wanted.add(name)
            order.append(name)

    for name in SURROGATES:
        if name in set(names):
            add(name)
    return order


def _derived_from(cfg, data_dir: Path, out_dir: Path, name: str) -> dict:
    """What a finished surrogate's summary (its train/val/test errors) is derived from: its checkpoint
    (weights), the dataset manifest, the split (``data``) and the settings it was trained with (its
    own section, ``train`` but the thread count, the sensor grid ``observe.stride`` of the encoders),
    so that changed settings retrain."""
    values = cfg.to_dict()
    settings = {name: values.get(name), "observe.stride": values["observe"]["stride"],
                "train": {k: v for k, v in values["train"].items() if k != "threads"}}
    return {"checkpoint_sha256": sha256_file(out_dir / f"{name}.pt"),
            "data_manifest_sha256": sha256_file(data_dir / MANIFEST),
            "data_sha256": sha256_text(canonical_json(values["data"])),
            "settings_sha256": sha256_text(canonical_json(settings))}


def _reusable_summary(cfg, data_dir: Path, out_dir: Path, name: str) -> dict | None:
    """``OUT/<name>.json`` when it was written for this very checkpoint, dataset and split (else None)."""
    try:
        summary = json.loads((out_dir / f"{name}.json").read_text())
        if not (out_dir / f"{name}.pt").is_file() or not (data_dir / MANIFEST).is_file():
            return None
    except (OSError, json.JSONDecodeError):
        return None
    return summary if summary.get("derived_from") == _derived_from(cfg, data_dir, out_dir, name) else None


def train(cfg, data_dir, out_dir, names, progress: bool = True) -> dict:
    """Train (or resume) the surrogates ``names`` and what they require; their summaries.

    A finished surrogate whose summary records the same checkpoint, dataset manifest and split
    is reused as it is (its errors are not measured again); every summary is written with that record,
    ``train_wall_s`` (the wall time of the call that trained it) and the ``precision`` it trained in (a
    checkpoint is resumed only at its own).
    """
    configure_threads(cfg.train.threads)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    made = (read_manifest(data_dir) or {}).get("config", {}).get("case")
    if made is not None and made != cfg.case:
        raise DataError(f"the dataset at {data_dir} is a {made} dataset, not {cfg.case}; use --case {made}")
    summaries = {}
    for name in training_order(names):
        summary = _reusable_summary(cfg, data_dir, out_dir, name)
        if summary is None:
            start = time.perf_counter()
            summary = SURROGATES[name].fit(cfg, data_dir, out_dir, progress=progress)
            summary["train_wall_s"] = time.perf_counter() - start  # of the call that finished it (a resume: its part)
            summary["precision"] = resolve_precision(cfg.train.precision, select_device(cfg.train.device))
            summary["derived_from"] = _derived_from(cfg, data_dir, out_dir, name)
            write_json(out_dir / f"{name}.json", summary)
        summaries[name] = summary
    return summaries


__all__ = ["SURROGATES", "load", "load_checkpoint", "train", "training_order"]

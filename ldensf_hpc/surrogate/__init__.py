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

from pathlib import Path

import torch

from ..errors import DataError
from ..registry import Registry
from .training import configure_threads, load_checkpoint

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


def train(cfg, data_dir, out_dir, names, progress: bool = True) -> dict:
    """Train (or resume, or reuse finished) the surrogates ``names`` and what they require; their summaries."""
    configure_threads(cfg.train.threads)
    out_dir = Path(out_dir)
    return {name: SURROGATES[name].fit(cfg, data_dir, out_dir, progress=progress) for name in training_order(names)}


__all__ = ["SURROGATES", "load", "load_checkpoint", "train", "training_order"]

"""Learned surrogates: the LDNet (latent dynamics + reconstruction), the LSTM observation encoder, the
point-set encoder for moving sensors and the coupled VAE of Latent-EnSF.

Checkpoints written by :mod:`ldensf_hpc.surrogate.train` hold the model config, its
normalisation and weights; :func:`load` rebuilds the model from the file alone::

    ldnet = load("out/ldnet.pt")          # LDNet, eval mode
    encoder = load("out/encoder.pt")      # LSTMEncoder, eval mode
    vae = load("out/vae.pt")              # CoupledVAE, eval mode
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DataError
from .encoder import LSTMEncoder
from .ldnet import LDNet
from .set_encoder import SetEncoder
from .vae import CoupledVAE

SURROGATES = {"ldnet": LDNet, "encoder": LSTMEncoder, "vae": CoupledVAE, "set_encoder": SetEncoder}


def load_checkpoint(path, device="cpu") -> dict:
    """The raw checkpoint dictionary at ``path`` (tensors mapped to ``device``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no checkpoint at {path}; run `ldensf train` first")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/foreign files
        raise DataError(f"cannot read checkpoint {path}: {exc}") from None


def load(path, device="cpu") -> torch.nn.Module:
    """Rebuild the surrogate saved at ``path`` (any of :data:`SURROGATES`) in eval mode on ``device``."""
    ckpt = load_checkpoint(path, device)
    kind = ckpt.get("kind") if isinstance(ckpt, dict) else None
    if kind not in SURROGATES:
        raise DataError(f"{path} is not a surrogate checkpoint (kind {kind!r}; known: {', '.join(SURROGATES)})")
    return SURROGATES[kind].from_checkpoint(ckpt).to(device).eval()


__all__ = ["SURROGATES", "CoupledVAE", "LDNet", "LSTMEncoder", "SetEncoder", "load", "load_checkpoint"]

"""Coupled convolutional VAE of Latent-EnSF (LD-EnSF paper §2.3; Si & Chen 2024, ref. [43]).

Three networks share one latent space of dimension ``L``:

- the state encoder ``E_state``: ``blocks`` stride-2 convolution blocks (``width`` channels,
  doubled per block) on the grid padded to a multiple of ``2**blocks``, then a linear map
  to ``(mu, logvar)``;
- the observation encoder ``E_obs``: an MLP with two hidden layers of ``obs_hidden`` on the
  sparse observation vector, to ``(mu, logvar)``;
- the decoder ``D``: the mirror of ``E_state`` (transposed convolutions), cropped back to
  the grid.

Units: standardised fields ``(x - mean_f) / std_f`` with the LDNet's train-split
:class:`~ldensf_hpc.data.dataset.Normalization`; an observation is the operator applied to
standardised fields. The training loss of a frame ``x`` observed as ``y`` (the paper's three
terms: reconstruction, regularisation, alignment) is::

    mse(D(z_x), x) + mse(D(z_y), x)                                  reconstruction from either latent
    + kl_weight (KL(q(z | x) || N(0, I)) + KL(q(z | y) || N(0, I)))   summed over latent components
    + align_weight |mu_y - mu_x|^2 / L                                 shared latent space

with ``z ~ q`` drawn by reparameterisation in training and ``z = mu`` in evaluation.
:func:`train_vae` writes ``OUT/vae.pt`` (resumable) and ``OUT/vae.json``.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..backend import rng_for
from ..config import VAEConfig
from ..data.dataset import Normalization, TrajectoryStore, load_normalization, split_indices, standardized_frames
from ..data.store import write_json
from ..errors import ConfigError, InputError
from .training import (EVAL_TRAIN, ORDER_STREAM, Phase, check_training, observation_operator, run_phases,
                       select_device)

_NOISE_STREAM, _VAL_NOISE_STREAM = 12, 13  # rng_for(train seed, stream, ...); 10 seeds torch, 11 orders
_EVAL_CHUNK = 256  # frames per forward pass when computing errors


class CoupledVAE(nn.Module):
    """``E_state``, ``E_obs`` and ``D`` of Latent-EnSF on standardised fields ``(F, ny, nx)``.

    Parameters
    ----------
    cfg : VAEConfig
        Latent size, convolution width and blocks, observation-encoder width, loss weights.
    n_fields, ny, nx : int
        Shape of one state.
    n_obs : int
        Length of the observation vector ``y`` (the operator's ``m``).
    norm : Normalization
        Train-split statistics defining the standardised units (kept in checkpoints).
    observe : dict
        Description of the observation operator it was trained with, e.g.
        ``{"name": "grid", "options": {"stride": 15, "periodic": False}}``.
    """

    kind = "vae"
    requires: tuple[str, ...] = ()

    def __init__(self, cfg: VAEConfig, n_fields: int, ny: int, nx: int, n_obs: int, norm: Normalization,
                 observe: dict | None = None):
        super().__init__()
        for name in ("latent", "width", "blocks", "obs_hidden"):
            if getattr(cfg, name) < 1:
                raise ConfigError(f"vae.{name} must be >= 1, got {getattr(cfg, name)}")
        if min(n_fields, ny, nx, n_obs) < 1:
            raise ConfigError(f"the VAE needs positive sizes, got fields {n_fields}, grid {ny} x {nx}, {n_obs} obs")
        self.cfg, self.norm, self.observe = cfg, norm, dict(observe or {})
        self.n_fields, self.ny, self.nx, self.n_obs, self.latent = n_fields, ny, nx, n_obs, cfg.latent
        factor = 2**cfg.blocks
        self.coarse = (-(-ny // factor), -(-nx // factor))  # grid after the stride-2 blocks
        self.padded = (self.coarse[0] * factor, self.coarse[1] * factor)
        channels = [cfg.width * 2**i for i in range(cfg.blocks)]
        flat = channels[-1] * self.coarse[0] * self.coarse[1]

        down, c_in = [], n_fields
        for c in channels:
            down += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1), nn.SiLU()]
            c_in = c
        self.state_net = nn.Sequential(*down, nn.Flatten())
        self.state_head = nn.Linear(flat, 2 * cfg.latent)
        self.obs_net = nn.Sequential(nn.Linear(n_obs, cfg.obs_hidden), nn.SiLU(),
                                     nn.Linear(cfg.obs_hidden, cfg.obs_hidden), nn.SiLU(),
                                     nn.Linear(cfg.obs_hidden, 2 * cfg.latent))
        self.decoder_in = nn.Linear(cfg.latent, flat)
        up = []
        for i in reversed(range(cfg.blocks)):
            c_out = channels[max(i - 1, 0)]
            up += [nn.ConvTranspose2d(channels[i], c_out, 4, stride=2, padding=1), nn.SiLU(),
                   nn.Conv2d(c_out, c_out, 3, padding=1), nn.SiLU()]
        self.decoder_net = nn.Sequential(*up, nn.Conv2d(channels[0], n_fields, 3, padding=1))
        self._top_channels = channels[-1]
        self.to(memory_format=torch.channels_last)  # NHWC convolutions: 1.7x faster on CPU (oneDNN), also on GPUs

    @property
    def state_shape(self) -> tuple[int, int, int]:
        return (self.n_fields, self.ny, self.nx)

    def _pads(self) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) padding from ``(ny, nx)`` to the padded grid, split evenly."""
        py, px = self.padded[0] - self.ny, self.padded[1] - self.nx
        return px // 2, px - px // 2, py // 2, py - py // 2

    def encode_state(self, x: torch.Tensor):
        """``(mu, logvar)`` ``(B, L)`` of ``q(z | x)`` for standardised states ``x (B, F, ny, nx)``."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.state_shape:
            raise InputError(f"state encoder expects (B, {', '.join(map(str, self.state_shape))}) fields, "
                             f"got {tuple(x.shape)}")
        padded = F.pad(x, self._pads(), mode="replicate").contiguous(memory_format=torch.channels_last)
        h = self.state_head(self.state_net(padded))
        return h[:, :self.latent], h[:, self.latent:]

    def encode_obs(self, y: torch.Tensor):
        """``(mu, logvar)`` ``(B, L)`` of ``q(z | y)`` for standardised observations ``y (B, m)``."""
        if y.ndim != 2 or y.shape[1] != self.n_obs:
            raise InputError(f"observation encoder expects (B, {self.n_obs}) observations, got {tuple(y.shape)}")
        h = self.obs_net(y)
        return h[:, :self.latent], h[:, self.latent:]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised states ``D(z)`` ``(B, F, ny, nx)`` for latents ``z (B, L)``."""
        if z.ndim != 2 or z.shape[1] != self.latent:
            raise InputError(f"decoder expects (B, {self.latent}) latents, got {tuple(z.shape)}")
        h = self.decoder_in(z).reshape(len(z), self._top_channels, *self.coarse)
        left, _, top, _ = self._pads()
        out = self.decoder_net(h.contiguous(memory_format=torch.channels_last))
        return out[:, :, top:top + self.ny, left:left + self.nx].contiguous()

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean training loss of frames ``x (B, F, ny, nx)`` observed as ``y (B, m)`` (module docstring).

        Latents are sampled in training mode and the means are used in evaluation mode.
        """
        mu_x, logvar_x = self.encode_state(x)
        mu_y, logvar_y = self.encode_obs(y)
        mu, logvar = torch.cat([mu_x, mu_y]), torch.cat([logvar_x, logvar_y])  # rows: B states, then B obs
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        x_hat, B = self.decode(z), len(x)
        recon = F.mse_loss(x_hat[:B], x) + F.mse_loss(x_hat[B:], x)
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum() / B  # both encoders, per frame
        align = F.mse_loss(mu_y, mu_x)
        return recon + self.cfg.kl_weight * kl + self.cfg.align_weight * align

    def to_checkpoint(self) -> dict:
        """Everything :meth:`from_checkpoint` needs to rebuild this model."""
        return {"kind": self.kind, "config": dataclasses.asdict(self.cfg), "n_fields": self.n_fields,
                "ny": self.ny, "nx": self.nx, "n_obs": self.n_obs, "norm": self.norm.to_dict(),
                "observe": self.observe, "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @staticmethod
    def fit(cfg, data_dir, out_dir, **kwargs) -> dict:
        """Train (or resume) on a dataset; see :func:`train_vae`."""
        return train_vae(cfg, data_dir, out_dir, **kwargs)

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> CoupledVAE:
        model = cls(VAEConfig(**ckpt["config"]), ckpt["n_fields"], ckpt["ny"], ckpt["nx"], ckpt["n_obs"],
                    Normalization.from_dict(ckpt["norm"]), ckpt["observe"])
        model.load_state_dict(ckpt["state_dict"])
        return model


def _rel_errors(model: CoupledVAE, x: np.ndarray, y: np.ndarray, device) -> dict[str, float]:
    """Mean per-frame relative 2-norm error (physical units) of ``D(mu_state(x))`` and ``D(mu_obs(y))``."""
    errors = {"state": [], "obs": []}
    model.eval()
    for i in range(0, len(x), _EVAL_CHUNK):
        xb, yb = (torch.from_numpy(a[i:i + _EVAL_CHUNK]).to(device) for a in (x, y))
        true = model.norm.unstandardize(xb, axis=1)
        with torch.no_grad():
            for name, mu in (("state", model.encode_state(xb)[0]), ("obs", model.encode_obs(yb)[0])):
                pred = model.norm.unstandardize(model.decode(mu), axis=1)
                err = torch.sqrt(((pred - true) ** 2).sum(dim=(1, 2, 3)) / (true**2).sum(dim=(1, 2, 3)))
                errors[name].append(err.cpu().numpy())
    return {name: float(np.concatenate(e).mean()) for name, e in errors.items()}


def train_vae(cfg, data_dir, out_dir, *, callback=None, progress: bool = True) -> dict:
    """Train (or resume) the coupled VAE on all stored frames of the train split; write ``out_dir/vae.pt``.

    Observations for ``E_obs`` are the sparse grid operator of ``cfg.observe`` applied to the
    standardised frames, plus ``cfg.vae.obs_noise`` times standard normal noise (standardised
    units, drawn afresh every epoch; fixed for validation). Early stopping on the validation
    loss. Returns the summary also written to ``out_dir/vae.json``: history and
    ``{train,val,test}_rel_error`` (``D(mu_state)``) and ``..._rel_error_obs`` (``D(mu_obs)`` of
    noiseless observations), relative 2-norm per frame in physical units, averaged (train: over the
    first ``EVAL_TRAIN`` train trajectories).
    """
    vcfg, tcfg = cfg.vae, cfg.train
    check_training(cfg)
    for name in ("kl_weight", "align_weight", "obs_noise"):
        if not getattr(vcfg, name) >= 0:
            raise ConfigError(f"vae.{name} must be >= 0, got {getattr(vcfg, name)}")
    if vcfg.batch_size < 1:
        raise ConfigError(f"vae.batch_size must be >= 1, got {vcfg.batch_size}")
    device = select_device(tcfg.device)
    store = TrajectoryStore(data_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    norm = load_normalization(store, cfg.data.split, cfg.data.seed)
    operator, spec = observation_operator(cfg, store)
    splits = split_indices(store.n_trajectories, cfg.data.split, cfg.data.seed)
    frames = {name: standardized_frames(store, idx, norm).reshape(-1, store.n_fields, store.ny, store.nx)
              for name, idx in splits.items()}
    obs = {name: operator.apply(x) for name, x in frames.items()}
    val_y = obs["val"] + vcfg.obs_noise * rng_for(tcfg.seed, _VAL_NOISE_STREAM).standard_normal(
        obs["val"].shape).astype(np.float32)
    torch.manual_seed(tcfg.seed)
    model = CoupledVAE(vcfg, store.n_fields, store.ny, store.nx, operator.m, norm, spec).to(device)

    def chunks(n, order):
        return np.array_split(order, max(1, math.ceil(n / vcfg.batch_size)))

    def batches(keys):
        x, y = frames["train"], obs["train"]
        noise = rng_for(tcfg.seed, _NOISE_STREAM, *keys)
        for b in chunks(len(x), rng_for(tcfg.seed, ORDER_STREAM, *keys).permutation(len(x))):
            yb = y[b]
            if vcfg.obs_noise > 0:
                yb = yb + vcfg.obs_noise * noise.standard_normal(yb.shape).astype(np.float32)
            yield torch.from_numpy(x[b]), torch.from_numpy(yb)

    def val_batches():
        x = frames["val"]
        return [(torch.from_numpy(x[b]), torch.from_numpy(val_y[b])) for b in chunks(len(x), np.arange(len(x)))]

    def loss(batch):
        x, y = (t.to(device) for t in batch)
        return model.loss(x, y)

    phases = [Phase("vae", list(model.parameters()), vcfg.epochs, vcfg.lr, batches, val_batches, loss,
                    steps_per_epoch=len(chunks(len(frames["train"]), np.arange(len(frames["train"])))))]
    history = run_phases(model, phases, out / "vae.pt", tcfg, device=device, callback=callback,
                         progress=progress, data=store.digest)
    model.eval()
    summary = {"model": "vae", "case": cfg.case, "config": dataclasses.asdict(vcfg), "observe": spec,
               "history": history, "frames": {name: len(x) for name, x in frames.items()}}
    evaluated = {**frames, "train": frames["train"][:EVAL_TRAIN * store.n_frames]}  # the first EVAL_TRAIN
    for name, x in evaluated.items():  # train trajectories (train-split frames are in trajectory order)
        errors = _rel_errors(model, x, obs[name][:len(x)], device)
        summary[f"{name}_rel_error"] = errors["state"]
        summary[f"{name}_rel_error_obs"] = errors["obs"]
    write_json(out / "vae.json", summary)
    return summary

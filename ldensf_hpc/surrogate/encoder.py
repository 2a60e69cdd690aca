"""LSTM observation encoder (LD-EnSF paper §3.2, eqs. 16-17).

It maps an observation history ``y_{0:t}`` to the pair ``(s_hat_t, u_hat_t)`` at every
``t``: the LDNet latent state and the scaled parameters (output dimension
``latent + p``). Observations are taken in physical units and standardised inside
with the statistics of the observed fields; outputs are predicted standardised and
returned in latent / scaled-parameter units, so the loss of eq. 17 is taken on
comparable scales.

In LD-EnSF the encoded pair is the latent observation of the identity operator
(eq. 18); :meth:`LSTMEncoder.encode_step` consumes one observation time at a time.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..backend import rng_for
from ..config import EncoderConfig
from ..data.dataset import Normalization, TrajectoryStore, observation_sequences, split_indices
from ..data.store import write_json
from ..errors import ConfigError, InputError
from .ldnet import LDNet
from .training import (
    ORDER_STREAM,
    Phase,
    check_training,
    finished,
    observation_operator,
    relative_error,
    run_phases,
    select_device,
)


class LSTMEncoder(nn.Module):
    """``E(y_t, h_t) -> (s_hat_t, u_hat_t)`` (eq. 16): an LSTM and a linear head.

    Parameters
    ----------
    cfg : EncoderConfig
        Layers, hidden width and dropout.
    n_obs, latent, n_params : int
        Observation, latent and parameter dimensions (output ``latent + n_params``).
    norm : Normalization
        The LDNet's statistics (kept so a loaded encoder is self-contained).
    observe : dict
        Description of the observation operator it was trained with, e.g. ``{"name": "grid", "stride": 15}``.
    """

    kind = "encoder"
    requires: tuple[str, ...] = ("ldnet",)

    def __init__(self, cfg: EncoderConfig, n_obs: int, latent: int, n_params: int, norm: Normalization,
                 observe: dict | None = None, frame_every: int = 1):
        super().__init__()
        if cfg.layers < 1 or cfg.hidden < 1:
            raise ConfigError(f"the encoder needs layers >= 1 and hidden >= 1, got {cfg.layers}, {cfg.hidden}")
        if not 0.0 <= cfg.dropout < 1.0:
            raise ConfigError(f"encoder dropout must be in [0, 1), got {cfg.dropout}")
        self.cfg, self.norm, self.observe = cfg, norm, dict(observe or {})
        self.n_obs, self.latent, self.n_params, self.frame_every = n_obs, latent, n_params, frame_every
        self.lstm = nn.LSTM(n_obs, cfg.hidden, cfg.layers, batch_first=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.head = nn.Linear(cfg.hidden, latent + n_params)
        for name, w in self.lstm.named_parameters():
            (nn.init.xavier_normal_ if name.startswith("weight") else nn.init.zeros_)(w)
        nn.init.xavier_normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # standardisation of inputs (observed fields) and outputs (s, u); set before training
        for name, size in (("obs_mean", n_obs), ("obs_std", n_obs), ("out_mean", latent + n_params),
                           ("out_std", latent + n_params)):
            self.register_buffer(name, torch.zeros(size) if "mean" in name else torch.ones(size))

    def set_statistics(self, obs_mean, obs_std, out_mean, out_std) -> None:
        """Store input/output standardisation (zero std is replaced by one)."""
        for name, v in (("obs_mean", obs_mean), ("obs_std", obs_std), ("out_mean", out_mean), ("out_std", out_std)):
            v = torch.as_tensor(v, dtype=torch.float32).reshape(-1)
            if name.endswith("std"):
                v = torch.where(v > 0, v, torch.ones_like(v))
            getattr(self, name).copy_(v)

    def forward_standardized(self, y: torch.Tensor, state=None):
        """Standardised outputs ``(B, T, latent + p)`` for observations ``y (B, T, m)``, and the LSTM state."""
        if y.shape[-1] != self.n_obs:
            raise InputError(f"encoder expects {self.n_obs} observations per time, got {y.shape[-1]}")
        h, state = self.lstm((y - self.obs_mean) / self.obs_std, state)
        return self.head(h), state

    def forward(self, y: torch.Tensor, state=None):
        """Outputs ``(B, T, latent + p)`` in latent / scaled-parameter units, and the LSTM state."""
        z, state = self.forward_standardized(y, state)
        return z * self.out_std + self.out_mean, state

    def encode(self, y: torch.Tensor):
        """``(s_hat (B, T, latent), u_hat (B, T, p))`` for a whole history ``y (B, T, m)``."""
        out, _ = self(y)
        return out[..., :self.latent], out[..., self.latent:]

    def encode_history(self, operators, y) -> np.ndarray:
        """``(T, latent + p)`` latent observations of a history ``y`` ``T x (m,)`` (physical units) observed by
        ``operators`` (one per time; they must observe the ``n_obs`` components the encoder was trained on)."""
        for op in operators:
            if op.m != self.n_obs:
                raise InputError(f"the LSTM encoder takes {self.n_obs} observations per time, an operator gives "
                                 f"{op.m}; it needs the sensor grid it was trained on")
        device = self.out_mean.device
        with torch.no_grad():
            s_hat, u_hat = self.encode(torch.as_tensor(np.asarray(y, np.float32), device=device)[None])
        return torch.cat([s_hat[0], u_hat[0]], dim=-1).cpu().numpy()

    def encode_step(self, y_t: torch.Tensor, state=None):
        """One observation time ``y_t (B, m)``: returns ``s_hat (B, latent)``, ``u_hat (B, p)`` and the new state."""
        out, state = self(y_t.unsqueeze(1), state)
        return out[:, 0, :self.latent], out[:, 0, self.latent:], state

    def to_checkpoint(self) -> dict:
        return {"kind": self.kind, "config": dataclasses.asdict(self.cfg), "n_obs": self.n_obs,
                "latent": self.latent, "n_params": self.n_params, "norm": self.norm.to_dict(),
                "observe": self.observe, "frame_every": self.frame_every,
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @staticmethod
    def fit(cfg, data_dir, out_dir, **kwargs) -> dict:
        """Train (or resume) against the finished LDNet in ``out_dir``; see :func:`train_encoder`."""
        return train_encoder(cfg, data_dir, out_dir, **kwargs)

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> LSTMEncoder:
        model = cls(EncoderConfig(**ckpt["config"]), ckpt["n_obs"], ckpt["latent"], ckpt["n_params"],
                    Normalization.from_dict(ckpt["norm"]), ckpt["observe"], ckpt["frame_every"])
        model.load_state_dict(ckpt["state_dict"])
        return model


def train_encoder(cfg, data_dir, out_dir, *, callback=None, progress: bool = True) -> dict:
    """Train (or resume) the LSTM encoder against the finished ``out_dir/ldnet.pt``; write ``encoder.pt``.

    Inputs are noiseless observations ``H x`` of the LDNet's kept frames (one per latent step);
    targets are the LDNet latent trajectory and the scaled parameters.
    """
    check_training(cfg)
    ecfg = cfg.encoder
    tcfg = cfg.train
    device = select_device(tcfg.device)
    out = Path(out_dir)
    store = TrajectoryStore(data_dir)
    ldnet = finished(LDNet, out, device, data=store.digest)
    operator, spec = observation_operator(cfg, store)
    frame_every, n_kept = ldnet.cfg.frame_every, store.kept_frames(ldnet.cfg.frame_every)
    splits = split_indices(store.n_trajectories, cfg.data.split, cfg.data.seed)
    data = {}
    for name, idx in splits.items():
        y = torch.as_tensor(observation_sequences(store, idx, frame_every, operator.apply), device=device)
        u = torch.as_tensor(ldnet.norm.scale_params(store.params[idx]), dtype=torch.float32, device=device)
        with torch.no_grad():
            s = ldnet.rollout(u, n_kept)
        data[name] = (y, torch.cat([s, u[:, None].expand(-1, n_kept, -1)], dim=-1))
    torch.manual_seed(tcfg.seed)
    model = LSTMEncoder(ecfg, operator.m, ldnet.latent, ldnet.n_params, ldnet.norm, spec, frame_every).to(device)
    fields = operator.field
    train_target = data["train"][1].reshape(-1, model.latent + model.n_params)
    model.set_statistics(np.asarray(ldnet.norm.field_mean)[fields], np.asarray(ldnet.norm.field_std)[fields],
                         train_target.mean(dim=0), train_target.std(dim=0, correction=0))

    def batches(keys):
        y, target = data["train"]
        order = rng_for(tcfg.seed, ORDER_STREAM, *keys).permutation(len(y))
        return [(y[b], target[b]) for b in np.array_split(order, max(1, -(-len(y) // ecfg.batch_size)))]

    def val_batches():
        return [data["val"]]

    def loss(batch):
        y, target = batch
        z, _ = model.forward_standardized(y)
        return torch.nn.functional.mse_loss(z, (target - model.out_mean) / model.out_std)

    phases = [Phase("encoder", list(model.parameters()), ecfg.epochs, ecfg.lr, batches, val_batches, loss,
                    steps_per_epoch=max(1, -(-len(data["train"][0]) // ecfg.batch_size)))]
    history = run_phases(model, phases, out / "encoder.pt", tcfg, device=device, callback=callback,
                         progress=progress, data=store.digest)
    model.eval()
    summary = {"model": "encoder", "case": cfg.case, "config": dataclasses.asdict(ecfg), "observe": spec,
               "history": history}
    for name, (y, target) in data.items():
        with torch.no_grad():
            pred = model(y)[0].cpu().numpy()
        target = target.cpu().numpy()
        L = model.latent
        u_pred = ldnet.norm.unscale_params(pred[..., L:].astype(np.float64))
        u_true = ldnet.norm.unscale_params(target[..., L:].astype(np.float64))
        summary[f"{name}_rel_error_latent"] = float(np.mean([relative_error(p, t) for p, t in
                                                             zip(pred[..., :L], target[..., :L])]))
        summary[f"{name}_rel_error_params"] = float(np.mean([relative_error(p, t) for p, t in
                                                             zip(u_pred, u_true)]))
    write_json(out / "encoder.json", summary)
    return summary

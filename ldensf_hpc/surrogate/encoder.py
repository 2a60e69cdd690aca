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

import torch
from torch import nn

from ..config import ConfigError, EncoderConfig
from ..data.dataset import Normalization
from ..errors import InputError


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

    def encode_step(self, y_t: torch.Tensor, state=None):
        """One observation time ``y_t (B, m)``: returns ``s_hat (B, latent)``, ``u_hat (B, p)`` and the new state."""
        out, state = self(y_t.unsqueeze(1), state)
        return out[:, 0, :self.latent], out[:, 0, self.latent:], state

    def to_checkpoint(self) -> dict:
        return {"kind": self.kind, "config": dataclasses.asdict(self.cfg), "n_obs": self.n_obs,
                "latent": self.latent, "n_params": self.n_params, "norm": self.norm.to_dict(),
                "observe": self.observe, "frame_every": self.frame_every,
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> LSTMEncoder:
        model = cls(EncoderConfig(**ckpt["config"]), ckpt["n_obs"], ckpt["latent"], ckpt["n_params"],
                    Normalization.from_dict(ckpt["norm"]), ckpt["observe"], ckpt["frame_every"])
        model.load_state_dict(ckpt["state_dict"])
        return model

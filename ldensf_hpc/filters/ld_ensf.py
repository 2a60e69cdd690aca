"""LD-EnSF: the ensemble score filter in the LDNet latent space (paper Algorithm 2, eqs. 18-20).

The assimilated state of a member is ``z = (s, u)``: the LDNet latent state and the
scaled parameters. Everything runs through the one filter interface:

- :class:`LatentModel` is the forecast model (model protocol): ``s <- s + dt F(s, u)``
  (eq. 19), ``u`` persistent; its "fields" are ``z`` standardised per component with
  the training-set statistics of the encoder's targets.
- :func:`latent_observations` encodes a sparse, noisy observation history with the
  LSTM into latent observations ``(s_hat_t, u_hat_t)`` (eq. 16); the latent observation
  operator is the identity on ``z`` (eq. 18).
- :class:`LDEnSF` is the analysis: the fused EnSF update of :mod:`ldensf_hpc.kernels`
  on the standardised ``z``. The pseudo-time diffusion ends at N(0, I), so the state
  must be of unit scale: the reference code multiplies its (small) latent by 100; we
  standardise instead. Measured on a 2-D Gaussian (K = 200, mixture score, obs std
  0.2 prior std): at unit scale the analysis mean is within 0.04 prior std of the
  Kalman mean; with the state scaled x10 or x100 the update barely moves the prior.

Full fields are reconstructed with R only when wanted (:func:`reconstruct`, eq. 20).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .. import kernels
from ..config import ConfigError
from ..observe import full_operator
from .base import Observation, check_inputs

EPS_ALPHA_BY_CASE = {"swe": 0.5, "kolmogorov": 0.01}
"""Reference settings of eps_alpha (DESIGN.md: 0.01, tsunami 0.5)."""


class LatentModel:
    """The LDNet dynamics as a model of the common protocol, on ``z = (s, u)`` ``(K, latent + p)``.

    One model step is one latent Euler step (``frame_every`` stored frames of the data).
    """

    name = "ldnet"

    def __init__(self, ldnet, mean=None, std=None):
        self.ldnet = ldnet
        self.latent, self.n_params = ldnet.latent, ldnet.n_params
        d = self.latent + self.n_params
        self.mean = np.zeros(d) if mean is None else np.asarray(mean, np.float64).reshape(d)
        self.std = np.ones(d) if std is None else np.asarray(std, np.float64).reshape(d)
        self.dt = ldnet.cfg.dt_hat
        self.field_names = tuple(f"s{i}" for i in range(self.latent)) + tuple(ldnet.param_names)
        self.param_names = tuple(ldnet.param_names)

    def initial_state(self, params, rng=None) -> np.ndarray:
        """``s_{-1} = 0`` with physical parameters ``params (K, p)`` scaled to [-1, 1]."""
        u = np.asarray(self.ldnet.norm.scale_params(np.asarray(params, dtype=np.float64)), dtype=np.float32)
        return np.concatenate([np.zeros((len(u), self.latent), np.float32), u], axis=1)

    def step(self, state, params=None, n_steps: int = 1) -> np.ndarray:
        z = torch.as_tensor(np.asarray(state, dtype=np.float32))
        s, u = z[:, :self.latent], z[:, self.latent:]
        with torch.no_grad():
            s = self.ldnet.step(s, u, n_steps)
        return torch.cat([s, u], dim=1).numpy()

    def to_fields(self, state):
        """Standardised ``z``: ``(z - mean) / std`` per component."""
        return ((np.asarray(state, np.float64) - self.mean) / self.std).astype(np.float32)

    def from_fields(self, fields):
        return (np.asarray(fields, np.float64) * self.std + self.mean).astype(np.float32)

    def params(self, state) -> np.ndarray:
        """Physical parameters of each member ``(K, p)``."""
        return np.asarray(self.ldnet.norm.unscale_params(np.asarray(state[:, self.latent:], np.float64)))


def latent_truth(ldnet, params, n_frames: int) -> np.ndarray:
    """``z`` along the LDNet trajectory at the true parameters, ``(n_frames, latent + p)`` (Fig. 5's reference)."""
    u = torch.as_tensor(ldnet.norm.scale_params(np.asarray(params, np.float64)[None]), dtype=torch.float32)
    with torch.no_grad():
        s = ldnet.rollout(u, n_frames)[0]
    return torch.cat([s, u.expand(n_frames, -1)], dim=1).numpy()


def latent_observations(encoder, y: np.ndarray) -> np.ndarray:
    """Encode an observation history ``y (T, m)`` into ``(T, latent + p)`` latent observations (eq. 16)."""
    with torch.no_grad():
        s_hat, u_hat = encoder.encode(torch.as_tensor(np.asarray(y, np.float32))[None])
    return torch.cat([s_hat[0], u_hat[0]], dim=-1).numpy()


def latent_operator(model: LatentModel):
    """The identity observation operator on ``z`` (eq. 18)."""
    return full_operator((model.latent + model.n_params,))


def reconstruct(ldnet, z: np.ndarray, x, y) -> np.ndarray:
    """Physical fields ``(..., F, ny, nx)`` from states ``z (..., latent + p)`` with R (eq. 20)."""
    s = torch.as_tensor(np.asarray(z, np.float32)[..., :ldnet.latent])
    return ldnet.fields_on_grid(s, x, y).numpy()


@dataclass
class LDEnSF:
    """Latent EnSF analysis (Algorithm 2, step 3) through the fused kernel.

    Parameters
    ----------
    n_steps, eps_alpha, eps_beta, mixture, score_clip : the EnSF schedule and score.
    kernel : backend of :func:`ldensf_hpc.kernels.ensf_update` (reference, numba, cuda).
    """

    n_steps: int = 100
    eps_alpha: float = 0.01
    eps_beta: float = 0.0
    mixture: bool = True
    score_clip: float | None = None
    kernel: str = "numba"
    name: ClassVar[str] = "ld_ensf"
    capabilities: ClassVar[dict] = {
        "space": "LDNet latent + parameters", "dynamics": "LDNet", "parameters": True,
        "irregular_times": False, "moving_sensors": "with the set encoder", "smoother": False
    }

    def __post_init__(self):
        if self.kernel not in kernels.BACKENDS:
            raise ConfigError(f"LD-EnSF: unknown kernel {self.kernel!r}; choose one of {', '.join(kernels.BACKENDS)}")

    @classmethod
    def from_config(cls, cfg) -> LDEnSF:
        e, ld = cfg.ensf, cfg.ld_ensf
        eps_alpha = ld.eps_alpha if ld.eps_alpha is not None else EPS_ALPHA_BY_CASE.get(cfg.case, e.eps_alpha)
        return cls(n_steps=e.n_steps, eps_alpha=eps_alpha, eps_beta=e.eps_beta, mixture=e.mixture,
                   score_clip=e.score_clip, kernel=e.kernel)

    def analyse(self, forecast, obs: Observation, rng: np.random.Generator):
        """Analysis ``(K, latent + p)`` for an identity-operator latent observation."""
        check_inputs(forecast, obs)
        if obs.operator.m != obs.operator.d:
            raise ConfigError("LD-EnSF assimilates latent observations: the operator must be the identity")
        seed = int(rng.integers(0, 2**63))
        analysis = kernels.ensf_update(np.asarray(forecast), np.asarray(obs.y), np.asarray(obs.std),
                                       n_steps=self.n_steps, eps_alpha=self.eps_alpha, eps_beta=self.eps_beta,
                                       mixture=self.mixture, score_clip=self.score_clip, seed=seed,
                                       backend=self.kernel)
        return analysis.astype(np.asarray(forecast).dtype, copy=False)

"""Latent-EnSF: the ensemble score filter in the latent space of a coupled VAE (LD-EnSF paper §2.3).

One analysis (Si & Chen 2024, ref. [43]) of a full-state forecast ensemble:

1. encode the members with the state encoder, ``z_k = mu_state(x_k)``;
2. encode the sparse observation with the observation encoder, ``z_y = mu_obs(y)``: the
   latent observation of the identity operator, with noise std ``latent_std``;
3. one EnSF update of ``{z_k}`` towards ``z_y`` with the fused kernel of
   :mod:`ldensf_hpc.kernels` (eqs. 6-12);
4. decode the analysis latents with ``D``.

The full solver then propagates the decoded fields to the next observation time (the
forecast stays in the full space; that is what LD-EnSF removes). Members are flattened
standardised fields ``(K, F * ny * nx)`` and observations standardised sparse vectors of
the operator the VAE was trained with (see :mod:`ldensf_hpc.surrogate.vae`).

The latent observation error is not the observation noise: it is dominated by how well
``E_obs`` matches ``E_state``. :func:`latent_obs_std` measures it on frames with noisy
observations; the filter uses ``latent_std`` and ignores ``obs.std``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .. import kernels
from ..backend import array_module, to_numpy
from ..config import ConfigError
from ..errors import InputError
from ..observe import ObservationOperator, make_operator
from .base import Observation, check_inputs


def _device(vae) -> torch.device:
    return next(vae.parameters()).device


def encode_states(vae, x) -> np.ndarray:
    """State-encoder means ``(K, L)`` float64 of standardised states ``(K, F, ny, nx)`` or ``(K, F * ny * nx)``."""
    x = np.asarray(to_numpy(x), dtype=np.float32)
    if x.ndim == 2:
        if x.shape[1] != np.prod(vae.state_shape):
            raise InputError(f"flattened states must have {np.prod(vae.state_shape)} components, got {x.shape[1]}")
        x = x.reshape(len(x), *vae.state_shape)
    with torch.no_grad():
        mu = vae.encode_state(torch.from_numpy(np.ascontiguousarray(x)).to(_device(vae)))[0]
    return mu.cpu().numpy().astype(np.float64)


def encode_observations(vae, y) -> np.ndarray:
    """Observation-encoder means ``(N, L)`` float64 of standardised observations ``(N, m)``."""
    y = np.asarray(to_numpy(y), dtype=np.float32)
    with torch.no_grad():
        mu = vae.encode_obs(torch.from_numpy(np.ascontiguousarray(y)).to(_device(vae)))[0]
    return mu.cpu().numpy().astype(np.float64)


def decode_states(vae, z) -> np.ndarray:
    """Decoded standardised states ``(K, F, ny, nx)`` float32 of latents ``(K, L)``."""
    z = torch.as_tensor(np.asarray(z, dtype=np.float32), device=_device(vae))
    with torch.no_grad():
        return vae.decode(z).cpu().numpy()


def check_operator(vae, operator: ObservationOperator) -> None:
    """Raise :class:`ConfigError` unless ``operator`` is the one ``vae`` was trained with."""
    if operator.shape != vae.state_shape:
        raise ConfigError(f"the VAE encodes states of shape {vae.state_shape}, the operator is for {operator.shape}")
    if operator.m != vae.n_obs:
        raise ConfigError(f"the VAE's observation encoder takes {vae.n_obs} observations, the operator gives "
                          f"{operator.m}; use the operator it was trained with ({vae.observe or 'unknown'})")
    if vae.observe:
        trained = make_operator(vae.observe["name"], vae.state_shape, **vae.observe.get("options", {}))
        if not np.array_equal(trained.index, operator.index):
            raise ConfigError(f"the operator observes other components than the one the VAE was trained with "
                              f"({vae.observe})")


def latent_obs_std(vae, frames, operator: ObservationOperator, std, rng: np.random.Generator) -> np.ndarray:
    """Latent observation error ``(L,)``: RMSE over frames of ``mu_obs(H x + std z) - mu_state(x)``.

    ``frames`` are standardised states ``(N, F, ny, nx)``, ``std`` the observation noise
    std (scalar or ``(m,)``) in standardised units, ``z ~ N(0, I)`` drawn from ``rng``.
    """
    check_operator(vae, operator)
    frames = np.asarray(to_numpy(frames), dtype=np.float32)
    if frames.ndim != 4 or frames.shape[1:] != vae.state_shape or len(frames) < 1:
        raise InputError(f"frames must be (N >= 1, {', '.join(map(str, vae.state_shape))}), got {frames.shape}")
    std = np.asarray(std, dtype=np.float64)
    if std.shape not in ((), (operator.m,)) or not np.all(std >= 0):
        raise InputError(f"observation noise std must be >= 0, a scalar or ({operator.m},), got shape {std.shape}")
    y = operator.apply(frames) + std * rng.standard_normal((len(frames), operator.m))
    diff = encode_observations(vae, y) - encode_states(vae, frames)
    return np.sqrt(np.mean(diff**2, axis=0))


@dataclass
class LatentEnSF:
    """Latent-EnSF analysis through a coupled VAE and the fused EnSF kernel.

    Parameters
    ----------
    vae : CoupledVAE
        Trained coupled VAE (its operator must be the observations').
    latent_std : float or (L,) array
        Noise std of the latent observation ``mu_obs(y)`` (see :func:`latent_obs_std`).
    n_steps, eps_alpha, eps_beta, mixture, score_clip : the EnSF schedule and score.
    kernel : backend of :func:`ldensf_hpc.kernels.ensf_update` (reference, numba, cuda).
    """

    vae: object
    latent_std: object
    n_steps: int = 100
    eps_alpha: float = 0.01
    eps_beta: float = 0.0
    mixture: bool = True
    score_clip: float | None = None
    kernel: str = "numba"
    name: ClassVar[str] = "latent_ensf"
    capabilities: ClassVar[dict] = {
        "space": "VAE latent", "dynamics": "full solver", "parameters": False, "irregular_times": True,
        "moving_sensors": False, "smoother": False
    }

    def __post_init__(self):
        if self.kernel not in kernels.BACKENDS:
            raise ConfigError(f"Latent-EnSF: unknown kernel {self.kernel!r}; "
                              f"choose one of {', '.join(kernels.BACKENDS)}")
        std = np.asarray(self.latent_std, dtype=np.float64)
        if std.shape not in ((), (self.vae.latent,)):
            raise InputError(f"latent_std must be a scalar or ({self.vae.latent},), got shape {std.shape}")
        if not (np.all(np.isfinite(std)) and np.all(std > 0)):
            raise InputError("latent_std must be finite and > 0")
        self.latent_std = std

    @classmethod
    def from_config(cls, cfg, vae, latent_std) -> LatentEnSF:
        e = cfg.ensf
        return cls(vae=vae, latent_std=latent_std, n_steps=e.n_steps, eps_alpha=e.eps_alpha, eps_beta=e.eps_beta,
                   mixture=e.mixture, score_clip=e.score_clip, kernel=e.kernel)

    def analyse(self, forecast, obs: Observation, rng: np.random.Generator):
        """Analysis ``(K, F * ny * nx)`` (standardised fields, the forecast's dtype and array backend)."""
        check_inputs(forecast, obs)
        check_operator(self.vae, obs.operator)
        z = encode_states(self.vae, forecast)
        z_obs = encode_observations(self.vae, to_numpy(obs.y)[None])[0]
        seed = int(rng.integers(0, 2**63))
        analysis = kernels.ensf_update(z, z_obs, self.latent_std, n_steps=self.n_steps, eps_alpha=self.eps_alpha,
                                       eps_beta=self.eps_beta, mixture=self.mixture, score_clip=self.score_clip,
                                       seed=seed, backend=self.kernel)
        fields = decode_states(self.vae, to_numpy(analysis)).reshape(len(z), -1)
        return array_module(forecast).asarray(fields, dtype=forecast.dtype)

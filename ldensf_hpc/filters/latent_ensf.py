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
``E_obs`` matches ``E_state``. :func:`latent_obs_std` measures it on validation frames
with noisy observations; the filter uses ``latent_std`` and ignores ``obs.std``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch

from ..backend import array_module, to_numpy
from ..errors import ConfigError, InputError
from ..observe import ObservationOperator, make_operator
from .base import FULL_SOLVER, Capabilities, Observation, ObservationSet, Problem, check_inputs
from .cycle import SequentialFilter
from .ensf import ScoreSettings

CALIBRATION_TRAJECTORIES = 4
"""Validation trajectories whose frames calibrate the latent observation error."""


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


def latent_obs_std(vae, frames, y) -> np.ndarray:
    """Latent observation error ``(L,)``: RMSE over frames of ``mu_obs(y) - mu_state(x)``.

    ``frames`` are standardised states ``(N, F, ny, nx)`` and ``y`` ``(N, m)`` their noisy
    standardised observations by the operator the VAE was trained with.
    """
    frames = np.asarray(to_numpy(frames), dtype=np.float32)
    if frames.ndim != 4 or frames.shape[1:] != vae.state_shape or len(frames) < 1:
        raise InputError(f"frames must be (N >= 1, {', '.join(map(str, vae.state_shape))}), got {frames.shape}")
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (len(frames), vae.n_obs):
        raise InputError(f"observations must be ({len(frames)}, {vae.n_obs}), got {y.shape}")
    diff = encode_observations(vae, y) - encode_states(vae, frames)
    return np.sqrt(np.mean(diff**2, axis=0))


@dataclass
class LatentEnSF(ScoreSettings, SequentialFilter):
    """Latent-EnSF analysis through a coupled VAE and the fused EnSF kernel.

    Parameters
    ----------
    vae : CoupledVAE, optional
        Trained coupled VAE (its operator must be the observations'); by default the
        problem's ``vae`` surrogate.
    latent_std : float or (L,) array, optional
        Noise std of the latent observation ``mu_obs(y)``; by default calibrated on
        ``CALIBRATION_TRAJECTORIES`` validation trajectories at the observations' noise level
        (:func:`latent_obs_std`). Floored at the stability limit of the explicit step.
    n_steps, eps_alpha, eps_beta, mixture, score_clip, kernel : see :class:`~ldensf_hpc.filters.ensf.ScoreSettings`.
    """

    vae: object = None
    latent_std: object = None
    kernel: str = "numba"
    name: ClassVar[str] = "latent_ensf"
    settings_read: ClassVar[tuple[str, ...]] = ("ensf.n_steps", "ensf.eps_alpha", "ensf.eps_beta", "ensf.mixture",
                                                "ensf.score_clip", "ensf.kernel")
    label: ClassVar[str] = "Latent-EnSF"
    capabilities: ClassVar[Capabilities] = Capabilities(parameters=False, irregular_times=True,
                                                        moving_sensors=False, smoother=False, member_sharding=True)
    space: ClassVar[str] = "VAE latent"
    dynamics: ClassVar[str] = FULL_SOLVER

    def __post_init__(self):
        super().__post_init__()
        if self.latent_std is not None:
            std = np.asarray(self.latent_std, dtype=np.float64)
            if std.ndim > 1 or (self.vae is not None and std.shape not in ((), (self.vae.latent,))):
                raise InputError(f"latent_std must be a scalar or (latent,), got shape {std.shape}")
            if not (np.all(np.isfinite(std)) and np.all(std > 0)):
                raise InputError("latent_std must be finite and > 0")
            self.latent_std = std

    @classmethod
    def from_config(cls, cfg) -> LatentEnSF:
        return cls(**cls.settings(cfg, cfg.ensf.kernel))

    def surrogates(self, cfg) -> tuple[str, ...]:
        return ("vae",)

    def state_dim(self, problem: Problem) -> int:
        return int((self.vae or problem.surrogate("vae")).latent)

    def prepare(self, problem: Problem, observations: ObservationSet):
        """Bind the problem's VAE and the latent observation std calibrated at this noise level."""
        vae = self.vae if self.vae is not None else problem.surrogate("vae")
        for op in problem.operators:
            check_operator(vae, op)
        std = self.latent_std
        if std is None:
            frames, y = [], []
            for traj in problem.validation_trajectories(CALIBRATION_TRAJECTORIES):
                obs = problem.observe(traj.frames, observations.level, traj.index)
                frames.append((traj.frames - problem.field_mean[:, None, None]) / problem.field_std[:, None, None])
                y += [o.y for o in problem.standardized(obs)]
            std = latent_obs_std(vae, np.concatenate(frames), np.stack(y))
        bound = replace(self, vae=vae, latent_std=self.sde.floor_std(std))
        return bound, {"latent_obs_std_mean": float(np.mean(bound.latent_std))}

    def analyse(self, forecast, obs: Observation, rng: np.random.Generator, rows: slice | None = None):
        """Analysis samples ``(J, F * ny * nx)`` of members ``rows`` (standardised fields, the forecast's
        dtype and array backend)."""
        check_inputs(forecast, obs)
        check_operator(self.vae, obs.operator)
        z = encode_states(self.vae, forecast)
        z_obs = encode_observations(self.vae, to_numpy(obs.y)[None])[0]
        analysis = self.update(z, z_obs, rows, obs_std=self.latent_std, seed=int(rng.integers(0, 2**63)))
        fields = decode_states(self.vae, to_numpy(analysis)).reshape(len(analysis), -1)
        return array_module(forecast).asarray(fields, dtype=forecast.dtype)

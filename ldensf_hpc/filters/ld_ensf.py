"""LD-EnSF: the ensemble score filter in the LDNet latent space (paper Algorithm 2, eqs. 18-20).

The assimilated state of a member is ``z = (s, u)``: the LDNet latent state and the
scaled parameters. One cycle of Algorithm 2 per observation time ``t = 0 ... T - 1``:

1. forecast ``s_t = s_{t-1} + dt F(s_{t-1}, u)`` (eq. 19, :class:`LatentModel`; ``u``
   persistent, ``s_{-1} = 0``);
2. encode the sparse, noisy observation history into the latent observation
   ``(s_hat_t, u_hat_t)`` (eq. 16; the LSTM encoder on a fixed sensor grid, the point-set
   encoder for moving sensors); the latent observation operator is the identity on ``z``
   (eq. 18) with the encoder's error std as noise, calibrated on validation histories;
3. the EnSF update of ``z`` (eqs. 6-12) through the kernel dispatch of
   :mod:`ldensf_hpc.kernels` on ``z`` standardised per component with the training-set
   statistics of the encoder's targets;
4. reconstruct fields with R only where a field is wanted (eq. 20, :func:`reconstruct`).

Cycles 1-3 run in the sequential driver :func:`~ldensf_hpc.filters.cycle.cycle`.
Why standardise: the pseudo-time diffusion ends at N(0, I), so the state must be of unit
scale; the reference code multiplies its (small) latent by 100. Measured on a 2-D
Gaussian (K = 200, mixture score, obs std 0.2 prior std): at unit scale the analysis mean
is within 0.04 prior std of the Kalman mean; with the state scaled x10 or x100 the
update barely moves the prior.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .. import kernels
from ..errors import ConfigError, InputError
from ..observe import full_operator
from .base import Capabilities, Method, MethodRun, Observation, ObservationSet, Problem, check_inputs
from .cycle import cycle
from .ensf import ScoreSettings

ENCODERS = {"lstm": "encoder", "set": "set_encoder"}
"""``ld_ensf.encoder`` -> the checkpoint of that observation encoder."""


class LatentModel:
    """The LDNet dynamics as a model of the common protocol, on ``z = (s, u)`` ``(K, latent + p)``.

    One model step is one latent Euler step (``frame_every`` stored frames of the data); its
    "fields" are ``z`` standardised per component, ``(z - mean) / std``.
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
        """Physical parameters of each member ``(..., p)``."""
        return np.asarray(self.ldnet.norm.unscale_params(np.asarray(state[..., self.latent:], np.float64)))


def latent_truth(ldnet, params, n_frames: int) -> np.ndarray:
    """``z`` along the LDNet trajectory at the true parameters, ``(n_frames, latent + p)`` (Fig. 5's reference)."""
    u = torch.as_tensor(ldnet.norm.scale_params(np.asarray(params, np.float64)[None]), dtype=torch.float32)
    with torch.no_grad():
        s = ldnet.rollout(u, n_frames)[0]
    return torch.cat([s, u.expand(n_frames, -1)], dim=1).numpy()


def latent_operator(model: LatentModel):
    """The identity observation operator on ``z`` (eq. 18)."""
    return full_operator((model.latent + model.n_params,))


def reconstruct(ldnet, z: np.ndarray, x, y) -> np.ndarray:
    """Physical fields ``(..., F, ny, nx)`` from states ``z (..., latent + p)`` with R (eq. 20)."""
    s = torch.as_tensor(np.asarray(z, np.float32)[..., :ldnet.latent])
    return ldnet.fields_on_grid(s, x, y).numpy()


def latent_run(problem: Problem, ldnet, z: np.ndarray, **kwargs) -> MethodRun:
    """The run of latent members ``z (T, K, D)``: their fields as ``problem.fields`` asks (every member
    reconstructed, or the mean latent state only) and physical parameters ``(T, K, p)``; ``T_r`` in the
    timings is the wall time of one time's reconstruction (the paper's T_r)."""
    params = np.asarray(ldnet.norm.unscale_params(np.asarray(z[..., ldnet.latent:], np.float64)))
    t0 = time.perf_counter()
    if problem.fields == "mean":
        fields = reconstruct(ldnet, z.mean(axis=1), problem.x, problem.y)
        run = MethodRun(fields.astype(np.float64), None, None, params, **kwargs)
    else:
        fields = reconstruct(ldnet, z, problem.x, problem.y).astype(np.float32)
        run = MethodRun.of_members(fields, problem.keep_members, params=params, **kwargs)
    run.timings["T_r"] = (time.perf_counter() - t0) / len(z)
    return run


def latent_steps(problem: Problem, ldnet) -> np.ndarray:
    """Observation times in latent steps (fractional between steps: irregular times)."""
    return problem.frames / ldnet.cfg.frame_every


def latent_obs_std(problem: Problem, ldnet, encoder, level: float) -> np.ndarray:
    """Latent observation error std ``(latent + p,)``: RMSE of the encoder on noisy validation histories.

    This is the R of the identity latent observation operator (eq. 18): how far the encoded
    pair (s_hat, u_hat) lies from the LDNet trajectory at the true parameters.
    """
    errors = []
    for traj in problem.validation_trajectories():
        obs = problem.observe(traj.frames, level, traj.index)
        errors.append(encoder.encode_history(problem.operators, obs.y)
                      - latent_truth(ldnet, traj.params, len(traj.frames)))
    return np.sqrt(np.mean(np.concatenate(errors) ** 2, axis=0))


@dataclass
class LDEnSF(ScoreSettings, Method):
    """LD-EnSF (Algorithm 2): LDNet forecasts, EnSF on encoded latent observations, R on demand.

    Parameters
    ----------
    n_steps, eps_alpha, eps_beta, mixture, score_clip, kernel : the EnSF schedule and score
        (:class:`~ldensf_hpc.filters.ensf.ScoreSettings`; the kernel runs the latent update).
    encoder : ``lstm`` (fixed sensor grid), ``set`` (point-set encoder, moving sensors) or
        ``auto`` (lstm on the grid, set for moving sensors).
    obs_std_floor : lower bound of the latent observation std (standardised units).
    latent_std : latent observation std ``(latent + p,)`` in ``z`` units; by default calibrated on
        the problem's validation trajectories at the observations' noise level.
    """

    kernel: str = "numba"
    encoder: str = "auto"
    obs_std_floor: float = 1.0e-2
    latent_std: object = None
    name: ClassVar[str] = "ld_ensf"
    settings_read: ClassVar[tuple[str, ...]] = ("ensf.eps_beta", "ensf.mixture", "ensf.score_clip", "ensf.kernel",
                                                "ld_ensf")
    label: ClassVar[str] = "LD-EnSF"
    capabilities: ClassVar[Capabilities] = Capabilities(parameters=True, irregular_times=False,
                                                        moving_sensors=True, smoother=False, member_sharding=True)
    space: ClassVar[str] = "LDNet latent + parameters"
    dynamics: ClassVar[str] = "LDNet"

    def __post_init__(self):
        super().__post_init__()
        if self.encoder not in ("auto", *ENCODERS):
            raise ConfigError(f"ld_ensf.encoder must be auto, {' or '.join(ENCODERS)}, got {self.encoder!r}")
        if not self.obs_std_floor >= 0:
            raise ConfigError(f"ld_ensf.obs_std_floor must be >= 0, got {self.obs_std_floor}")

    @classmethod
    def from_config(cls, cfg) -> LDEnSF:
        ld = cfg.ld_ensf
        return cls(**cls.settings(cfg, cfg.ensf.kernel, ld.eps_alpha, ld.n_steps), encoder=ld.encoder,
                   obs_std_floor=ld.obs_std_floor)

    def encoder_name(self, cfg) -> str:
        """The encoder for ``cfg.observe.sensors``: ``lstm`` on the fixed grid, ``set`` for moving sensors."""
        if self.encoder == "auto":
            return "lstm" if cfg.observe.sensors == "grid" else "set"
        if self.encoder == "lstm" and cfg.observe.sensors != "grid":
            raise ConfigError("the LSTM encoder needs the fixed grid of sensors; use ld_ensf.encoder=set "
                              "(or auto) with observe.sensors=moving")
        return self.encoder

    def surrogates(self, cfg) -> tuple[str, ...]:
        return ("ldnet", ENCODERS[self.encoder_name(cfg)])

    def state_dim(self, problem: Problem) -> int:
        ldnet = problem.surrogate("ldnet")
        return int(ldnet.latent + ldnet.n_params)

    def analyse(self, forecast, obs: Observation, rng: np.random.Generator, rows: slice | None = None):
        """Analysis samples ``(J, latent + p)`` of members ``rows`` for an identity-operator latent observation."""
        check_inputs(forecast, obs)
        if obs.operator.m != obs.operator.d:
            raise InputError("LD-EnSF assimilates latent observations: the operator must be the identity")
        analysis = self.update(np.asarray(forecast), np.asarray(obs.y), rows, obs_std=np.asarray(obs.std),
                               seed=int(rng.integers(0, 2**63)))
        return analysis.astype(np.asarray(forecast).dtype, copy=False)

    def assimilate(self, problem: Problem, observations: ObservationSet, seed: int = 0) -> MethodRun:
        ldnet = problem.surrogate("ldnet")
        name = self.encoder_name(problem.cfg)
        encoder = problem.surrogate(ENCODERS[name])
        steps = latent_steps(problem, ldnet)
        if not np.array_equal(steps, np.arange(problem.T)):
            raise ConfigError(f"LD-EnSF analyses once per latent step: observations every "
                              f"{ldnet.cfg.frame_every} stored frames from frame 0 (the LDNet's frame_every; "
                              f"set observe.every={ldnet.cfg.frame_every} and observe.irregular=false)")
        model = LatentModel(ldnet, encoder.out_mean.cpu().numpy(), encoder.out_std.cpu().numpy())
        std = self.latent_std if self.latent_std is not None else \
            latent_obs_std(problem, ldnet, encoder, observations.level)
        z_std = self.sde.floor_std(np.asarray(std) / model.std, self.obs_std_floor)
        t0 = time.perf_counter()
        z_obs = model.to_fields(encoder.encode_history(problem.operators, observations.y))
        T_encode = time.perf_counter() - t0
        op = latent_operator(model)
        kernels.ensf_update(np.zeros((2, 1), np.float32), np.zeros(1), 1.0, n_steps=1,
                            backend=self.kernel)  # compiles the kernel before the timed cycles
        run = cycle(model, self, model.initial_state(problem.prior_params), [Observation(op, z, z_std) for z in z_obs],
                    np.ones(problem.T, dtype=int), seed=seed, sharding=problem.sharding, keep_members=True)
        return latent_run(problem, ldnet, model.from_fields(run.analysis.members),
                          timings={"T_d": run.T_d, "T_f": run.T_f + T_encode, "T_encode": T_encode},
                          extra={"encoder": name, "latent_obs_std": z_std.tolist(), "kernel": self.kernel})

"""Typed configuration sections and the generic YAML builder (``key.sub=value`` overrides).

Case-independent: the solver section of a config (``Config.model``) is the dataclass of the
case's model, and the presets of each case are merged by :func:`ldensf_hpc.cases.load_config`;
this module knows no case.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import ConfigError


def bounded(default, *, ge=None, gt=None, le=None, lt=None):
    """A dataclass field whose value :func:`_build` checks against the bounds (None passes: "off")."""
    return field(default=default, metadata={"bounds": {"ge": ge, "gt": gt, "le": le, "lt": lt}})


_BOUNDS = {"ge": (">=", float.__ge__), "gt": (">", float.__gt__), "le": ("<=", float.__le__), "lt": ("<", float.__lt__)}


def _check_bounds(value, bounds: dict, where: str) -> None:
    """Refuse a number (or a number of a tuple) outside ``bounds``, naming the field and the range."""
    wanted = {k: b for k, b in bounds.items() if b is not None}
    for item in value if isinstance(value, tuple) else (value,):
        if item is not None and not all(_BOUNDS[k][1](float(item), float(b)) for k, b in wanted.items()):
            rule = " and ".join(f"{_BOUNDS[k][0]} {b:g}" for k, b in wanted.items())
            raise ConfigError(f"{where} must be {rule}, got {item!r}")


@dataclass
class DataConfig:
    n_trajectories: int = bounded(200, ge=1)
    shard_size: int = bounded(4, ge=1)  # trajectories per HDF5 shard
    seed: int = bounded(0, ge=0)
    split: tuple[float, float, float] = bounded((0.6, 0.2, 0.2), ge=0)  # train, val, test; sum 1
    points_per_frame: int = bounded(5000, ge=1)

    def check(self, where: str) -> None:
        if abs(sum(self.split) - 1.0) > 1e-9:
            raise ConfigError(f"{where}.split must sum to 1 (train, validation, test fractions), "
                              f"got {list(self.split)}")


@dataclass
class ClusterConfig:
    """Dask SLURM cluster knobs for ``ldensf generate --scheduler slurm`` (dask_jobqueue)."""

    queue: str | None = None  # SLURM partition (-p)
    account: str | None = None  # SLURM account (-A)
    walltime: str = "01:00:00"
    cores: int = bounded(1, ge=1)  # cores per job, one single-threaded Dask worker per core
    memory: str = "4GB"  # memory per job
    worker_timeout: float = bounded(600.0, gt=0)  # seconds to wait for the first Dask worker (any scheduler)


@dataclass
class ObserveConfig:
    stride: int = bounded(15, ge=1)  # every stride-th grid point (10 x 10 of 150 x 150)
    every: int = bounded(8, ge=1)  # stored frames between observations (SWE: 40 steps)
    noise: float = bounded(0.1, ge=0)  # relative to the normalised field's std
    noise_floor: float = bounded(0.01, gt=0)  # noise std assumed when noise is 0 (no likelihood without noise)
    sensors: str = "grid"  # grid: fixed grid of `stride`; moving: as many points, drawn afresh every time
    irregular: bool = False  # observation times drawn between latent steps instead of on them


@dataclass
class EnSFConfig:
    """Ensemble score filter settings (paper eqs. 6-12)."""

    ensemble_size: int = bounded(20, ge=2)
    n_steps: int = bounded(100, ge=1)  # Euler-Maruyama steps in pseudo-time
    eps_alpha: float = bounded(0.01, gt=0, lt=1)
    eps_beta: float = bounded(0.0, ge=0, lt=1)
    mixture: bool = True  # mixture prior score (False: member-paired)
    score_clip: float | None = bounded(1000.0, gt=0)  # the reference package clips the score to ±1000 (None: no clip)
    kernel: str = "numba"  # latent filters' reverse-SDE backend: reference | numba | cuda | cuda_host (emulated)
    full_space_kernel: str = "blas"  # of the full-space EnSF (large d: two BLAS products + one fused pass per step)
    full_space_precision: str = "float32"  # full-space EnSF storage and products: float32 (twice as fast) | float64


@dataclass
class LDEnSFConfig:
    """LD-EnSF settings on top of ``ensf`` (mixture, clip, kernel, ensemble_size)."""

    # Euler-Maruyama steps of the latent update: the explicit step of the likelihood score is stable only
    # for an observation std above sqrt(dt max(g2 h) / 2) (ldensf_hpc.sde), so the few-% latent errors of
    # a good encoder need small steps; at d ~ 20 a step costs microseconds
    n_steps: int = bounded(1000, ge=1)
    # latent EnSF schedule constant (small presets 0.1; tiny, paper: SWE 0.5, Kolmogorov 0.01)
    eps_alpha: float = bounded(0.01, gt=0, lt=1)
    obs_std_floor: float = bounded(1.0e-2, gt=0)  # lower bound of the latent observation std (standardised units)
    encoder: str = "auto"  # lstm | set (point-set encoder) | auto: lstm for grid sensors, set for moving ones


@dataclass
class LETKFConfig:
    """LETKF baseline (Hunt et al. 2007) with Gaspari-Cohn R-localisation."""

    radius: float | None = bounded(8.0, gt=0)  # Gaspari-Cohn half-width in grid points (None: global ETKF)
    inflation: float = bounded(1.02, gt=0)  # multiplicative covariance inflation (1: none)


@dataclass
class EnVar4DConfig:
    """Full-space 4DEnVar (LEVDA paper §2.3, eq. 11)."""

    window: int = bounded(5, ge=1)  # observation times per assimilation window
    inflation: float = bounded(1.0, gt=0)  # multiplicative factor rho on the anomalies (1: none)
    outer_loops: int = bounded(1, ge=1)  # Gauss-Newton linearisations per window


@dataclass
class LEVDAConfig:
    """LEVDA, latent ensemble 4D-Var (LEVDA paper §3.2, eq. 19)."""

    window: int = bounded(5, ge=1)  # latent steps per assimilation window (tau)
    inflation: float = bounded(1.0, gt=0)  # multiplicative factor rho on the anomalies (1: none)
    additive: float = bounded(0.0, ge=0)  # std sigma of the additive anomaly noise, in z units (0: none)
    max_iter: int = bounded(50, ge=1)  # L-BFGS iterations per window
    history: int = bounded(10, ge=1)  # L-BFGS memory
    perturb_obs: bool = False  # randomised-maximum-likelihood members (False: the paper's warm starts only)
    model_error: float = bounded(0.0, ge=0)  # LDNet error std at a sensor (standardised), added to R (0: none)
    tempering: int = bounded(1, ge=1)  # minimisations per window, observation term weighed 10^-(n-1) ... 1


@dataclass
class LDNetConfig:
    """LDNet sizes and training (paper §3.1, Table 3); defaults are the SWE network (each case's
    presets set its own)."""

    latent: int = bounded(10, ge=1)  # latent dimension d_s
    dyn_depth: int = bounded(8, ge=1)  # hidden layers of the dynamics network F
    dyn_width: int = bounded(50, ge=1)
    rec_depth: int = bounded(7, ge=1)  # hidden layers of the reconstruction network R (residual)
    rec_width: int = bounded(180, ge=1)
    fourier_features: int = bounded(64, ge=0)  # frozen random Fourier features of xi (sin + cos each)
    fourier_scale: float = bounded(2.0, gt=0)  # std of the random frequencies (xi in [-1, 1])
    activation: str = "relu"  # relu | tanh | gelu | silu
    dt_hat: float = bounded(0.036, gt=0)  # normalised latent time step (Table 3)
    frame_every: int = bounded(8, ge=1)  # stored frames per latent step (SWE: 40 solver steps)
    batch_size: int = bounded(2, ge=1)  # trajectories per batch
    lr: float = bounded(1.0e-3, gt=0)
    epochs: int = bounded(2000, ge=1)  # stage one: F and R jointly
    retrain_epochs: int = bounded(2000, ge=0)  # stage two: R only, F frozen
    retrain_lr: float = bounded(1.0e-4, gt=0)  # stage two starts from trained R: a smaller step keeps it there
    warmup: float = bounded(0.0, ge=0, lt=1)  # fraction of stage one's optimiser steps with a linear lr warm-up
    climatology: int = bounded(0, ge=0)  # degree of the polynomial train-mean field R adds to (0: a constant)
    clip_norm: float = bounded(0.0, ge=0)  # largest gradient 2-norm of an optimiser step, larger ones scaled down
    # to it (0: no clipping)


@dataclass
class EncoderConfig:
    """LSTM observation encoder (paper §3.2, Table 4); defaults are the SWE encoder (each case's
    presets set its own)."""

    layers: int = bounded(2, ge=1)
    hidden: int = bounded(256, ge=1)
    dropout: float = bounded(0.02, ge=0, lt=1)  # between LSTM layers
    batch_size: int = bounded(8, ge=1)  # trajectories per batch
    lr: float = bounded(1.0e-3, gt=0)
    epochs: int = bounded(30000, ge=1)


@dataclass
class VAEConfig:
    """Coupled convolutional VAE of Latent-EnSF (LD-EnSF paper §2.3; Si & Chen 2024).

    A state encoder (strided convolutions) and an observation encoder (MLP on the
    sparse observation vector) map into one latent space; a decoder (transposed
    convolutions) maps back to the full fields.
    """

    latent: int = bounded(400, ge=1)  # latent dimension (the paper's 400 for 150 x 150)
    width: int = bounded(32, ge=1)  # channels of the first convolution block (doubled per block)
    blocks: int = bounded(3, ge=1)  # stride-2 convolution blocks (the grid is padded to a multiple of 2**blocks)
    obs_hidden: int = bounded(256, ge=1)  # width of the observation encoder's two hidden layers
    kl_weight: float = bounded(1.0e-3, ge=0)  # weight of the KL terms to N(0, I)
    align_weight: float = bounded(1.0, ge=0)  # weight of |mu_obs - mu_state|^2 (shared latent space)
    obs_noise: float = bounded(0.0, ge=0)  # relative noise added to training observations (0: noiseless)
    batch_size: int = bounded(32, ge=1)  # frames per batch
    lr: float = bounded(1.0e-3, gt=0)
    epochs: int = bounded(200, ge=1)


@dataclass
class SetEncoderConfig:
    """Point-set observation encoder for moving sensors (LD-EnSF with changing positions).

    Each observation time is a set of (position, value, field) points, embedded point by
    point and mean-pooled (permutation invariant, any number of points); an LSTM over
    time maps the pooled features to ``(s_hat_t, u_hat_t)`` like the LSTM encoder.
    """

    width: int = bounded(128, ge=1)  # point embedding width
    point_layers: int = bounded(2, ge=1)  # hidden layers of the point embedding
    hidden: int = bounded(128, ge=1)  # LSTM width
    layers: int = bounded(1, ge=1)  # LSTM layers
    sensors: int = bounded(0, ge=0)  # points per time when training (0: as many as the grid operator observes)
    batch_size: int = bounded(8, ge=1)  # trajectories per batch
    lr: float = bounded(1.0e-3, gt=0)
    epochs: int = bounded(500, ge=1)


@dataclass
class TrainConfig:
    """Shared optimisation settings: Adam + cosine schedule, early stopping, checkpoints."""

    seed: int = bounded(0, ge=0)
    min_lr_ratio: float = bounded(0.01, ge=0, le=1)  # cosine schedule ends at lr * min_lr_ratio
    patience: int = bounded(200, ge=1)  # epochs without validation improvement before stopping
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (tf32 on CUDA, else fp32) | fp32 | tf32 (CUDA) | bf16 (autocast forward passes)
    threads: int = bounded(0, ge=0)  # torch CPU threads (0: all cores this process may use, at most 16)
    workers: int = bounded(0, ge=0)  # DataLoader worker processes


@dataclass
class Config:
    """A whole run's settings. ``model`` is the case's solver section; in YAML, ``--set`` and
    :meth:`to_dict` it is keyed by the case name (``swe: {n: 64}``, ``--set swe.n=64``)."""

    case: str = "swe"
    preset: str = "small"
    model: Any = None
    data: DataConfig = field(default_factory=DataConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    observe: ObserveConfig = field(default_factory=ObserveConfig)
    ensf: EnSFConfig = field(default_factory=EnSFConfig)
    letkf: LETKFConfig = field(default_factory=LETKFConfig)
    ld_ensf: LDEnSFConfig = field(default_factory=LDEnSFConfig)
    envar4d: EnVar4DConfig = field(default_factory=EnVar4DConfig)
    levda: LEVDAConfig = field(default_factory=LEVDAConfig)
    ldnet: LDNetConfig = field(default_factory=LDNetConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    set_encoder: SetEncoderConfig = field(default_factory=SetEncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        """Plain values, the solver section under the case's name."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        out = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in values.items()}
        out[self.case] = dataclasses.asdict(self.model) if self.model is not None else {}
        return out


SECTIONS = tuple(f.name for f in dataclasses.fields(Config) if f.name not in ("case", "preset", "model"))
"""The case-independent sections of a config."""


def _coerce(tp, value, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[str, ...]: any length
            args = args[:1] * len(value) if isinstance(value, (list, tuple)) else ()
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None:
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, str):  # YAML 1.1 reads 1e-2 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: must be a finite number, got {value!r}")
        if tp is int and float(value) != int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return tp(value)
    if tp is str:
        return str(value)
    return value


def _build(cls, values: dict, where: str):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    obj = cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in values.items():
        here = f"{where}.{name}" if where else name
        value = _coerce(hints[name], value, here)
        if "bounds" in fields[name].metadata:
            _check_bounds(value, fields[name].metadata["bounds"], here)
        setattr(obj, name, value)
    if hasattr(obj, "check"):
        obj.check(where)
    return obj


def merge(base: dict, extra: dict) -> dict:
    """``extra`` merged into ``base`` recursively (new dict)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict:
    """Turn ``"swe.n=64"`` into ``{"swe": {"n": 64}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({str(exc).splitlines()[0]})") from None
    for part in reversed(key.strip().split(".")):
        if not part:
            raise ConfigError(f"override {text!r} has an empty key")
        value = {part: value}
    return value


def build_config(values: dict, model_class: type) -> Config:
    """A :class:`Config` from plain values; the section named ``values["case"]`` is built as ``model_class``."""
    values = dict(values)
    case = values.get("case")
    if not isinstance(case, str):
        raise ConfigError(f"case must be a name, got {case!r}")
    model = _build(model_class, values.pop(case, None) or {}, case)
    cfg = _build(Config, values, "")
    cfg.model = model
    return cfg

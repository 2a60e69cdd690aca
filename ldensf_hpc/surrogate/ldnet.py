"""Latent Dynamics Network (LD-EnSF paper §3.1, eqs. 13-15).

A dynamics network F gives the latent time derivative and an explicit Euler step
advances the latent state from ``s_{-1} = 0``::

    s_dot_{t-1} = F(s_{t-1}, u_{t-1})                 (eq. 13)
    s_t = s_{t-1} + dt_hat * s_dot_{t-1}              (eq. 14)

A reconstruction network R maps a latent state and any point ``xi`` of the domain
(off-grid too) to the fields: ``x~(t, xi) = R(s_t, xi)``. R sees ``xi`` through a
frozen random Fourier embedding and uses residual hidden layers. With ``climatology = L > 0``
R is ``c(xi) + a * N(s, xi)``: ``c`` the train trajectories' mean field fitted by polynomials of
degree <= L in the point's features (on the sphere: spherical harmonics of degree <= L), ``a``
the per-field std of what is left, so the network N learns the anomaly at unit scale (a flow
whose forced part is small beside its mean state otherwise leaves R on the mean).

Units inside the network: ``u`` and ``xi`` scaled to [-1, 1], fields standardised
(see :class:`~ldensf_hpc.data.dataset.Normalization`, carried by the model).
:meth:`LDNet.fields_at` and :meth:`LDNet.fields_on_grid` take physical coordinates
and return physical fields.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..backend import rng_for
from ..config import LDNetConfig
from ..data.dataset import Normalization, TrajectoryStore, load_normalization, split_indices, standardized_frames
from ..data.store import write_json
from ..errors import ConfigError
from .euler_rollout import FUSED_ROLLOUTS
from .training import EVAL_TRAIN, ORDER_STREAM, Phase, check_training, relative_error, run_phases, select_device

_VAL_POINTS_STREAM = 12  # rng_for(data seed, stream): the fixed validation points

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """``depth`` hidden layers of ``width``; ``residual`` adds a skip around each hidden layer
    after the first. Glorot-normal weights, zero biases (paper Table 3)."""

    def __init__(self, n_in: int, n_out: int, width: int, depth: int, activation: str, residual: bool = False):
        super().__init__()
        if depth < 1 or width < 1:
            raise ConfigError(f"an MLP needs depth >= 1 and width >= 1, got depth {depth}, width {width}")
        self.inp = nn.Linear(n_in, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.out = nn.Linear(width, n_out)
        self.act = make_activation(activation)
        self.residual = residual
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                nn.init.xavier_normal_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.act(self.inp(x)))

    def body(self, h: torch.Tensor) -> torch.Tensor:
        """The layers after the first: ``h`` is the first hidden layer's output."""
        for layer in self.hidden:
            h = h + self.act(layer(h)) if self.residual else self.act(layer(h))
        return self.out(h)


class FourierEmbedding(nn.Module):
    """``gamma(xi) = [xi, sin(pi B xi), cos(pi B xi)]`` with frozen ``B ~ N(0, scale^2)`` of shape (dim, n)
    (dim: 2 on the plane, 3 on the sphere, where xi is a unit vector)."""

    def __init__(self, n_features: int, scale: float, dim: int = 2):
        super().__init__()
        if n_features < 0:
            raise ConfigError(f"fourier_features must be >= 0, got {n_features}")
        self.register_buffer("freqs", math.pi * scale * torch.randn(dim, n_features))
        self.n_out = dim + 2 * n_features

    def forward(self, xi: torch.Tensor) -> torch.Tensor:
        phase = xi @ self.freqs
        return torch.cat([xi, torch.sin(phase), torch.cos(phase)], dim=-1)


class Climatology(nn.Module):
    """A field ``c(xi) (..., F)`` that is a polynomial of degree <= ``degree`` in the features
    ``xi (..., dim)`` (products of Legendre polynomials), fitted by least squares (:meth:`fit`)."""

    def __init__(self, degree: int, dim: int, n_fields: int):
        super().__init__()
        self.degree = degree
        powers = [p for p in np.ndindex(*(degree + 1,) * dim) if sum(p) <= degree]
        self.register_buffer("powers", torch.as_tensor(powers, dtype=torch.long))  # (n_basis, dim)
        self.register_buffer("coeffs", torch.zeros(len(powers), n_fields))
        self.register_buffer("scale", torch.ones(n_fields))  # the anomaly std a per field

    def basis(self, xi: torch.Tensor) -> torch.Tensor:
        """``(..., n_basis)``: prod_k P_{p_k}(xi_k) for each power tuple p."""
        legendre = [torch.ones_like(xi), xi]
        for n in range(1, self.degree):
            legendre.append(((2 * n + 1) * xi * legendre[n] - n * legendre[n - 1]) / (n + 1))
        table = torch.stack(legendre[:self.degree + 1], dim=-1)  # (..., dim, degree + 1)
        return torch.stack([table[..., k, :][..., self.powers[:, k]] for k in range(xi.shape[-1])]).prod(dim=0)

    def forward(self, xi: torch.Tensor) -> torch.Tensor:
        return self.basis(xi) @ self.coeffs.to(xi.dtype)

    def fit(self, xi: torch.Tensor, frames: torch.Tensor) -> None:
        """Least-squares fit to the mean of ``frames (n, T, M, F)`` at ``xi (M, dim)``; ``scale`` from the residual."""
        mean = frames.mean(dim=(0, 1)).cpu().double()
        self.coeffs.copy_(torch.linalg.lstsq(self.basis(xi.cpu().double()), mean, driver="gelsd").solution)
        self.scale.copy_((frames - self(xi)).std(dim=(0, 1, 2)))


class LDNet(nn.Module):
    """Dynamics network F and reconstruction network R with their normalisation.

    Parameters
    ----------
    cfg : LDNetConfig
        Sizes, activation, ``dt_hat`` and ``frame_every`` (stored frames per latent step).
    n_params, n_fields : int
        Dimensions of ``u`` and of the field vector at a point.
    norm : Normalization
        Train-split statistics; kept in checkpoints so a loaded model is self-contained.
    """

    kind = "ldnet"
    requires: tuple[str, ...] = ()  # surrogates that must be trained first

    def __init__(self, cfg: LDNetConfig, n_params: int, n_fields: int, norm: Normalization,
                 field_names: tuple[str, ...] = (), param_names: tuple[str, ...] = ()):
        super().__init__()
        if cfg.latent < 1:
            raise ConfigError(f"latent dimension must be >= 1, got {cfg.latent}")
        if not cfg.dt_hat > 0:
            raise ConfigError(f"dt_hat must be positive, got {cfg.dt_hat}")
        self.cfg, self.norm = cfg, norm
        self.n_params, self.n_fields, self.latent = n_params, n_fields, cfg.latent
        self.field_names, self.param_names = tuple(field_names), tuple(param_names)
        self.dynamics_net = MLP(cfg.latent + n_params, cfg.latent, cfg.dyn_width, cfg.dyn_depth, cfg.activation)
        self.embedding = FourierEmbedding(cfg.fourier_features, cfg.fourier_scale, norm.xi_dim)
        self.reconstruction_net = MLP(cfg.latent + self.embedding.n_out, n_fields, cfg.rec_width, cfg.rec_depth,
                                      cfg.activation, residual=True)
        self.climatology = Climatology(cfg.climatology, norm.xi_dim, n_fields) if cfg.climatology else None

    def dynamics(self, s: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Latent time derivative ``s_dot = F(s, u)`` (eq. 13); ``s (..., latent)``, ``u (..., p)`` scaled."""
        return self.dynamics_net(torch.cat([s, u], dim=-1))

    def step(self, s: torch.Tensor, u: torch.Tensor, n_steps: int = 1) -> torch.Tensor:
        """``n_steps`` explicit Euler steps ``s <- s + dt_hat F(s, u)`` (eq. 14), batched over the leading axes."""
        for _ in range(n_steps):
            s = s + self.cfg.dt_hat * self.dynamics(s, u)
        return s

    def initial_latent(self, batch_shape, device=None) -> torch.Tensor:
        """``s_{-1} = 0`` of shape ``(*batch_shape, latent)``."""
        return torch.zeros(*batch_shape, self.latent, device=device or self.embedding.freqs.device)

    def rollout(self, u: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Latent trajectory ``s_0 ... s_{n_frames-1}`` ``(B, T, latent)`` from ``s_{-1} = 0``.

        ``u`` is ``(B, p)`` (constant) or ``(B, T, p)`` (``u_{t-1}`` drives the step to ``s_t``), scaled.
        The steps run in the dtype of ``u`` even under bf16 autocast: F's matmuls are too small to gain
        from it (each step costs more in casts than it saves) and the Euler sum would round. On a device
        with a fused rollout (:data:`~ldensf_hpc.surrogate.euler_rollout.FUSED_ROLLOUTS`: the CPU) all
        steps and their adjoint run in one call each; elsewhere through autograd, step by step.
        """
        fused = FUSED_ROLLOUTS.get(u.device.type)
        if fused is not None:
            return fused(self.dynamics_net, self.cfg.activation, self.cfg.dt_hat, u, n_frames)
        s = self.initial_latent(u.shape[:1], device=u.device).to(u.dtype)
        out = []
        with torch.autocast(u.device.type, enabled=False):
            for t in range(n_frames):
                s = self.step(s, u if u.ndim == 2 else u[:, t])
                out.append(s)
        return torch.stack(out, dim=1)

    def reconstruct(self, s: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        """Standardised fields ``R(s, xi)`` ``(..., M, F)`` at scaled points ``xi (..., M, 2)``.

        Leading axes of ``s (..., latent)`` and ``xi`` broadcast: e.g. ``s (K, latent)`` with a
        shared ``xi (M, 2)``, or ``s (B, T, latent)`` with per-frame ``xi (B, T, M, 2)``.
        """
        net, L = self.reconstruction_net, self.latent
        w = net.inp.weight  # the first layer acts on [s, gamma(xi)]: its two parts are applied apart, so
        # the latent part runs once per state and the point part once per point, then broadcast
        h = (s @ w[:, :L].T + net.inp.bias).unsqueeze(-2) + self.embedding(xi) @ w[:, L:].T
        if torch.is_autocast_enabled(h.device.type):  # the fp32 bias made h fp32: the residual stream in the
            h = h.to(torch.get_autocast_dtype(h.device.type))  # autocast dtype saves a cast around every layer
        if self.climatology is None:
            return net.body(net.act(h))
        return self.climatology(xi) + self.climatology.scale * net.body(net.act(h))

    def misfit_scale(self) -> torch.Tensor | float:
        """What the training loss divides R's misfit by per field: the anomaly std ``a`` (1 without a climatology)."""
        return 1.0 if self.climatology is None else self.climatology.scale

    def fields_at(self, s: torch.Tensor, points, chunk_points: int | None = None) -> torch.Tensor:
        """Physical fields ``(..., M, F)`` at physical points ``(M, 2)`` ordered (x, y), off-grid allowed.

        Evaluated without gradients in chunks of about ``chunk_points`` (state, point) pairs: several
        states of a small grid at once, or one state's points in parts, so that the activations stay
        in cache (R of the paper's size on 150 x 150, one state on 2 EPYC cores: 112 ms -> 80 ms for
        SWE, 2.2 s -> 1.1 s for Kolmogorov with 2048 points per chunk instead of all 22 500). The
        default is 2048 pairs on the CPU and 2^20 on a GPU (where chunks cost kernel launches).
        """
        chunk_points = chunk_points or (1 << 11 if s.device.type == "cpu" else 1 << 20)
        xi = self.norm.scale_xi(torch.as_tensor(points, dtype=s.dtype, device=s.device))
        flat = s.reshape(-1, self.latent)
        states, part = max(1, chunk_points // xi.shape[0]), min(xi.shape[0], chunk_points)
        with torch.no_grad():
            out = torch.cat([torch.cat([self.reconstruct(flat[i:i + states], xi[j:j + part])
                                        for j in range(0, xi.shape[0], part)], dim=-2)
                             for i in range(0, len(flat), states)])
        return self.norm.unstandardize(out.reshape(*s.shape[:-1], *out.shape[1:]), axis=-1)

    def fields_on_grid(self, s: torch.Tensor, x, y) -> torch.Tensor:
        """Physical fields ``(..., F, ny, nx)`` on the tensor grid of 1-D coordinates ``x (nx,)``, ``y (ny,)``."""
        x, y = (torch.as_tensor(a, dtype=s.dtype, device=s.device) for a in (x, y))
        Y, X = torch.meshgrid(y, x, indexing="ij")
        out = self.fields_at(s, torch.stack([X.ravel(), Y.ravel()], dim=-1))
        return out.movedim(-1, -2).reshape(*s.shape[:-1], self.n_fields, len(y), len(x))

    def to_checkpoint(self) -> dict:
        """Everything :func:`ldensf_hpc.surrogate.load` needs to rebuild this model."""
        return {"kind": self.kind, "config": dataclasses.asdict(self.cfg), "n_params": self.n_params,
                "n_fields": self.n_fields, "field_names": list(self.field_names),
                "param_names": list(self.param_names), "norm": self.norm.to_dict(),
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @staticmethod
    def fit(cfg, data_dir, out_dir, **kwargs) -> dict:
        """Train (or resume) on a dataset; see :func:`train_ldnet`."""
        return train_ldnet(cfg, data_dir, out_dir, **kwargs)

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> LDNet:
        model = cls(LDNetConfig(**ckpt["config"]), ckpt["n_params"], ckpt["n_fields"],
                    Normalization.from_dict(ckpt["norm"]), tuple(ckpt["field_names"]), tuple(ckpt["param_names"]))
        model.load_state_dict(ckpt["state_dict"])
        return model


def ldnet_errors(model: LDNet, store: TrajectoryStore, trajectories) -> np.ndarray:
    """Relative error ``(n, F)`` of the LDNet prediction from ``u`` alone on the full grid,
    per trajectory and field, over all kept frames (physical units)."""
    device = model.embedding.freqs.device
    frame_every = model.cfg.frame_every
    n_kept = store.kept_frames(frame_every)
    out = []
    for j in trajectories:
        u = torch.as_tensor(model.norm.scale_params(store.params[j][None]), dtype=torch.float32, device=device)
        with torch.no_grad():
            s = model.rollout(u, n_kept)[0]
        pred = model.fields_on_grid(s, store.x, store.y).cpu().numpy()
        true = store.frames(j, frame_every)
        out.append(relative_error(pred, true, axis=(0, 2, 3)))
    return np.array(out)


def point_frames(store: TrajectoryStore, trajectories, frame_every: int, norm: Normalization) -> torch.Tensor:
    """Kept standardised frames of ``trajectories`` as points, ``(n, T', ny * nx, F)`` float32."""
    frames = standardized_frames(store, trajectories, norm, frame_every)
    n, T, F = frames.shape[:3]
    return torch.from_numpy(np.ascontiguousarray(frames.reshape(n, T, F, -1).transpose(0, 1, 3, 2)))


def point_batches(frames: torch.Tensor, steps: int, n_sampled: int, rng: np.random.Generator):
    """``steps`` batches over a permutation of the trajectories of ``frames (n, T, P, F)``: each
    ``(b, points, target)`` with ``n_sampled`` random points per frame ``points (T, n_sampled)``, the same
    for the batch's trajectories ``b``, and their values ``target (B, T, n_sampled, F)`` in one gather
    (copying the batch's trajectories first cost 77 ms a step on 150²)."""
    n, T, P = frames.shape[:3]
    times = torch.arange(T, device=frames.device)[:, None]
    for b in np.array_split(rng.permutation(n), steps):
        points = torch.as_tensor(rng.random((T, P)).argpartition(n_sampled - 1, axis=1)[:, :n_sampled],
                                 device=frames.device)
        b = torch.as_tensor(b, device=frames.device)
        yield b, points, frames[b[:, None, None], times, points]


def train_ldnet(cfg, data_dir, out_dir, *, callback=None, progress: bool = True) -> dict:
    """Train (or resume) the LDNet of ``cfg.ldnet`` on ``data_dir``; write ``out_dir/ldnet.pt``.

    The standardised frames of the train and validation splits are held in memory (on the
    training device). A batch is ``ldnet.batch_size`` train trajectories with
    ``data.points_per_frame`` random grid points per kept frame, the same points for the
    whole batch (so R's point features are computed once per point); the points depend on
    (seed, phase, epoch, batch). Validation uses fixed points. Stage one trains F and R
    (eq. 15), stage two R alone with F frozen (the paper's retraining).

    Returns the summary also written to ``out_dir/ldnet.json`` (history, train/val/test errors; the
    train error on the first ``EVAL_TRAIN`` train trajectories).
    """
    check_training(cfg)
    lcfg = cfg.ldnet
    tcfg = cfg.train
    if lcfg.batch_size < 1 or cfg.data.points_per_frame < 1:
        raise ConfigError(f"ldnet.batch_size and data.points_per_frame must be >= 1, got {lcfg.batch_size}, "
                          f"{cfg.data.points_per_frame}")
    device = select_device(tcfg.device)
    store = TrajectoryStore(data_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    norm = load_normalization(store, cfg.data.split, cfg.data.seed)
    splits = split_indices(store.n_trajectories, cfg.data.split, cfg.data.seed)
    frames = {name: point_frames(store, splits[name], lcfg.frame_every, norm).to(device)
              for name in ("train", "val")}
    params = {name: torch.as_tensor(norm.scale_params(store.params[splits[name]]), dtype=torch.float32,
                                    device=device) for name in ("train", "val")}
    xi = torch.as_tensor(norm.scale_xi(store.grid_points()), dtype=torch.float32, device=device)
    n_train, n_kept, n_points, _ = frames["train"].shape
    M = min(cfg.data.points_per_frame, n_points)
    steps = max(1, math.ceil(n_train / lcfg.batch_size))
    times = torch.arange(n_kept, device=device)[:, None]
    val_points = torch.as_tensor(rng_for(cfg.data.seed, _VAL_POINTS_STREAM).random((n_kept, n_points))
                                 .argpartition(M - 1, axis=1)[:, :M], device=device)
    torch.manual_seed(tcfg.seed)
    model = LDNet(lcfg, store.params.shape[1], store.n_fields, norm, store.field_names, store.param_names).to(device)
    if model.climatology is not None:
        model.climatology.fit(xi, frames["train"])

    def batches(keys):
        for b, points, target in point_batches(frames["train"], steps, M, rng_for(tcfg.seed, ORDER_STREAM, *keys)):
            yield params["train"][b], points, target

    val_target = frames.pop("val")[:, times, val_points]  # the fixed validation points only are kept

    def val_batches():
        return [(params["val"], val_points, val_target)]

    def loss(batch):
        u, points, target = batch
        pred = model.reconstruct(model.rollout(u, n_kept), xi[points])
        return (((pred - target) / model.misfit_scale()) ** 2).mean()

    phases = [Phase("joint", list(model.parameters()), lcfg.epochs, lcfg.lr, batches, val_batches, loss,
                    steps_per_epoch=steps, warmup=lcfg.warmup, clip_norm=lcfg.clip_norm),
              Phase("retrain", list(model.reconstruction_net.parameters()), lcfg.retrain_epochs, lcfg.retrain_lr,
                    batches, val_batches, loss, steps_per_epoch=steps, clip_norm=lcfg.clip_norm)]
    history = run_phases(model, phases, out / "ldnet.pt", tcfg, device=device, callback=callback,
                         progress=progress, data=store.digest)
    model.eval()
    evaluated = {**splits, "train": splits["train"][:EVAL_TRAIN]}
    errors = {name: ldnet_errors(model, store, idx) for name, idx in evaluated.items()}
    summary = {"model": "ldnet", "case": cfg.case, "config": dataclasses.asdict(lcfg), "history": history,
               "frames": n_kept, "field_names": list(store.field_names), "points_per_frame": M,
               **{f"{name}_rel_error": float(e.mean()) for name, e in errors.items()},
               "test_rel_error_per_field": dict(zip(store.field_names, errors["test"].mean(axis=0).tolist()))}
    write_json(out / "ldnet.json", summary)
    return summary

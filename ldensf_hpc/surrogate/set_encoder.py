"""Point-set observation encoder for moving sensors (LD-EnSF with changing sensor positions).

The LSTM encoder (LD-EnSF paper §3.2, eq. 16) reads the same ``m`` sensors at every
time. Here an observation time is a *set* of points ``(xi_i, y_i, f_i)``: position
``xi`` in [-1, 1]^2 (an operator's ``xi``, grid (row, col) scaled), physical value and
field number. Positions may change from one time to the next, and so may their number::

    e_i = phi(xi_i, (y_i - mean_f) / std_f, onehot(f_i))      point embedding (MLP)
    p_t = mean_i e_i                                            permutation invariant, any number of points
    (s_hat_t, u_hat_t) = head(LSTM(p_0, ..., p_t))              as eq. 16

Targets, output standardisation and the loss (eq. 17) are those of
:class:`~ldensf_hpc.surrogate.encoder.LSTMEncoder`, so the encoded pair is a latent
observation of the identity operator (eq. 18) for :mod:`ldensf_hpc.filters.ld_ensf`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..backend import rng_for
from ..config import SetEncoderConfig
from ..data.dataset import Normalization, TrajectoryStore, split_indices
from ..data.store import write_json
from ..errors import ConfigError, InputError
from ..observe import ObservationOperator, full_operator, moving_points
from .ldnet import MLP, LDNet
from .training import Phase, check_training, finished, observation_operator, relative_error, run_phases, select_device

# rng streams: training sensors rng_for(train seed, _SENSOR_STREAM, phase, epoch, trajectory), batch order
# rng_for(train seed, _ORDER_STREAM, phase, epoch); evaluation sensors rng_for(data seed, _EVAL_STREAM, trajectory)
_SENSOR_STREAM, _ORDER_STREAM, _EVAL_STREAM = 20, 21, 22


class SetEncoder(nn.Module):
    """``E({(xi, y, f)}_t, h_t) -> (s_hat_t, u_hat_t)``: point MLP, mean pooling, LSTM, linear head.

    Parameters
    ----------
    cfg : SetEncoderConfig
        Point embedding width and hidden layers, LSTM width and layers.
    n_fields, latent, n_params : int
        Fields a point may belong to; latent and parameter dimensions (output ``latent + n_params``).
    norm : Normalization
        The LDNet's statistics: values are standardised with the mean / std of their field.
    frame_every : int
        Stored frames per latent step (one observation time per latent step).
    """

    kind = "set_encoder"
    requires: tuple[str, ...] = ("ldnet",)

    def __init__(self, cfg: SetEncoderConfig, n_fields: int, latent: int, n_params: int, norm: Normalization,
                 frame_every: int = 1):
        super().__init__()
        if min(cfg.width, cfg.point_layers, cfg.hidden, cfg.layers) < 1:
            raise ConfigError("the set encoder needs width, point_layers, hidden and layers >= 1, got "
                              f"{cfg.width}, {cfg.point_layers}, {cfg.hidden}, {cfg.layers}")
        if len(norm.field_mean) != n_fields:
            raise ConfigError(f"the normalisation has {len(norm.field_mean)} fields, the set encoder {n_fields}")
        self.cfg, self.norm = cfg, norm
        self.n_fields, self.latent, self.n_params, self.frame_every = n_fields, latent, n_params, frame_every
        self.point_net = MLP(2 + 1 + n_fields, cfg.width, cfg.width, cfg.point_layers, "gelu")
        self.lstm = nn.LSTM(cfg.width, cfg.hidden, cfg.layers, batch_first=True)
        self.head = nn.Linear(cfg.hidden, latent + n_params)
        for name, w in self.lstm.named_parameters():
            (nn.init.xavier_normal_ if name.startswith("weight") else nn.init.zeros_)(w)
        nn.init.xavier_normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("field_mean", torch.tensor(norm.field_mean, dtype=torch.float32))
        self.register_buffer("field_std", torch.tensor(norm.field_std, dtype=torch.float32))
        # output standardisation (s, u); set before training
        self.register_buffer("out_mean", torch.zeros(latent + n_params))
        self.register_buffer("out_std", torch.ones(latent + n_params))

    def set_statistics(self, out_mean, out_std) -> None:
        """Store the output standardisation (zero std is replaced by one)."""
        for name, v in (("out_mean", out_mean), ("out_std", out_std)):
            v = torch.as_tensor(v, dtype=torch.float32).reshape(-1)
            if name == "out_std":
                v = torch.where(v > 0, v, torch.ones_like(v))
            getattr(self, name).copy_(v)

    def pool(self, xi: torch.Tensor, values: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
        """Mean point embedding ``(B, T, width)`` of the sets ``xi (B, T, M, 2)``, ``values``, ``fields (B, T, M)``."""
        if xi.ndim != 4 or xi.shape[-1] != 2 or xi.shape[2] < 1:
            raise InputError(f"point positions must be (B, T, M >= 1, 2), got shape {tuple(xi.shape)}")
        if values.shape != xi.shape[:-1] or fields.shape != xi.shape[:-1]:
            raise InputError(f"values {tuple(values.shape)} and fields {tuple(fields.shape)} must both be "
                             f"{tuple(xi.shape[:-1])} for positions {tuple(xi.shape)}")
        if fields.dtype != torch.int64:
            raise InputError(f"field numbers must be int64, got {fields.dtype}")
        if int(fields.min()) < 0 or int(fields.max()) >= self.n_fields:
            raise InputError(f"field numbers must be in [0, {self.n_fields}), got "
                             f"{int(fields.min())} .. {int(fields.max())}")
        v = (values - self.field_mean[fields]) / self.field_std[fields]
        onehot = nn.functional.one_hot(fields, self.n_fields).to(xi.dtype)
        return self.point_net(torch.cat([xi, v.unsqueeze(-1).to(xi.dtype), onehot], dim=-1)).mean(dim=-2)

    def forward_pooled(self, pooled: torch.Tensor, state=None):
        """Standardised outputs ``(B, T, latent + p)`` for pooled sets ``(B, T, width)``, and the LSTM state."""
        h, state = self.lstm(pooled, state)
        return self.head(h), state

    def forward_standardized(self, xi, values, fields, state=None):
        """Standardised outputs ``(B, T, latent + p)`` (the loss of eq. 17 is taken on them), and the LSTM state."""
        return self.forward_pooled(self.pool(xi, values, fields), state)

    def forward(self, xi: torch.Tensor, values: torch.Tensor, fields: torch.Tensor, state=None):
        """Outputs ``(B, T, latent + p)`` in latent / scaled-parameter units, and the LSTM state.

        ``xi (B, T, M, 2)`` positions in [-1, 1], ``values (B, T, M)`` physical, ``fields (B, T, M)`` int64.
        """
        z, state = self.forward_standardized(xi, values, fields, state)
        return z * self.out_std + self.out_mean, state

    def encode(self, xi, values, fields):
        """``(s_hat (B, T, latent), u_hat (B, T, p))`` for a whole history of point sets."""
        out, _ = self(xi, values, fields)
        return out[..., :self.latent], out[..., self.latent:]

    def to_checkpoint(self) -> dict:
        return {"kind": self.kind, "config": dataclasses.asdict(self.cfg), "n_fields": self.n_fields,
                "latent": self.latent, "n_params": self.n_params, "norm": self.norm.to_dict(),
                "frame_every": self.frame_every,
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    def encode_history(self, operators: list[ObservationOperator], y) -> np.ndarray:
        """See :func:`encode_history`."""
        return encode_history(self, operators, y)

    @staticmethod
    def fit(cfg, data_dir, out_dir, **kwargs) -> dict:
        """Train (or resume) against the finished LDNet in ``out_dir``; see :func:`train_set_encoder`."""
        return train_set_encoder(cfg, data_dir, out_dir, **kwargs)

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> SetEncoder:
        model = cls(SetEncoderConfig(**ckpt["config"]), ckpt["n_fields"], ckpt["latent"], ckpt["n_params"],
                    Normalization.from_dict(ckpt["norm"]), ckpt["frame_every"])
        model.load_state_dict(ckpt["state_dict"])
        return model


def operator_inputs(operators: list[ObservationOperator], y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point sets ``xi (T, m, 2)`` float32, ``values (T, m)`` float32, ``fields (T, m)`` int64 of a history
    observed with one operator per time (all with the same ``m``) and values ``y`` ``T x (m,)``."""
    if len(operators) == 0 or len(operators) != len(y):
        raise InputError(f"need one observation per operator and at least one, got {len(operators)} operators "
                         f"and {len(y)} observations")
    values = [np.asarray(v, dtype=np.float32) for v in y]
    for t, (op, v) in enumerate(zip(operators, values)):
        if v.shape != (op.m,):
            raise InputError(f"observation {t} has shape {v.shape}, its operator observes ({op.m},)")
    if len({op.m for op in operators}) != 1:
        raise InputError("point sets of different sizes cannot be stacked; use encode_history")
    return (np.stack([op.xi for op in operators]).astype(np.float32), np.stack(values),
            np.stack([op.field for op in operators]))


def encode_history(encoder: SetEncoder, operators: list[ObservationOperator], y) -> np.ndarray:
    """Encode a moving-sensor history into ``(T, latent + p)`` latent observations (eq. 16).

    ``operators[t]`` observed ``y[t]`` ``(m_t,)`` in physical units; ``m_t`` may change with ``t``.
    """
    if len(operators) == 0 or len(operators) != len(y):
        raise InputError(f"need one observation per operator and at least one, got {len(operators)} operators "
                         f"and {len(y)} observations")
    device = encoder.out_mean.device
    with torch.no_grad():
        pooled = []
        for t, (op, v) in enumerate(zip(operators, y)):
            v = np.asarray(v, dtype=np.float32)
            if v.shape != (op.m,):
                raise InputError(f"observation {t} has shape {v.shape}, its operator observes ({op.m},)")
            if op.n_fields != encoder.n_fields:
                raise InputError(f"operator {t} observes members with {op.n_fields} fields, the encoder expects "
                                 f"{encoder.n_fields}")
            points = (op.xi.astype(np.float32), v, op.field)
            pooled.append(encoder.pool(*(torch.as_tensor(a, device=device)[None, None] for a in points)))
        out, _ = encoder.forward_pooled(torch.cat(pooled, dim=1))
        out = out * encoder.out_std + encoder.out_mean
    return out[0].cpu().numpy()


def _training_points(seed: int, keys, n_times: int, n_grid: int, n_points: int) -> np.ndarray:
    """Flat grid locations ``(T, M)`` of moving sensors for one training trajectory, keyed by ``keys``."""
    rng = rng_for(seed, _SENSOR_STREAM, *keys)
    return rng.random((n_times, n_grid)).argpartition(n_points - 1, axis=1)[:, :n_points]


def _gather(frames: torch.Tensor, points: torch.Tensor, xi_grid: torch.Tensor):
    """Point sets of all fields at locations ``points (n, T, M)`` of ``frames (n, T, F, P)``.

    Points are ordered field-major like :func:`~ldensf_hpc.observe.moving_points` with all fields.
    """
    n, T, F, _ = frames.shape
    M = points.shape[-1]
    values = torch.gather(frames, 3, points[:, :, None, :].expand(n, T, F, M)).reshape(n, T, F * M)
    xi = xi_grid[points][:, :, None].expand(n, T, F, M, 2).reshape(n, T, F * M, 2)
    fields = torch.arange(F, device=frames.device).repeat_interleave(M).expand(n, T, F * M)
    return xi, values, fields


def train_set_encoder(cfg, data_dir, out_dir, *, callback=None, progress: bool = True) -> dict:
    """Train (or resume) the set encoder against the finished ``out_dir/ldnet.pt``; write ``set_encoder.pt``.

    Inputs are noiseless field values of the LDNet's kept frames at moving sensors: every
    field at ``cfg.set_encoder.sensors`` distinct grid locations (0: as many as the grid
    operator of ``cfg.observe`` observes), drawn afresh per time step, trajectory and
    epoch. Targets are the LDNet latent trajectory and the scaled parameters. The kept
    frames of the dataset are held in memory (on the training device).

    Returns the summary also written to ``out_dir/set_encoder.json``: the loss history and
    the latent / parameter relative errors per split with the fixed grid operator
    (``*_grid``) and with moving sensors (``*_moving``, positions fixed by the data seed).
    """
    check_training(cfg)
    tcfg = cfg.train
    device = select_device(tcfg.device)
    out = Path(out_dir)
    store = TrajectoryStore(data_dir)
    ldnet = finished(LDNet, out, device, data=store.digest)
    grid, spec = observation_operator(cfg, store)
    shape, n_grid = grid.shape, grid.n_points
    sensors = cfg.set_encoder.sensors or int(np.unique(grid.index % n_grid).size)
    if not 1 <= sensors <= n_grid:
        raise ConfigError(f"set_encoder.sensors must be in [0, {n_grid}] (0: as the grid operator), got {sensors}")
    scfg = dataclasses.replace(cfg.set_encoder, sensors=sensors)  # the checkpoint records the count used
    frame_every, n_kept = ldnet.cfg.frame_every, store.kept_frames(ldnet.cfg.frame_every)
    splits = split_indices(store.n_trajectories, cfg.data.split, cfg.data.seed)
    data = {}
    for name, idx in splits.items():
        frames = np.stack([store.frames(j, frame_every) for j in idx]).reshape(len(idx), n_kept, store.n_fields, -1)
        u = torch.as_tensor(ldnet.norm.scale_params(store.params[idx]), dtype=torch.float32, device=device)
        with torch.no_grad():
            s = ldnet.rollout(u, n_kept)
        data[name] = (idx, torch.as_tensor(frames, device=device),
                      torch.cat([s, u[:, None].expand(-1, n_kept, -1)], dim=-1))

    def fixed_inputs(name: str, moving: bool):
        """Stacked point sets of a split: the grid operator, or moving sensors fixed by the data seed."""
        idx, frames, _ = data[name]
        sets = []
        for j, f in zip(idx, frames.cpu().numpy().reshape(len(idx), n_kept, -1)):
            ops = (moving_points(shape, sensors, n_kept, rng_for(cfg.data.seed, _EVAL_STREAM, int(j)),
                                 **grid.layout) if moving else [grid] * n_kept)
            sets.append(operator_inputs(ops, [op.apply(f[t][None])[0] for t, op in enumerate(ops)]))
        return tuple(torch.as_tensor(np.stack(a), device=device) for a in zip(*sets))

    torch.manual_seed(tcfg.seed)
    model = SetEncoder(scfg, store.n_fields, ldnet.latent, ldnet.n_params, ldnet.norm, frame_every).to(device)
    train_target = data["train"][2].reshape(-1, model.latent + model.n_params)
    model.set_statistics(train_target.mean(dim=0), train_target.std(dim=0, correction=0))
    xi_grid = torch.as_tensor(full_operator(shape, fields=[0]).xi, dtype=torch.float32, device=device)
    val_set = (*fixed_inputs("val", moving=True), data["val"][2])

    def chunks(arrays):
        """Consecutive batches of ``batch_size`` trajectories."""
        return [tuple(a[i:i + scfg.batch_size] for a in arrays) for i in range(0, len(arrays[0]), scfg.batch_size)]

    def batches(keys):
        idx, frames, target = data["train"]
        points = np.stack([_training_points(tcfg.seed, (*keys, j), n_kept, n_grid, sensors) for j in idx])
        inputs = _gather(frames, torch.as_tensor(points, device=device), xi_grid)
        order = rng_for(tcfg.seed, _ORDER_STREAM, *keys).permutation(len(idx))
        return [(*(a[b] for a in inputs), target[b])
                for b in np.array_split(order, max(1, -(-len(idx) // scfg.batch_size)))]

    def val_batches():
        return chunks(val_set)

    def loss(batch):
        *inputs, target = batch
        z, _ = model.forward_standardized(*inputs)
        return nn.functional.mse_loss(z, (target - model.out_mean) / model.out_std)

    phases = [Phase("set_encoder", list(model.parameters()), scfg.epochs, scfg.lr, batches, val_batches, loss,
                    steps_per_epoch=max(1, -(-len(data["train"][0]) // scfg.batch_size)))]
    history = run_phases(model, phases, out / "set_encoder.pt", tcfg, device=device, callback=callback,
                         progress=progress, data=store.digest)
    model.eval()
    summary = {"model": "set_encoder", "case": cfg.case, "config": dataclasses.asdict(scfg), "observe": spec,
               "history": history}
    L = model.latent
    for name in splits:
        target = data[name][2].cpu().numpy()
        u_true = ldnet.norm.unscale_params(target[..., L:].astype(np.float64))
        for label, moving in (("grid", False), ("moving", True)):
            with torch.no_grad():
                pred = torch.cat([model(*b)[0] for b in chunks(fixed_inputs(name, moving))]).cpu().numpy()
            u_pred = ldnet.norm.unscale_params(pred[..., L:].astype(np.float64))
            summary[f"{name}_rel_error_latent_{label}"] = float(np.mean(
                [relative_error(p, t) for p, t in zip(pred[..., :L], target[..., :L])]))
            summary[f"{name}_rel_error_params_{label}"] = float(np.mean(
                [relative_error(p, t) for p, t in zip(u_pred, u_true)]))
    write_json(out / "set_encoder.json", summary)
    return summary

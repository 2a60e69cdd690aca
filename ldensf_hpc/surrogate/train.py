"""Offline training of the surrogates (LD-EnSF paper §3.1-3.2, Appendix A): ``ldensf train``.

The LDNet and the LSTM encoder are trained here; the coupled VAE of Latent-EnSF
(:mod:`.vae`) and the point-set encoder (:mod:`.set_encoder`) reuse :func:`run_phases`.
Three phases, each Adam with a cosine learning-rate schedule, a validation loss per
epoch and early stopping on it (the best weights are kept):

- ``joint``: LDNet F and R together on random points per frame (eq. 15);
- ``retrain``: R only, F frozen (its weights stay bitwise unchanged);
- ``encoder``: the LSTM encoder against the trained LDNet's latent trajectories
  and the scaled parameters (eq. 17), on noiseless observations.

The checkpoint ``OUT/ldnet.pt`` (``OUT/encoder.pt``) is rewritten atomically after every
epoch with the model and the optimiser, schedule and early-stopping state; a rerun
continues from it. Every random draw (initialisation, point samples, batch order,
dropout) is keyed by (seed, phase, epoch), so an interrupted and resumed run ends
with the same weights as an uninterrupted one. ``OUT/ldnet.json`` / ``OUT/encoder.json``
hold the loss history and the test errors.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..backend import BackendError, rng_for
from ..config import Config, ConfigError
from ..data.dataset import (
    PointSampleDataset,
    TrajectoryStore,
    load_normalization,
    observation_sequences,
    split_indices,
)
from ..data.store import write_json
from ..errors import DataError
from ..models import SolverError
from ..observe import make_operator
from . import load, load_checkpoint
from .encoder import LSTMEncoder
from .ldnet import LDNet

MODELS = ("ldnet", "encoder", "vae", "set_encoder", "all")
_TORCH_SEED_STREAM, _ORDER_STREAM = 10, 11  # rng_for(train seed, stream, phase, epoch)


def _cuda() -> str:
    if not torch.cuda.is_available():
        raise BackendError("device 'cuda' requested but torch sees no CUDA GPU")
    return "cuda"


DEVICES = {"auto": lambda: "cuda" if torch.cuda.is_available() else "cpu", "cpu": lambda: "cpu", "cuda": _cuda}


def select_device(name: str) -> torch.device:
    """The torch device named in ``train.device`` (auto: CUDA when torch sees a GPU)."""
    if name not in DEVICES:
        raise BackendError(f"unknown torch device {name!r}; choose one of {', '.join(DEVICES)}")
    return torch.device(DEVICES[name]())


def configure_threads(threads: int) -> int:
    """Limit torch's CPU threads (0: the cores this process may run on, at most 16)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n = threads if threads > 0 else min(cores, 16)
    torch.set_num_threads(n)
    return n


def surrogate_configs(cfg: Config):
    """The (LDNet, encoder) config sections of ``cfg.case``, after checking the shared settings."""
    if cfg.case not in ("swe", "kolmogorov"):
        raise ConfigError(f"surrogates are trained for swe or kolmogorov, not {cfg.case!r}")
    if cfg.train.patience < 1:
        raise ConfigError(f"train.patience must be >= 1 epoch, got {cfg.train.patience}")
    return getattr(cfg, f"ldnet_{cfg.case}"), getattr(cfg, f"encoder_{cfg.case}")


@dataclass
class Phase:
    """One optimisation phase: which parameters move, for how long, on which batches."""

    name: str
    params: list
    epochs: int
    lr: float
    batches: Callable[[tuple[int, int]], Iterable]  # keys (phase, epoch) -> training batches
    val_batches: Callable[[], Iterable]
    loss: Callable[[tuple], torch.Tensor]  # batch -> mean loss


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fresh_state(phase: int) -> dict:
    return {"phase": phase, "epoch": 0, "optimizer": None, "scheduler": None, "best_val": float("inf"),
            "best_state": None, "bad_epochs": 0, "done": False}


def _resume_state(model, path: Path, device, n_phases: int) -> tuple[dict, dict]:
    """Training state and history from an existing checkpoint of the same model, or fresh ones."""
    if not path.is_file():
        return _fresh_state(0), {}
    ckpt = load_checkpoint(path, device)
    mine = model.to_checkpoint()
    same = {k: v for k, v in ckpt.items() if k not in ("state_dict", "training", "history")}
    if same != {k: v for k, v in mine.items() if k != "state_dict"}:
        raise DataError(f"{path} was trained with another configuration or dataset; "
                        "delete it or choose another --out to start over")
    model.load_state_dict(ckpt["state_dict"])
    state = ckpt["training"]
    assert 0 <= state["phase"] <= n_phases, "checkpoint phase out of range"
    return state, ckpt["history"]


def run_phases(model: torch.nn.Module, phases: list[Phase], path: Path, seed: int, *, min_lr_ratio: float,
               patience: int, device, callback=None, progress: bool = True) -> dict:
    """Run (or resume) ``phases`` in order, checkpointing to ``path`` after every epoch.

    ``callback(phase_name, epoch)`` is called after each checkpoint (it may raise to stop).
    Returns the history ``{phase: [{"epoch", "train", "val", "lr"}, ...]}``.
    """
    state, history = _resume_state(model, path, device, len(phases))
    while not state["done"]:
        phase_index = state["phase"]
        phase = phases[phase_index]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in phase.params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(phase.params, lr=phase.lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(phase.epochs, 1),
                                                               eta_min=phase.lr * min_lr_ratio)
        if state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        log = history.setdefault(phase.name, [])
        bar = tqdm(total=phase.epochs, initial=state["epoch"], desc=f"{model.kind} {phase.name}",
                   disable=not progress, leave=False)
        while state["epoch"] < phase.epochs and state["bad_epochs"] < patience:
            epoch = state["epoch"]
            keys = (phase_index, epoch)
            torch.manual_seed(int(rng_for(seed, _TORCH_SEED_STREAM, *keys).integers(2**62)))
            model.train()
            train_losses = []
            for batch in phase.batches(keys):
                loss = phase.loss(batch)
                if not torch.isfinite(loss):
                    raise SolverError(f"{model.kind} {phase.name} epoch {epoch}: the training loss became "
                                      f"{loss.item()}; lower the learning rate (the last checkpoint is kept)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                train_losses.append(loss.item())
            val = evaluate(model, phase.val_batches(), phase.loss)
            log.append({"epoch": epoch, "train": float(np.mean(train_losses)), "val": val,
                        "lr": optimizer.param_groups[0]["lr"]})
            scheduler.step()
            if val < state["best_val"]:
                state.update(best_val=val, bad_epochs=0,
                             best_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
            else:
                state["bad_epochs"] += 1
            state.update(epoch=epoch + 1, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict())
            _save_atomic({**model.to_checkpoint(), "training": state, "history": history}, path)
            bar.update(1)
            bar.set_postfix(train=f"{log[-1]['train']:.3g}", val=f"{val:.3g}")
            if callback is not None:
                callback(phase.name, epoch)
        bar.close()
        if state["best_state"] is not None:
            model.load_state_dict(state["best_state"])
        state = _fresh_state(phase_index + 1)
        state["done"] = phase_index + 1 == len(phases)
        _save_atomic({**model.to_checkpoint(), "training": state, "history": history}, path)
    for p in model.parameters():
        p.requires_grad_(False)
    return history


def evaluate(model: torch.nn.Module, batches: Iterable, loss_fn) -> float:
    """Mean of ``loss_fn`` over ``batches`` weighted by batch size, in eval mode without gradients."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            n = len(batch[0])
            total += loss_fn(batch).item() * n
            count += n
    return total / count


def relative_error(pred: np.ndarray, true: np.ndarray, axis=None) -> np.ndarray:
    """``||pred - true|| / ||true||`` (2-norm over ``axis``; all axes by default)."""
    return np.sqrt(np.sum((pred - true) ** 2, axis=axis) / np.sum(true**2, axis=axis))


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


def train_ldnet(cfg: Config, data_dir, out_dir, *, callback=None, progress: bool = True) -> dict:
    """Train (or resume) the LDNet of ``cfg.case`` on ``data_dir``; write ``out_dir/ldnet.pt``.

    Returns the summary also written to ``out_dir/ldnet.json`` (history, train/val/test errors).
    """
    lcfg, _ = surrogate_configs(cfg)
    tcfg = cfg.train
    device = select_device(tcfg.device)
    store = TrajectoryStore(data_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    norm = load_normalization(store, cfg.data.split, cfg.data.seed)
    common = {"frame_every": lcfg.frame_every, "points_per_frame": cfg.data.points_per_frame,
              "seed": cfg.data.seed, "fractions": cfg.data.split, "norm": norm}
    train_set = PointSampleDataset(store, "train", **common)
    val_set = PointSampleDataset(store, "val", fixed_points=True, **common)
    n_kept = train_set.n_kept
    torch.manual_seed(tcfg.seed)
    model = LDNet(lcfg, store.params.shape[1], store.n_fields, norm, store.field_names, store.param_names).to(device)

    def batches(keys):
        train_set.set_epoch(*keys)
        order = rng_for(tcfg.seed, _ORDER_STREAM, *keys).permutation(len(train_set)).tolist()
        return torch.utils.data.DataLoader(train_set, batch_size=lcfg.batch_size, sampler=order,
                                           num_workers=tcfg.workers)

    def val_batches():
        return torch.utils.data.DataLoader(val_set, batch_size=lcfg.batch_size, num_workers=tcfg.workers)

    def loss(batch):
        u, xi, target = (t.to(device) for t in batch)
        pred = model.reconstruct(model.rollout(u, n_kept), xi)
        return torch.nn.functional.mse_loss(pred, target)

    phases = [Phase("joint", list(model.parameters()), lcfg.epochs, lcfg.lr, batches, val_batches, loss),
              Phase("retrain", list(model.reconstruction_net.parameters()), lcfg.retrain_epochs, lcfg.retrain_lr,
                    batches, val_batches, loss)]
    history = run_phases(model, phases, out / "ldnet.pt", tcfg.seed, min_lr_ratio=tcfg.min_lr_ratio,
                         patience=tcfg.patience, device=device, callback=callback, progress=progress)
    model.eval()
    splits = split_indices(store.n_trajectories, cfg.data.split, cfg.data.seed)
    errors = {name: ldnet_errors(model, store, idx) for name, idx in splits.items()}
    summary = {"model": "ldnet", "case": cfg.case, "config": dataclasses.asdict(lcfg), "history": history,
               "frames": n_kept, "field_names": list(store.field_names),
               **{f"{name}_rel_error": float(e.mean()) for name, e in errors.items()},
               "test_rel_error_per_field": dict(zip(store.field_names, errors["test"].mean(axis=0).tolist()))}
    write_json(out / "ldnet.json", summary)
    return summary


def observation_operator(cfg: Config, store: TrajectoryStore):
    """The sparse grid operator of ``cfg.observe`` for this store, and its description for checkpoints."""
    spec = {"name": "grid", "options": {"stride": cfg.observe.stride, "periodic": cfg.case == "kolmogorov"}}
    return make_operator(spec["name"], (store.n_fields, store.ny, store.nx), **spec["options"]), spec


def finished_ldnet(out_dir: Path, device) -> LDNet:
    """The LDNet of ``out_dir/ldnet.pt`` on ``device``; DataError unless its training has finished."""
    path = Path(out_dir) / "ldnet.pt"
    if not load_checkpoint(path).get("training", {}).get("done", False):
        raise DataError(f"LDNet training in {out_dir} is not finished; run `ldensf train --model ldnet` first")
    return load(path, device)


def train_encoder(cfg: Config, data_dir, out_dir, *, callback=None, progress: bool = True) -> dict:
    """Train (or resume) the LSTM encoder against the finished ``out_dir/ldnet.pt``; write ``encoder.pt``.

    Inputs are noiseless observations ``H x`` of the LDNet's kept frames (one per latent step);
    targets are the LDNet latent trajectory and the scaled parameters.
    """
    _, ecfg = surrogate_configs(cfg)
    tcfg = cfg.train
    device = select_device(tcfg.device)
    out = Path(out_dir)
    ldnet = finished_ldnet(out, device)
    store = TrajectoryStore(data_dir)
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
        order = rng_for(tcfg.seed, _ORDER_STREAM, *keys).permutation(len(y))
        return [(y[b], target[b]) for b in np.array_split(order, max(1, -(-len(y) // ecfg.batch_size)))]

    def val_batches():
        return [data["val"]]

    def loss(batch):
        y, target = batch
        z, _ = model.forward_standardized(y)
        return torch.nn.functional.mse_loss(z, (target - model.out_mean) / model.out_std)

    phases = [Phase("encoder", list(model.parameters()), ecfg.epochs, ecfg.lr, batches, val_batches, loss)]
    history = run_phases(model, phases, out / "encoder.pt", tcfg.seed, min_lr_ratio=tcfg.min_lr_ratio,
                         patience=tcfg.patience, device=device, callback=callback, progress=progress)
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


def train(cfg: Config, data_dir, out_dir, model: str = "all", progress: bool = True) -> dict:
    """``ldensf train``: one surrogate (ldnet, encoder, vae, set_encoder) or ``all`` (the LDNet, then the
    LSTM encoder). The encoders need a finished LDNet. Returns the summaries."""
    from .set_encoder import train_set_encoder
    from .vae import train_vae

    steps = {"ldnet": train_ldnet, "encoder": train_encoder, "vae": train_vae, "set_encoder": train_set_encoder}
    if model not in MODELS:
        raise DataError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    configure_threads(cfg.train.threads)
    names = ("ldnet", "encoder") if model == "all" else (model,)
    return {name: steps[name](cfg, data_dir, out_dir, progress=progress) for name in names}

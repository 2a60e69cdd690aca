"""The model-free training loop of every surrogate (LD-EnSF paper Appendix A), and what trainers share.

A trainer (one per surrogate, beside its model: ``LDNet.fit``, ``LSTMEncoder.fit``, ...)
builds its model, batches and loss and hands a list of :class:`Phase` to
:func:`run_phases`: each phase is Adam with a cosine learning-rate schedule, a validation
loss per epoch and early stopping on it (the best weights are kept).

The checkpoint ``OUT/<name>.pt`` is rewritten atomically after every epoch with the model
and the optimiser, schedule and early-stopping state; a rerun continues from it. Every
random draw (initialisation, point samples, batch order, dropout) is keyed by (seed,
phase, epoch), so an interrupted and resumed run ends with the same weights as an
uninterrupted one. ``OUT/<name>.json`` holds the loss history and the errors.
"""
from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import cases
from ..backend import rng_for
from ..errors import BackendError, ConfigError, DataError, SolverError
from ..observe import ObservationOperator, make_operator

_TORCH_SEED_STREAM = 10  # rng_for(train seed, stream, phase, epoch)
ORDER_STREAM = 11  # batch order: rng_for(train seed, ORDER_STREAM, phase, epoch)
EVAL_TRAIN = 20  # a surrogate's train error is measured on the first 20 train trajectories (val and test: all)


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


PRECISIONS = ("auto", "fp32", "tf32", "bf16")
"""``train.precision``: auto is tf32 on CUDA and fp32 on the CPU; bf16 autocasts the forward passes."""


def resolve_precision(name: str, device: torch.device) -> str:
    """The arithmetic ``train.precision`` names on ``device``; refused where it cannot be honoured."""
    if name not in PRECISIONS:
        raise ConfigError(f"train.precision {name!r} is unknown; choose one of {', '.join(PRECISIONS)}")
    if name == "auto":
        return "tf32" if device.type == "cuda" else "fp32"
    if name == "tf32" and device.type != "cuda":
        raise BackendError(f"train.precision tf32 needs a CUDA device (training runs on {device.type}); "
                           "use fp32 or bf16")
    return name


@contextlib.contextmanager
def arithmetic(precision: str, device: torch.device):
    """Matmuls in TF32 (``tf32``, CUDA) or forward passes autocast to bfloat16 (``bf16``) inside the block."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        torch.set_float32_matmul_precision(before)


def configure_threads(threads: int) -> int:
    """Limit torch's CPU threads (0: the cores this process may run on, at most 16)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n = threads if threads > 0 else min(cores, 16)
    torch.set_num_threads(n)
    return n


def check_training(cfg) -> None:
    """Reject shared training settings that cannot work (before any data is read)."""
    if cfg.train.patience < 1:
        raise ConfigError(f"train.patience must be >= 1 epoch, got {cfg.train.patience}")
    resolve_precision(cfg.train.precision, select_device(cfg.train.device))


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
    steps_per_epoch: int  # batches per epoch: the learning-rate schedule advances once per batch
    warmup: float = 0.0  # fraction of the phase's steps with a linear learning-rate warm-up
    clip_norm: float = 0.0  # gradients of a larger 2-norm are scaled down to it (0: never)

    def schedule(self, min_lr_ratio: float) -> Callable[[int], float]:
        """Learning-rate factor of optimiser step ``k``: linear warm-up, then a cosine to ``min_lr_ratio``."""
        total = max(1, self.epochs * self.steps_per_epoch)
        warm = max(1, int(self.warmup * total))

        def factor(k: int) -> float:
            cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, k / total)))
            return min(1.0, (k + 1) / warm) * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)

        return factor


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


def check_data(ckpt: dict, path: Path, data: dict | None) -> None:
    """DataError unless the checkpoint at ``path`` was trained on the dataset ``data`` (its digest)."""
    if data is None or ckpt.get("data") == data:
        return
    made = ckpt.get("data")
    other = (f"{made['case']}, manifest {made['manifest_sha256'][:12]}" if made else
             "not recorded: an older checkpoint")
    raise DataError(f"{path} was trained on another dataset ({other}; this one: {data['case']}, manifest "
                    f"{data['manifest_sha256'][:12]}); retrain it on this dataset (delete it, or train into "
                    "another directory)")


def _resume_state(model, path: Path, device, n_phases: int, data: dict | None,
                  precision: str) -> tuple[dict, dict]:
    """Training state and history from a checkpoint of the same model, dataset and precision, or fresh ones."""
    if not path.is_file():
        return _fresh_state(0), {}
    ckpt = load_checkpoint(path, device)
    check_data(ckpt, path, data)
    made = ckpt.get("precision", "fp32")  # checkpoints before train.precision: fp32
    if made != precision:
        raise DataError(f"{path} was trained in {made}, this run asks {precision} (train.precision); "
                        f"resume with --set train.precision={made}, or train into another directory")
    mine = model.to_checkpoint()
    same = {k: v for k, v in ckpt.items() if k not in ("state_dict", "training", "history", "data", "precision")}
    if same != {k: v for k, v in mine.items() if k != "state_dict"}:
        raise DataError(f"{path} was trained with another configuration or dataset; "
                        "delete it, or train into another directory (train --out, run --workdir)")
    model.load_state_dict(ckpt["state_dict"])
    state = ckpt["training"]
    assert 0 <= state["phase"] <= n_phases, "checkpoint phase out of range"
    return state, ckpt["history"]


def run_phases(model: torch.nn.Module, phases: list[Phase], path: Path, tcfg, *, device, callback=None,
               progress: bool = True, data: dict | None = None) -> dict:
    """Run (or resume) ``phases`` in order under the ``train`` settings ``tcfg``, checkpointing to ``path``
    after every epoch.

    ``callback(phase_name, epoch)`` is called after each checkpoint (it may raise to stop).
    ``data`` (the dataset's digest) and the precision are recorded in the checkpoint; a resume on another
    dataset or at another precision is refused.
    Returns the history ``{phase: [{"epoch", "train", "val", "lr"}, ...]}`` (with ``"clipped"``, the fraction of
    steps whose gradient was clipped, in a phase that clips).
    """
    seed, patience = tcfg.seed, tcfg.patience
    precision = resolve_precision(tcfg.precision, device)
    state, history = _resume_state(model, path, device, len(phases), data, precision)
    record = {"data": data, "precision": precision}
    while not state["done"]:
        phase_index = state["phase"]
        phase = phases[phase_index]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in phase.params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(phase.params, lr=phase.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, phase.schedule(tcfg.min_lr_ratio))
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
            train_losses, clipped = [], 0
            for batch in phase.batches(keys):
                with arithmetic(precision, device):
                    loss = phase.loss(batch)
                if not torch.isfinite(loss):
                    raise SolverError(f"{model.kind} {phase.name} epoch {epoch}: the training loss became "
                                      f"{loss.item()} at learning rate {optimizer.param_groups[0]['lr']:.3g}; "
                                      f"lower the learning rate (the last checkpoint is kept)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if phase.clip_norm:
                    clipped += int(torch.nn.utils.clip_grad_norm_(phase.params, phase.clip_norm) > phase.clip_norm)
                optimizer.step()
                scheduler.step()
                train_losses.append(loss.item())
            with arithmetic(precision, device):
                val = evaluate(model, phase.val_batches(), phase.loss)
            log.append({"epoch": epoch, "train": float(np.mean(train_losses)), "val": val,
                        "lr": optimizer.param_groups[0]["lr"],
                        **({"clipped": clipped / len(train_losses)} if phase.clip_norm else {})})
            if val < state["best_val"]:
                state.update(best_val=val, bad_epochs=0,
                             best_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
            else:
                state["bad_epochs"] += 1
            state.update(epoch=epoch + 1, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict())
            _save_atomic({**model.to_checkpoint(), "training": state, "history": history, **record}, path)
            bar.update(1)
            bar.set_postfix(train=f"{log[-1]['train']:.3g}", val=f"{val:.3g}")
            if callback is not None:
                callback(phase.name, epoch)
        bar.close()
        if state["best_state"] is not None:
            model.load_state_dict(state["best_state"])
        state = _fresh_state(phase_index + 1)
        state["done"] = phase_index + 1 == len(phases)
        _save_atomic({**model.to_checkpoint(), "training": state, "history": history, **record}, path)
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


def observation_operator(cfg, store) -> tuple[ObservationOperator, dict]:
    """The case's sparse sensor grid of ``cfg.observe`` for this store, and its description for checkpoints."""
    op = cases.get(cfg.case).observation_operator(cfg, (store.n_fields, store.ny, store.nx))
    spec = {"name": "grid", "options": {"stride": cfg.observe.stride, "periodic": op.periodic}}
    return make_operator(spec["name"], op.shape, **spec["options"]), spec


def load_checkpoint(path, device="cpu") -> dict:
    """The raw checkpoint dictionary at ``path`` (tensors mapped to ``device``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no checkpoint at {path}; run `ldensf train --model {path.stem}` first")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/foreign files
        size = path.stat().st_size
        why = "it is empty" if size == 0 else f"it is not a checkpoint of ours ({size} bytes, truncated or foreign)"
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read checkpoint {path}: {why} ({detail}); delete it and train again") from None
    if not isinstance(ckpt, dict):
        raise DataError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint of ours; delete it and train again")
    return ckpt


def finished(model_class, out_dir, device, data: dict | None = None) -> torch.nn.Module:
    """The model of ``OUT/<kind>.pt`` on ``device`` in eval mode; DataError unless its training has finished
    (on the dataset of digest ``data``, when given)."""
    path = Path(out_dir) / f"{model_class.kind}.pt"
    ckpt = load_checkpoint(path, device)
    check_data(ckpt, path, data)
    if not ckpt.get("training", {}).get("done", False):
        raise DataError(f"{model_class.kind} training in {out_dir} is not finished; "
                        f"run `ldensf train --model {model_class.kind}` first")
    return model_class.from_checkpoint(ckpt).to(device).eval()



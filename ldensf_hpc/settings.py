"""What each command reads of a config, so that no setting is accepted and then ignored.

A ``--config`` file is a whole run's settings and may hold every section. A ``--set`` override
is the user's intent for this command: one that the command never reads (``--set ldnet.lr=...``
given to ``generate``, ``--set ensf.n_steps=...`` to ``assimilate --filter letkf``, ``--set swe.n``
to ``train``, whose dataset fixes the grid) is refused in one line naming the commands that do
read it. Settings whose values are registry names (kernels, devices, activations, sensors,
encoders) are checked against those registries when the command reads them.

Keys are ``section`` or ``section.field``; :data:`MODEL` stands for the case's solver section
(``model`` in an override).
"""
from __future__ import annotations

from .errors import USER_ERRORS, ConfigError

MODEL = "<model>"

READS = {
    "generate": (MODEL, "data.n_trajectories", "data.shard_size", "data.seed", "cluster"),
    "train": ("data.split", "data.points_per_frame", "data.seed", "observe", "train"),
    "assimilate": (MODEL, "data.split", "data.seed", "observe", "train", "ensf.ensemble_size"),
}
"""Keys every run of a command reads; methods (:attr:`Method.settings_read`) and trained
surrogates (their own section) add theirs. ``run`` reads what the three read."""


def _kernels():
    from .kernels import BACKENDS
    return BACKENDS


def _devices():
    from .surrogate.training import DEVICES
    return DEVICES


def _activations():
    from .surrogate.ldnet import ACTIVATIONS
    return ACTIVATIONS


def _sensors():
    from .experiment import SENSORS
    return SENSORS


def _precisions():
    from .filters.ensf import PRECISIONS
    return PRECISIONS


def _training_precisions():
    from .surrogate.training import PRECISIONS
    return PRECISIONS


def _encoders():
    from .filters.ld_ensf import ENCODERS
    return ("auto", *ENCODERS)


NAMED = {"ensf.kernel": ("EnSF kernel backend", _kernels), "ensf.full_space_kernel": ("EnSF kernel backend", _kernels),
         "ensf.full_space_precision": ("floating-point precision", _precisions),
         "train.device": ("torch device", _devices), "train.precision": ("training precision", _training_precisions),
         "ldnet.activation": ("activation", _activations),
         "observe.sensors": ("sensor layout", _sensors), "ld_ensf.encoder": ("LD-EnSF encoder", _encoders)}
"""The registry-valued settings: key -> (what it names, the names allowed; imported only when read)."""


def reads(command: str, methods=(), surrogates=()) -> tuple[str, ...]:
    """The keys ``command`` reads when it runs ``methods`` and trains or uses ``surrogates``."""
    from .filters import METHODS

    if command not in (*READS, "run"):
        raise ConfigError(f"unknown command {command!r}")
    base = tuple(k for c in READS for k in READS[c]) if command == "run" else READS[command]
    runs = [key for name in methods for key in METHODS[name].settings_read] if command in ("assimilate", "run") else []
    trains = list(surrogates) if command in ("train", "run") else []  # a network's settings are its own section
    return tuple(dict.fromkeys((*base, *runs, *trains)))


def _covered(key: str, keys, case: str) -> bool:
    for k in keys:
        k = case if k == MODEL else k
        if key == k or key.startswith(k + ".") or k.startswith(key + "."):
            return True
    return False


def _value(cfg, key: str):
    section, _, name = key.partition(".")
    return getattr(getattr(cfg, "model" if section == cfg.case else section), name)


def _readers(key: str, cfg, command: str) -> str:
    """Who reads ``key``: the methods that would (for a command that runs methods), else the commands."""
    from .filters import METHODS, make_method
    from .surrogate import SURROGATES

    def needs(m):
        try:
            return make_method(m, cfg).surrogates(cfg)
        except USER_ERRORS:  # a method this config cannot build reads what it declares
            return ()

    if command in ("assimilate", "run"):
        users = [m for m in METHODS if _covered(key, (*METHODS[m].settings_read, *needs(m)), cfg.case)]
        if users and command == "assimilate" or users and not _covered(key, READS["train"], cfg.case):
            return f"only a run of {', '.join(users)} does"
    readers = [c for c in READS if _covered(key, reads(c, tuple(METHODS), tuple(SURROGATES)), cfg.case)]
    return f"read by ldensf {', '.join(readers)} and run" if readers else "no command reads it"


def check(cfg, overrides, command: str, methods=(), surrogates=()) -> None:
    """Refuse an override ``command`` does not read, and a registry-valued setting it reads with an unknown name."""
    used = reads(command, methods, surrogates)
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key == "model" or key.startswith("model."):  # the case's section under its alias
            key = cfg.case + key[len("model"):]
        if key not in ("case", "preset") and not _covered(key, used, cfg.case):
            scope = f" with {', '.join(methods)}" if methods else ""
            raise ConfigError(f"--set {text}: `ldensf {command}`{scope} does not read {key} "
                              f"({_readers(key, cfg, command)}); drop it here")
    for key, (what, names) in NAMED.items():
        if not _covered(key, used, cfg.case):
            continue
        allowed = tuple(names())
        value = _value(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}: unknown {what} {value!r}; choose one of {', '.join(allowed)}")

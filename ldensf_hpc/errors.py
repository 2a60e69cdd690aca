"""Every exception of the package; the ``ldensf`` command reports these as one clear line.

This module imports nothing of the package, so every layer can raise them.
"""


class ConfigError(ValueError):
    """A preset, override or field value that cannot be used."""


class BackendError(RuntimeError):
    """A backend that is unknown or not usable on this machine."""


class SolverError(RuntimeError):
    """A solver or training run that became invalid (NaN/Inf, unstable time step, bad input)."""


class DataError(RuntimeError):
    """A dataset, shard, manifest or checkpoint that is missing, corrupt or inconsistent."""


class InputError(ValueError):
    """Arrays or arguments given to a filter or operator that cannot be used."""


USER_ERRORS = (ConfigError, SolverError, BackendError, DataError, InputError, OSError)

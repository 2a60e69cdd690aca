"""Exceptions that the ``ldensf`` command reports as one clear line (no traceback)."""
from .backend import BackendError
from .config import ConfigError
from .models import SolverError


class DataError(RuntimeError):
    """A dataset, shard or manifest that is missing, corrupt or inconsistent."""


class InputError(ValueError):
    """Arrays or arguments given to a filter or operator that cannot be used."""


USER_ERRORS = (ConfigError, SolverError, BackendError, DataError, InputError, OSError)

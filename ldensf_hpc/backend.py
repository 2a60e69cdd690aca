"""Array-backend selection (``xp`` = numpy or cupy) and reproducible seeding.

A backend is chosen once, by name, and passed down; nothing deeper re-detects it.
"""
from __future__ import annotations

import importlib
import importlib.util

import numpy as np

from .errors import BackendError

ARRAY_BACKENDS = ("numpy", "cupy")


def get_xp(name: str = "numpy"):
    """Return the array module for ``name`` ("numpy" or "cupy")."""
    if name == "numpy":
        return np
    if name == "cupy":
        if not cupy_available():
            raise BackendError("backend 'cupy' requested but no usable CUDA GPU/CuPy was found")
        import cupy

        return cupy
    raise BackendError(f"unknown array backend {name!r}; choose one of {', '.join(ARRAY_BACKENDS)}")


def array_module(array):
    """The array module (numpy or cupy) that owns ``array``."""
    return np if isinstance(array, np.ndarray) else importlib.import_module(type(array).__module__.split(".")[0])


def to_numpy(array) -> np.ndarray:
    """Copy ``array`` to host memory (no-op for NumPy arrays)."""
    return array.get() if hasattr(array, "get") and not isinstance(array, np.ndarray) else np.asarray(array)


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # cupy raises various CUDA errors without a GPU
        return False


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys`` (e.g. trajectory index).

    Per-item streams make results independent of worker and rank counts.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))

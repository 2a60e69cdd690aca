"""Where a result was computed: CPU, cores, thread settings, load, GPU and library versions.

Every report and benchmark record carries :func:`machine` so that its numbers say where
they come from.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import platform
from pathlib import Path

from .backend import cupy_available

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
VERSIONED = ("numpy", "scipy", "numba", "torch", "h5py", "dask", "distributed", "mpi4py", "cupy")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (the architecture where that is unavailable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (empty where unavailable)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def gpu_name() -> str | None:
    """Name of GPU 0 as seen by CuPy or, failing that, torch; None without a usable GPU."""
    if cupy_available():
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine() -> dict:
    """CPU, cores, thread settings, load, GPU and library versions of this process."""
    import numba
    import torch

    versions = {name: importlib.import_module(name).__version__ for name in VERSIONED
                if importlib.util.find_spec(name) is not None}
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu_name(),
            "threads": {"numba": numba.get_num_threads(), "torch": torch.get_num_threads(),
                        **{k: os.environ.get(k) for k in THREAD_VARIABLES}},
            "load_average": load_average(), "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions}


def describe(info: dict) -> str:
    """One line naming the machine of :func:`machine`."""
    return (f"{info['cpu']}, {info['cores']} cores (numba threads {info['threads']['numba']}, torch threads "
            f"{info['threads']['torch']}), GPU {info['gpu'] or 'none'}, load {info['load_average']}")

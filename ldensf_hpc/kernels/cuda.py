"""CUDA backend of the fused latent EnSF analysis: ``kernels/cuda/ensf_fused.cu`` via CuPy.

The module is loaded on first use, never at import: a prebuilt fatbin, else PTX, from the
cmake build (``cmake -S cmake -B build/cuda && cmake --build build/cuda``; directory
overridable with ``LDENSF_CUDA_BUILD``), else the same source compiled by NVRTC. One thread
per member, float32; d <= 32. :func:`host_analysis` runs the same kernel and launch on the CPU
(:mod:`ldensf_hpc.cuda_host`), which is how CI executes it.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from .. import cuda_host
from ..backend import BackendError, cupy_available
from ..errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = REPO_ROOT / "kernels" / "cuda" / "ensf_fused.cu"
THREADS = 128
"""Threads per block; must equal ENSF_THREADS in the .cu (the shared-memory tile size)."""
STATE_WIDTHS = (4, 8, 12, 16, 32)
"""Compiled kernels ``ensf_fused_d<D>``; a state of dimension d uses the smallest D >= d."""


def build_dir() -> Path:
    """Where the cmake build puts ``ensf_fused.fatbin`` and ``ensf_fused.ptx``."""
    return Path(os.environ.get("LDENSF_CUDA_BUILD", REPO_ROOT / "build" / "cuda"))


@functools.cache
def load_module():
    """(CuPy RawModule, origin): prebuilt fatbin or PTX if present, else NVRTC from source."""
    import cupy

    for name in ("ensf_fused.fatbin", "ensf_fused.ptx"):
        path = build_dir() / name
        if path.is_file():
            try:
                module = cupy.RawModule(path=str(path))
                module.get_function(f"ensf_fused_d{STATE_WIDTHS[0]}")
                return module, str(path)
            except cupy.cuda.driver.CUDADriverError:  # e.g. no code for this GPU's architecture
                continue
    if not SOURCE.is_file():
        raise BackendError(f"CUDA kernel source {SOURCE} not found and no prebuilt module in {build_dir()}")
    return cupy.RawModule(code=SOURCE.read_text(), options=("--std=c++17",)), "nvrtc"


def _arguments(xp, prior, obs, inv_var, table, noise, seed, mixture, clip, rows):
    """(width, blocks, arguments of ``ensf_fused_d<width>`` in order, output array) on array module ``xp``."""
    K, d = prior.shape
    if d > STATE_WIDTHS[-1]:
        raise InputError(f"the cuda EnSF kernel supports state dimension d <= {STATE_WIDTHS[-1]}, got {d}")
    width = next(w for w in STATE_WIDTHS if w >= d)

    def f32(array):
        return xp.ascontiguousarray(xp.asarray(array, dtype=xp.float32))

    n_rows = rows.stop - rows.start
    out = xp.empty((n_rows, d), xp.float32)
    noise_arg = f32(noise) if noise is not None else xp.empty(1, xp.float32)
    arguments = (f32(prior), np.int32(K), np.int32(d), f32(obs), f32(inv_var), f32(table), np.int32(table.shape[0]),
                 np.int32(mixture), np.float32(clip or 0.0), noise_arg, np.int32(noise is not None),
                 np.uint64(seed), np.int32(rows.start), np.int32(n_rows), out)
    return width, (n_rows + THREADS - 1) // THREADS, arguments, out


def analysis(prior, obs, inv_var, table, noise, seed, mixture, clip, rows):
    """CUDA EnSF analysis (arguments as prepared by :func:`ldensf_hpc.kernels.ensf_update`).

    Returns a CuPy array for CuPy ``prior``, else a NumPy array; always float32.
    """
    if not cupy_available():
        raise BackendError("the cuda EnSF kernel needs CuPy and a CUDA GPU; use backend='numba' or 'reference'")
    import cupy as cp

    width, blocks, arguments, out = _arguments(cp, prior, obs, inv_var, table, noise, seed, mixture, clip, rows)
    load_module()[0].get_function(f"ensf_fused_d{width}")((blocks,), (THREADS,), arguments)
    return out if isinstance(prior, cp.ndarray) else cp.asnumpy(out)


def host_analysis(prior, obs, inv_var, table, noise, seed, mixture, clip, rows):
    """The same kernel and launch run on the CPU by host emulation (:mod:`ldensf_hpc.cuda_host`; for tests, slow).

    Returns a float32 NumPy array.
    """
    width, blocks, arguments, out = _arguments(np, prior, obs, inv_var, table, noise, seed, mixture, clip, rows)
    cuda_host.launch("ensf_fused", blocks, THREADS, (np.int32(width), *arguments))  # the wrapper picks the width
    return out

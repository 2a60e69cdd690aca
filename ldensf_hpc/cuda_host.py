"""The package's CUDA C sources (``kernels/cuda/*.cu``) built for the CPU and loaded with ctypes.

``kernels/cuda/host/cuda_host.h`` maps the CUDA programming model onto host C++: a launch
runs the blocks in turn, each block's threads are ``blockDim`` host threads, ``__syncthreads``
is a barrier among them and ``__shared__`` arrays are shared by the block in flight. A
wrapper ``kernels/cuda/host/<name>.cpp`` includes ``../<name>.cu`` unchanged and exports a
C entry point ``<name>_launch(blocks, threads, <the kernel's arguments>)`` (0 on success), which
:func:`launch` calls. So the kernels'
logic — tiling, barriers, in-kernel Philox noise, index arithmetic — runs and is tested
without a GPU, against the same references as on a device.

The shared library is built once per content with the host C++ compiler (``$CXX``, default
``g++``) and cached under ``$LDENSF_CUDA_HOST_BUILD`` (default ``~/.cache/ldensf_hpc/cuda_host``)
with the digest of the sources, the compiler's version and the flags in its name, so an
edited source or another compiler gives a new build; a build is written to a temporary
name and renamed, never left half-written.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .errors import BackendError

SOURCES = Path(__file__).resolve().parents[1] / "kernels" / "cuda"
FLAGS = ("-O2", "-std=c++20", "-pthread", "-fPIC", "-shared", "-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas")
"""No FMA contraction: products and sums round as in NumPy (the device builds use ``--fmad=false`` likewise)."""


def build_root() -> Path:
    """Where built libraries are cached (``LDENSF_CUDA_HOST_BUILD`` overrides)."""
    default = Path.home() / ".cache" / "ldensf_hpc" / "cuda_host"
    return Path(os.environ.get("LDENSF_CUDA_HOST_BUILD", default))


def compiler() -> str | None:
    """Path of the host C++ compiler (``$CXX`` or ``g++``), None if there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def _digest(cxx: str) -> str:
    """Hash of every source the wrappers can include, the compiler's version and the flags."""
    h = hashlib.sha256()
    for path in sorted([*SOURCES.glob("*.cu"), *(SOURCES / "host").glob("*")]):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    h.update(version.encode() + " ".join(FLAGS).encode())
    return h.hexdigest()[:16]


@functools.cache
def library(name: str) -> ctypes.CDLL:
    """The CPU build of ``kernels/cuda/<name>.cu`` (built on first use); BackendError if impossible."""
    wrapper = SOURCES / "host" / f"{name}.cpp"
    if not wrapper.is_file():
        raise BackendError(f"no host wrapper {wrapper} for the CUDA source {name}.cu")
    cxx = compiler()
    if cxx is None:
        raise BackendError(f"building {name}.cu for the CPU needs a C++20 compiler: install g++ or set CXX")
    target = build_root() / f"{name}-{_digest(cxx)}.so"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            run = subprocess.run([cxx, *FLAGS, "-o", partial, str(wrapper)], capture_output=True, text=True,
                                 timeout=600)
            if run.returncode != 0:
                raise BackendError(f"{cxx} could not build {wrapper.name} for the CPU:\n{run.stderr.strip()}")
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    return ctypes.CDLL(str(target))


_SCALARS = {np.int32: ctypes.c_int, np.int64: ctypes.c_longlong, np.uint64: ctypes.c_ulonglong,
            np.float32: ctypes.c_float, np.float64: ctypes.c_double}


def launch(name: str, blocks: int, threads: int, arguments) -> None:
    """Launch ``kernels/cuda/<name>.cu`` on the CPU: ``blocks`` blocks of ``threads`` threads with
    ``arguments`` in the kernel's order (C-contiguous NumPy arrays as pointers, NumPy scalars as
    their C types, as the CuPy launch takes them)."""
    function = getattr(library(name), f"{name}_launch")
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_uint, ctypes.c_uint] + [
        np.ctypeslib.ndpointer(a.dtype, flags="C_CONTIGUOUS") if isinstance(a, np.ndarray) else _SCALARS[type(a)]
        for a in arguments]
    code = function(blocks, threads, *(a.item() if isinstance(a, np.generic) else a for a in arguments))
    if code != 0:
        raise BackendError(f"the host build of {name}.cu refused the launch (code {code})")

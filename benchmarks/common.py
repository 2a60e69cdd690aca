"""Helpers shared by the benchmark scripts: machine description, timing, tables, JSON.

Every benchmark prints a Markdown table and writes a JSON record under
``benchmarks/results/`` whose ``machine`` entry says where the numbers come from
(CPU model, cores, thread settings, load, GPU, library versions).

OpenBLAS threads spin while they wait: on a machine whose cores are busy with
other work a 2-thread matrix product can run 50x slower than a 1-thread one.
Compare timings only from a quiet machine, or set ``OPENBLAS_NUM_THREADS=1``.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from ldensf_hpc.machine import describe, gpu_name, load_average, machine  # noqa: F401 (used by the benchmarks)

RESULTS = Path(__file__).parent / "results"

PEAK_GHZ = 2.6
"""Clock of the peak estimates (the CI machine's AMD EPYC Zen 4 cores)."""
FMA_PER_CYCLE = {"bfloat16": 32, "float32": 16, "float64": 8}
"""FMA lanes per cycle and core: Zen 4 issues two 256-bit FMAs per cycle (AVX-512 in two halves);
its AVX512-BF16 dot products do two bfloat16 products per float32 lane."""


def peak_gflops(precision: str = "float32", cores: int | None = None) -> float:
    """Arithmetic peak ``cores x FMA lanes x 2 flops x PEAK_GHZ`` in GFLOP/s (default: this process's cores)."""
    cores = cores or len(os.sched_getaffinity(0))
    return cores * FMA_PER_CYCLE[precision] * 2 * PEAK_GHZ


def device_tag(gpu: str | None) -> str:
    """``cpu`` or the GPU name as a file-name tag, e.g. ``nvidia-h100-80gb-hbm3``."""
    return "cpu" if gpu is None else re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")


def best_of(run, repeats: int = 3, warmup: int = 1, sync=None) -> dict:
    """Time ``run()``: ``warmup`` untimed calls, then ``repeats`` timed ones (``sync()`` after each).

    Returns the best and median wall seconds and all of them.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    sync = sync or (lambda: None)
    for _ in range(warmup):
        run()
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return {"best_s": min(times), "median_s": float(np.median(times)), "times_s": times}


def timed(run) -> tuple[object, float, float]:
    """``run()``'s result, wall seconds and process-CPU seconds (all threads; CPU time shows contention)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = run()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def fmt(value, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; None and NaN print as ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{value:.{digits}g}"


def markdown_table(headers, rows) -> str:
    """A Markdown table; numeric cells are formatted by :func:`fmt` and right-aligned."""
    def cell(v):
        return fmt(v) if v is None or isinstance(v, (int, float, np.number)) else str(v)

    numeric = [all(isinstance(r[i], (int, float, np.number)) or r[i] is None for r in rows) if rows else False
               for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _plain(value):
    """NumPy scalars and arrays as Python numbers and lists (for ``json.dump``)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_json(path, record: dict) -> Path:
    """Write ``record`` to ``path`` through a temporary file and a rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, default=_plain)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path

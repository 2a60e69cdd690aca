"""Resumable, parallel generation of trajectory datasets into HDF5 shards.

Trajectory ``i`` draws its parameters and initial state from ``rng_for(seed, i)``
and is simulated in a batch with the other trajectories of its shard; the models
are member-wise independent, so every trajectory, and hence every shard file, is
bitwise the same for any worker count, rank count or backend. One task makes one
shard (``shards/shard-NNNNN.h5``) and returns only its checksum; the driver keeps
``manifest.json`` up to date and writes the virtual ``dataset.h5`` at the end
(layout in :mod:`ldensf_hpc.data.store`). A rerun skips shards that verify and
redoes missing, half-written or corrupt ones.

Examples::

    ldensf generate --case swe --preset small --out data/swe                   # Dask, all cores
    mpiexec -n 4 ldensf generate --case kolmogorov --out data/kol --backend mpi
    ldensf generate --case swe --preset paper --out data/swe --scheduler slurm --workers 32
"""
from __future__ import annotations

import fcntl
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import __version__, cases
from ..backend import array_module, rng_for, to_numpy
from ..errors import USER_ERRORS, ConfigError, DataError
from ..models import FrameSchedule, trajectory
from . import store


def frame_schedule(cfg) -> FrameSchedule:
    """The stored frames of ``cfg``'s case."""
    return cases.get(cfg.case).schedule(cfg.model)


def generation_config(cfg) -> dict:
    """The part of the config that determines the data (checked on resume)."""
    section = cfg.to_dict()[cfg.case]
    data = {k: getattr(cfg.data, k) for k in ("n_trajectories", "shard_size", "seed")}
    return {"case": cfg.case, cfg.case: section, "data": data}


def _flatten(tree: dict, prefix: str = "") -> dict:
    """``{"swe": {"n": 32}}`` -> ``{"swe.n": "32"}`` (values as canonical JSON)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = store.canonical_json(value)
    return out


# ---------------------------------------------------------------- simulation


def simulate(model, schedule: FrameSchedule, seed: int, start: int, stop: int):
    """Trajectories ``start .. stop - 1`` as one batch: fields ``(n, T, F, ny, nx)`` float32, params ``(n, p)``."""
    params, states = [], []
    for i in range(start, stop):
        rng = rng_for(seed, i)
        p = model.sample_params(rng, 1)
        params.append(p)
        states.append(model.initial_state(p, rng))
    params = np.concatenate(params)
    state = array_module(states[0]).concatenate(states)
    if schedule.warmup_steps:
        state = model.step(state, params, schedule.warmup_steps)
    fields = trajectory(model, state, params, schedule.n_frames - 1, schedule.steps_per_frame)
    return to_numpy(fields).astype(np.float32), params


def produce_shard(cfg, root: str, entry: dict, manifest: dict) -> dict:
    """Make shard ``entry`` unless a file that verifies is already there (the Dask/MPI task).

    Returns a small record: shard index, sha256, bytes, whether it was reused and,
    when an existing file was redone, why.
    """
    path = Path(root) / store.SHARDS / entry["name"]
    reason = None
    if path.exists():
        try:
            digest = store.verify_shard(path, entry, manifest)
            return {"shard": entry["shard"], "sha256": digest, "bytes": path.stat().st_size, "reused": True}
        except DataError as exc:
            reason = str(exc)
    model = cases.get(cfg.case).model(cfg)
    fields, params = simulate(model, frame_schedule(cfg), cfg.data.seed, entry["start"], entry["stop"])
    digest = store.write_shard(path, entry["shard"], entry["start"], fields, params, manifest["config"])
    return {"shard": entry["shard"], "sha256": digest, "bytes": path.stat().st_size, "reused": False,
            "redone": reason}


def _dask_task(cfg, root: str, entry: dict, manifest: dict) -> dict:
    """:func:`produce_shard` returning a user error (bad config, unstable solver) as a value,
    so the driver reports it as one line instead of the worker logging a traceback."""
    try:
        return produce_shard(cfg, root, entry, manifest)
    except USER_ERRORS as exc:
        return {"shard": entry["shard"], "error": exc}


# ---------------------------------------------------------------- the driver


@dataclass
class Summary:
    """What a run did; ``root`` is False on MPI ranks other than 0 (they print nothing)."""

    out: Path
    n_trajectories: int
    n_shards: int
    n_reused: int
    bytes_written: int
    wall_s: float
    root: bool = True

    def __fspath__(self) -> str:  # a summary stands for its dataset directory (os.PathLike, str)
        return str(self.out)

    __str__ = __fspath__

    def describe(self) -> str:
        return (f"{self.n_trajectories} trajectories in {self.n_shards} shards ({self.n_reused} reused), "
                f"{self.bytes_written / 1e9:.3f} GB written in {self.wall_s:.1f} s -> {self.out / store.DATASET}")


LOCK = ".lock"
"""Held (``flock``) by the one process that writes a dataset directory, for as long as it runs."""


def _lock_directory(root: Path):
    """The open, exclusively locked ``root/.lock`` (released when this process ends); DataError if
    another process holds it. The lock file is never written: a refused run changes nothing."""
    handle = open(root / LOCK, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DataError(f"{root} is busy: another ldensf generate is writing into it; wait for it to finish, "
                        "or use another output directory (generate --out, run --workdir)") from None
    return handle


def open_directory(root: Path, case: str, config: dict, n_trajectories: int, shard_size: int, frame_shape,
                   n_params: int) -> tuple[dict, object]:
    """Create or check the dataset directory ``root`` for data made with ``config``: lock it, refuse a
    directory holding other data, remove stale temporary shards and (re)write the manifest, keeping the
    checksums of an earlier run of the same config. Returns the manifest and the held lock."""
    if root.exists() and not root.is_dir():
        raise DataError(f"output path {root} exists and is not a directory")
    try:
        (root / store.SHARDS).mkdir(parents=True, exist_ok=True)
        lock = _lock_directory(root)
        old = store.read_manifest(root)
        if old is None and (root / store.DATASET).exists():
            raise DataError(f"{root} holds a {store.DATASET} without {store.MANIFEST}; "
                            "use another output directory (generate --out, run --workdir)")
        if old is not None and store.canonical_json(old["config"]) != store.canonical_json(config):
            was, now = _flatten(old["config"]), _flatten(config)
            diff = sorted(k for k in {*was, *now} if was.get(k) != now.get(k))
            raise DataError(f"{root} holds a dataset made with a different configuration "
                            f"(differs in: {', '.join(diff)}); use another output directory (generate --out, run --workdir)")
        manifest = store.new_manifest(case, config, n_trajectories, shard_size, frame_shape, n_params)
        if old is not None:
            manifest["shards"] = old["shards"]
        for stale in (root / store.SHARDS).glob("*.tmp"):
            stale.unlink(missing_ok=True)
        store.write_manifest(root, manifest)
    except OSError as exc:
        raise DataError(f"cannot write to output directory {root}: {exc.strerror or exc}") from None
    return manifest, lock


class Job:
    """The driver's view of one run: config, output directory, manifest and progress."""

    def __init__(self, cfg, out):
        """Validate everything that needs no disk access (config, model, frame shape)."""
        if cfg.data.n_trajectories < 1 or cfg.data.shard_size < 1:
            raise ConfigError("data.n_trajectories and data.shard_size must be >= 1")
        self.cfg, self.root, self.t0 = cfg, Path(out).resolve(), time.perf_counter()
        self.schedule = frame_schedule(cfg)
        self.case = cases.get(cfg.case)
        self.model = self.case.model(cfg)
        rng = rng_for(cfg.data.seed, 0)
        first = self.model.to_fields(self.model.initial_state(self.model.sample_params(rng, 1), rng))
        self.frame_shape = (self.schedule.n_frames, *first.shape[1:])
        self.n_params = len(self.model.param_names)
        self.manifest = None
        self.done: dict[int, dict] = {}

    def open(self) -> list[dict]:
        """Create or check the output directory and manifest; return the shard entries to run."""
        self.manifest, self._lock = open_directory(self.root, self.cfg.case, generation_config(self.cfg),
                                                   self.cfg.data.n_trajectories, self.cfg.data.shard_size,
                                                   self.frame_shape, self.n_params)
        return [dict(entry) for entry in self.manifest["shards"]]

    @staticmethod
    def progress(total: int, show: bool, desc: str = "shards"):
        """A progress bar on stderr, shown only when ``show`` and stderr is a terminal."""
        return tqdm(total=total, desc=desc, unit="shard", file=sys.stderr, leave=False,
                    disable=None if show else True)

    def record(self, result: dict) -> None:
        """Note a finished shard in the manifest (rewritten atomically)."""
        self.done[result["shard"]] = result
        self.manifest["shards"][result["shard"]]["sha256"] = result["sha256"]
        if result.get("redone"):
            tqdm.write(f"ldensf: redid {result['redone']}", file=sys.stderr)
        store.write_manifest(self.root, self.manifest)

    def finish(self) -> Summary:
        """Check every shard's structure, then write ``dataset.h5``."""
        missing = [e["name"] for e in self.manifest["shards"] if e["shard"] not in self.done]
        if missing:
            raise DataError(f"shards not finished: {', '.join(missing)}")
        for entry in self.manifest["shards"]:
            store.verify_shard(self.root / store.SHARDS / entry["name"], entry, self.manifest, checksum=False)
        model, schedule = self.model, self.schedule
        frame_dt = schedule.steps_per_frame * model.dt
        time_ = (schedule.warmup_steps + schedule.steps_per_frame * np.arange(schedule.n_frames)) * model.dt
        x, y = self.case.coordinates(model, *self.frame_shape[-2:])
        attrs = {"config": self.cfg.to_dict(), "case": self.cfg.case, "geometry": self.case.geometry,
                 "field_names": list(model.field_names),
                 "param_names": list(model.param_names), "units": self.case.units(model),
                 "grid": model.grid, "dt": float(frame_dt), "seed": int(self.cfg.data.seed),
                 "version": __version__}
        store.write_dataset(self.root, self.manifest, attrs, time_, x, y)
        fresh = [r for r in self.done.values() if not r["reused"]]
        return Summary(self.root, self.cfg.data.n_trajectories, len(self.done), len(self.done) - len(fresh),
                       sum(r["bytes"] for r in fresh), time.perf_counter() - self.t0)


# ---------------------------------------------------------------- backends


def _run_serial(cfg, out, progress: bool, **_) -> Summary:
    job = Job(cfg, out)
    entries = job.open()
    with job.progress(len(entries), progress) as bar:
        for entry in entries:
            job.record(produce_shard(cfg, str(job.root), entry, job.manifest))
            bar.update()
    return job.finish()


def _run_dask(cfg, out, progress: bool, scheduler: str = "local", workers: int | None = None) -> Summary:
    from ..parallel.dask import dask_client

    job = Job(cfg, out)
    if scheduler == "mpi":  # every rank gets here; only the client rank returns from dask_mpi.initialize
        with dask_client(scheduler, workers, cfg.cluster) as client:
            return _run_futures(job, job.open(), client, progress)
    entries = job.open()  # a bad output directory fails before a cluster starts
    with dask_client(scheduler, workers, cfg.cluster) as client:
        return _run_futures(job, entries, client, progress)


def _run_futures(job: Job, entries: list[dict], client, progress: bool) -> Summary:
    """One Dask task per shard; results are recorded as they arrive."""
    from distributed import as_completed

    token = f"{os.getpid()}-{time.time_ns()}"
    futures = [client.submit(_dask_task, job.cfg, str(job.root), entry, job.manifest,
                             key=f"ldensf-{entry['name']}-{token}") for entry in entries]
    try:
        with job.progress(len(futures), progress) as bar:
            for future in as_completed(futures):
                result = future.result()
                if "error" in result:
                    raise result["error"]
                job.record(result)
                bar.update()
    except BaseException:
        client.cancel(futures)
        raise
    return job.finish()


def _run_mpi(cfg, out, progress: bool, **_) -> Summary:
    """Rank ``r`` of ``N`` makes shards ``r, r + N, ...``; rank 0 keeps the manifest and writes dataset.h5."""
    from mpi4py import MPI

    from ..parallel import limit_threads

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    limit_threads(max(1, (os.cpu_count() or 1) // comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()))

    def agreed(step):
        """Run ``step`` on every rank; if it fails on any rank, raise that error on all of them."""
        error = None
        try:
            value = step()
        except Exception as exc:  # re-raised below on every rank, so no rank waits forever
            error, value = exc, None
        errors = comm.allgather(error)
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise error if error is not None else first
        return value

    job = agreed(lambda: Job(cfg, out))
    entries = comm.bcast(agreed(job.open if rank == 0 else lambda: None), root=0)
    manifest = comm.bcast(job.manifest, root=0)
    mine = entries[rank::size]

    def run_mine():
        results = []
        with job.progress(len(mine), progress and rank == 0, desc=f"rank 0 of {size}") as bar:
            for entry in mine:
                results.append(produce_shard(cfg, str(job.root), entry, manifest))
                if rank == 0:
                    job.record(results[-1])
                bar.update()
        return results

    gathered = comm.gather(agreed(run_mine), root=0)

    def finish():
        if rank != 0:
            return None
        for result in (r for results in gathered[1:] for r in results):
            job.record(result)
        return job.finish()

    summary = comm.bcast(agreed(finish), root=0)
    summary.root = rank == 0
    return summary


BACKENDS = {"serial": _run_serial, "dask": _run_dask, "mpi": _run_mpi}


def generate(cfg, out, scheduler: str = "local", workers: int | None = None, backend: str = "dask",
             progress: bool = True) -> Summary:
    """Generate (or finish) the dataset of ``cfg`` in directory ``out``; see the module docstring.

    ``backend`` is "dask" (cluster chosen by ``scheduler``: "local", "mpi", "slurm" or a
    scheduler address; ``workers`` processes), "mpi" (under ``mpiexec``) or "serial".
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown generation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if backend != "dask" and (workers is not None or scheduler != "local"):
        given = "--workers" if workers is not None else f"--scheduler {scheduler}"
        raise ConfigError(f"{given} applies to --backend dask only (this run: --backend {backend}); drop it")
    if backend == "dask":
        from ..parallel.dask import check_scheduler

        check_scheduler(scheduler)  # before the output directory is touched
    return BACKENDS[backend](cfg, out, progress=progress, scheduler=scheduler, workers=workers)

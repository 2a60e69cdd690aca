"""Dask clients for trajectory generation: local processes, dask-mpi, SLURM, or an address.

Every worker is a single-threaded process with its BLAS/OpenMP/Numba pools capped
at one thread (:func:`ldensf_hpc.parallel.thread_env`), so N workers use N cores.

- ``local``: ``LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)``;
- ``mpi``: ``dask_mpi.initialize()`` under ``mpiexec -n N`` (rank 0 scheduler, rank 1
  this client, ranks 2.. workers); needs ``pip install dask-mpi``;
- ``slurm``: ``dask_jobqueue.SLURMCluster`` from the ``cluster`` config section
  (queue, account, walltime, cores, memory), scaled to ``workers`` workers;
- anything else: the address of a running scheduler, e.g. ``tcp://10.0.0.1:8786``.

Nothing waits forever: the scheduler is reached within 30 s, and the first worker must
join within ``cluster.worker_timeout`` seconds (SLURM jobs still queued, a scheduler
without workers), else a BackendError says what to check.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

from ..backend import BackendError
from . import limit_threads, thread_env


def _local(workers: int | None, cluster_cfg):
    from distributed import LocalCluster

    n = workers or os.cpu_count() or 1
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                        env=thread_env(1))  # dashboard on a free port: never clashes with another run


def _mpi(workers: int | None, cluster_cfg):
    try:
        import dask_mpi
    except ImportError:
        raise BackendError("--scheduler mpi needs dask-mpi: pip install dask-mpi "
                           "(or use --backend mpi, which needs only mpi4py)") from None
    limit_threads(1)  # this process becomes the scheduler, the client or a worker
    dask_mpi.initialize(nthreads=1, dashboard=False)  # returns on the client rank only
    return None  # the client finds the scheduler through the config set by initialize


def slurm_cluster(cluster_cfg):
    """An unscaled ``SLURMCluster``: one single-threaded worker per core of each job."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise BackendError("--scheduler slurm needs dask-jobqueue: pip install dask-jobqueue") from None
    c = cluster_cfg
    if c.cores < 1:
        raise BackendError(f"cluster.cores must be >= 1, got {c.cores}")
    prologue = [f"export {k}={v}" for k, v in thread_env(1).items()]
    return SLURMCluster(queue=c.queue, account=c.account, walltime=c.walltime, cores=c.cores,
                        processes=c.cores, memory=c.memory, job_script_prologue=prologue,
                        scheduler_options={"dashboard_address": None})


def _check_slurm() -> None:
    """SLURM's tools on PATH and a controller that answers, before any job is submitted."""
    missing = [tool for tool in ("sbatch", "squeue", "scancel", "sinfo") if shutil.which(tool) is None]
    if missing:
        raise BackendError(f"--scheduler slurm submits SLURM jobs, but {', '.join(missing)} is not on PATH here; "
                           "run on a cluster login node, or use --scheduler local")
    try:  # sbatch needs a reachable controller; dask-jobqueue would only log its failures and wait
        probe = subprocess.run(["sinfo", "--noheader", "--summarize"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendError(f"--scheduler slurm: the SLURM controller did not answer sinfo ({exc})") from None
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise BackendError(f"--scheduler slurm: SLURM is not usable here (sinfo: {last}); "
                           "start the controller or use --scheduler local")


def _slurm(workers: int | None, cluster_cfg):
    cluster = slurm_cluster(cluster_cfg)
    cluster.scale(workers or cluster_cfg.cores)
    return cluster


SCHEDULERS = {"local": _local, "mpi": _mpi, "slurm": _slurm}


def _wait_for_a_worker(client, scheduler: str, timeout: float) -> None:
    """Return once a worker has joined; BackendError after ``timeout`` seconds."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        hint = ("the SLURM jobs may still be queued (check squeue) or failed (their .err files)"
                if scheduler == "slurm" else "is anything starting workers for this scheduler?")
        raise BackendError(f"no Dask worker joined the {scheduler} scheduler within cluster.worker_timeout = "
                           f"{timeout:g} s; {hint}") from None


def check_scheduler(scheduler: str) -> None:
    """BackendError unless ``scheduler`` is one of :data:`SCHEDULERS` (SLURM: usable here) or looks like an address."""
    if scheduler not in SCHEDULERS and ":" not in scheduler:
        raise BackendError(f"unknown Dask scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)} "
                           "or give a scheduler address such as tcp://host:8786")
    if scheduler == "slurm":
        _check_slurm()


@contextlib.contextmanager
def dask_client(scheduler: str = "local", workers: int | None = None, cluster_cfg=None):
    """A connected ``distributed.Client`` with at least one worker; a cluster created here is closed on exit."""
    from distributed import Client

    if workers is not None and workers < 1:
        raise BackendError(f"--workers must be >= 1, got {workers}")
    check_scheduler(scheduler)
    if scheduler in SCHEDULERS:
        cluster = target = SCHEDULERS[scheduler](workers, cluster_cfg)
    else:
        cluster, target = None, scheduler
    try:
        try:
            client = Client(target, timeout="30s")
        except OSError as exc:
            raise BackendError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        with client:
            _wait_for_a_worker(client, scheduler, cluster_cfg.worker_timeout if cluster_cfg else 600.0)
            yield client
    finally:
        if cluster is not None:
            cluster.close()

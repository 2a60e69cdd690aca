"""The ``ldensf`` command: info, generate, train, assimilate, run, jobs render.

A thin layer over the package: every choice it offers (cases, presets, methods,
surrogates) is read from the registries, and every user error ends as one line.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
import shlex
import sys

from . import __version__
from .cases import CASES, DEFAULT_CASE, PRESETS, load_config
from .data.store import made_with
from .errors import USER_ERRORS, ConfigError
from .filters import METHODS
from .surrogate import SURROGATES


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``ldensf: error: argument --filter: invalid choice: ...``), exit code 2."""

    def error(self, message):
        self.exit(2, f"ldensf: error: {message}\n")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--case", default=None, metavar="CASE",
                   help=f"test case: {', '.join(CASES)}, or package.module:Class of your own (a ModelCase) "
                        f"(default: the config's case:, else {DEFAULT_CASE})")
    p.add_argument("--preset", default="small", help=f"one of {', '.join(PRESETS)} (default: %(default)s)")
    p.add_argument("--config", default=None, help="YAML file merged over the preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set swe.n=64 or, for any case, --set model.n=64 (repeatable)")


def _single_process(command: str, backend: str | None) -> None:
    """Refuse to run a whole job once per rank: under mpiexec only ``--backend mpi`` shares the work."""
    from .parallel import launched_ranks

    n = launched_ranks()
    if n > 1 and backend != "mpi":
        fix = "pass --backend mpi" if command in ("generate", "assimilate") else "run it without mpiexec"
        raise ConfigError(f"`ldensf {command}` was started as {n} MPI ranks, but "
                          f"{'--backend ' + backend if backend else 'it'} would run the whole job in every rank, "
                          f"all writing the same files; {fix}")


def _config(args, command: str, methods=(), surrogates=None):
    """The config of ``args``, refusing overrides ``command`` does not read (:mod:`ldensf_hpc.settings`).

    ``surrogates`` (None: those the ``methods`` need with this config) are the networks whose
    sections the command reads.
    """
    from . import settings
    from .filters import make_method

    cfg = load_config(args.preset, case=args.case, overrides=args.overrides, path=args.config,
                      dataset=made_with(getattr(args, "data", None)))
    if surrogates is None:
        surrogates = tuple(dict.fromkeys(s for m in methods for s in make_method(m, cfg).surrogates(cfg)))
    settings.check(cfg, args.overrides, command, methods, surrogates)
    return cfg


def cmd_import(args) -> int:
    from .api import Case

    _single_process("import", None)
    case = Case.from_dataset(args.source, args.out, preset=args.preset, trajectory=args.trajectory_dim,
                             fields=_names(args.fields), params=_names(args.params), periodic=args.periodic,
                             shard_size=args.shard_size)
    print(case.imported.describe())
    return 0


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def cmd_info(args) -> int:
    print(f"ldensf_hpc {__version__}  python {platform.python_version()}  {platform.machine()}")
    for name in ("numpy", "scipy", "numba", "torch", "h5py", "dask", "distributed", "dask_jobqueue",
                 "mpi4py", "cupy", "tqdm", "yaml"):
        if importlib.util.find_spec(name) is None:
            print(f"  {name:14s} not installed")
            continue
        try:
            mod = importlib.import_module(name)
            print(f"  {name:14s} {getattr(mod, '__version__', '?')}")
        except Exception as exc:  # a broken optional install is reported, not fatal
            print(f"  {name:14s} import failed: {exc}")
    from .backend import cupy_available

    print(f"  CUDA GPU (cupy) {'yes' if cupy_available() else 'no'}")
    from .cuda_host import compiler

    cxx = compiler()
    print(f"  CUDA on CPU     {'emulated with ' + cxx if cxx else 'no (needs g++ or $CXX)'} (backend cuda_host)")
    try:
        import torch

        print(f"  torch CUDA      {'yes' if torch.cuda.is_available() else 'no'}; threads {torch.get_num_threads()}")
    except ImportError:
        pass
    try:
        from mpi4py import MPI

        print(f"  MPI             {MPI.Get_library_version().splitlines()[0]}")
    except Exception as exc:
        print(f"  MPI             unavailable ({exc})")
    return 0


def cmd_generate(args) -> int:
    from .api import Case

    _single_process("generate", args.backend)
    summary = Case(_config(args, "generate")).generate(args.out, backend=args.backend, scheduler=args.scheduler,
                                                       workers=args.workers, progress=True)
    if summary.root:
        print(summary.describe())
    return 0


def cmd_train(args) -> int:
    from .api import Case
    from .surrogate import training_order

    _single_process("train", None)
    names = ["ldnet", "encoder"] if args.model == "all" else [args.model]
    case = Case(_config(args, "train", surrogates=training_order(names)))
    for name, summary in case.train(args.data, args.out, names, progress=not args.quiet).summaries.items():
        errors = ", ".join(f"{k} {v:.4g}" for k, v in summary.items() if k.endswith(("rel_error", "_latent", "_params")))
        print(f"{name}: {args.out}/{name}.pt  {errors}")
    return 0


def cmd_assimilate(args) -> int:
    from .api import Case, assimilate
    from .assimilation import summary_table

    _single_process("assimilate", args.backend)
    case = Case(_config(args, "assimilate", [args.filter], surrogates=()))
    result = assimilate(case, args.filter, args.data, models=args.models, backend=args.backend,
                        observations=args.observations, trajectory=args.trajectory)
    if result is not None:  # rank 0 only
        print(summary_table({**result.record, "path": str(result.to_json(args.out))}))
    return 0


def cmd_run(args) -> int:
    from .api import Case
    from .pipeline import capability_table, summary_table

    _single_process("run", None)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    try:
        levels = [float(v) for v in args.noise.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--noise takes comma-separated fractions, e.g. 0,0.05,0.1,0.2; got {args.noise!r}") from None
    case = Case(_config(args, "run", [m for m in methods if m in METHODS]))
    report = case.run(args.workdir, methods=methods, levels=levels, data=args.data, backend=args.backend,
                      progress=not args.quiet, command=args.command_line)
    if report.get("reused"):
        print(f"reusing the report of a run with the same inputs (config, methods, noise levels, dataset, "
              f"checkpoints; digest {report['inputs_sha256'][:12]})")
    print(summary_table(report))
    print(f"\n{report['legend']}\n\n{capability_table(report)}\n")
    print(f"report: {report['path']} (and report.md); plots: {', '.join(report['plots'])}")
    return 0


def cmd_jobs_render(args) -> int:
    from .jobs import SlurmJob, render_slurm

    job = SlurmJob(args.template, case=args.case or DEFAULT_CASE, preset=args.preset, nodes=args.nodes,
                   ntasks_per_node=args.ntasks_per_node, cpus_per_task=args.cpus_per_task, gpus=args.gpus,
                   time=args.time, partition=args.partition, account=args.account, data=args.data,
                   runs=args.runs, config=args.config, overrides=tuple(args.overrides))
    text = render_slurm(job)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
        print(f"wrote {args.out}; submit with: sbatch {shlex.quote(args.out)}")
    else:
        print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ldensf", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ldensf_hpc {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also: LDENSF_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions and backends found on this machine")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("generate", help="generate a trajectory dataset into HDF5 shards (resumable)")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--backend", choices=("dask", "mpi", "serial"), default="dask",
                   help="dask (default), mpi (under mpiexec, no Dask) or serial")
    p.add_argument("--scheduler", default="local",
                   help="dask scheduler: local, mpi (dask-mpi), slurm, or a scheduler address")
    p.add_argument("--workers", type=int, default=None, help="dask workers (default: CPU count)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("import", help="import your own trajectories (NetCDF, Zarr, HDF5) as a dataset (resumable)")
    p.add_argument("source", help="a NetCDF/HDF5 file or a Zarr directory readable by xarray")
    p.add_argument("--out", required=True, help="dataset directory to write (as `ldensf generate --out`)")
    p.add_argument("--preset", default="small", help=f"network and observation sizes: one of {', '.join(PRESETS)} "
                   "(default: %(default)s)")
    p.add_argument("--trajectory-dim", default="trajectory", help="the trajectory dimension (default: %(default)s)")
    p.add_argument("--fields", default=None, help="comma-separated field variables (default: every variable over "
                   "trajectory, time and the 2-D grid)")
    p.add_argument("--params", default=None, help="comma-separated parameter variables (default: every variable "
                   "over the trajectory dimension alone or with one parameter dimension)")
    p.add_argument("--periodic", action="store_true", help="the grid wraps around in both directions")
    p.add_argument("--shard-size", type=int, default=4, help="trajectories per HDF5 shard (default: %(default)s)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("train", help="train the LDNet and the LSTM encoder (resumes from OUT/*.pt)")
    _add_config_args(p)
    p.add_argument("--data", required=True, help="dataset directory written by `ldensf generate`")
    p.add_argument("--out", required=True, help="directory for checkpoints ldnet.pt, encoder.pt and summaries")
    p.add_argument("--model", choices=[*SURROGATES, "all"], default="all",
                   help="what to train: all = ldnet then encoder (default); vae: Latent-EnSF's coupled VAE; "
                        "set_encoder: the point-set encoder for moving sensors (the encoders need a finished LDNet)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("assimilate", help="filter noisy sparse observations of a held-out trajectory")
    _add_config_args(p)
    p.add_argument("--data", required=True, help="dataset directory written by `ldensf generate`")
    p.add_argument("--out", required=True, help="directory for assimilate_<method>.json")
    p.add_argument("--filter", choices=list(METHODS), default="ensf", metavar="METHOD",
                   help=f"one of {', '.join(METHODS)} (default: %(default)s)")
    p.add_argument("--models", default=None, help="checkpoints of `ldensf train` (methods with surrogates)")
    p.add_argument("--backend", choices=("serial", "mpi"), default="serial",
                   help="serial (default) or mpi: members sharded over the ranks of mpiexec -n N")
    p.add_argument("--observations", default=None, metavar="LOG", help="a sensor log (CSV, NetCDF or Zarr with "
                   "columns time, x, y, field, value[, std]) instead of synthetic observations of the trajectory")
    p.add_argument("--trajectory", type=int, default=None, help="the dataset's trajectory to assimilate and score "
                   "(default: the first of the test split)")
    p.set_defaults(func=cmd_assimilate)

    p = sub.add_parser("run", help="the whole pipeline: generate, train, compare the methods, report")
    _add_config_args(p)
    p.add_argument("--workdir", default=None, help="where data, checkpoints and the report go "
                   "(default: runs/CASE-PRESET; reused when present)")
    p.add_argument("--data", default=None, help="an existing dataset (e.g. of `ldensf import`) instead of "
                   "generating WORKDIR/data; its case and solver settings are the run's")
    p.add_argument("--methods", default="free,ensf,latent_ensf,ld_ensf,letkf,levda",
                   help=f"comma-separated, from {', '.join(METHODS)} (default: %(default)s)")
    p.add_argument("--noise", default="0,0.05,0.1,0.2",
                   help="noise levels, fractions of each field's std (default: %(default)s)")
    p.add_argument("--backend", choices=("dask", "serial"), default="dask", help="dataset generation backend")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("jobs", help="job scripts for clusters")
    jobs = p.add_subparsers(dest="jobs_command", required=True)
    p = jobs.add_parser("render", help="fill a SLURM template: ldensf jobs render slurm generate --nodes 4")
    p.add_argument("system", choices=("slurm",))
    p.add_argument("template", help="generate, generate_dask, train, assimilate, timing or scaling")
    _add_config_args(p)
    for knob, default in (("nodes", 1), ("ntasks-per-node", 1), ("cpus-per-task", 1), ("gpus", 0)):
        p.add_argument(f"--{knob}", type=int, default=default)
    p.add_argument("--time", default="01:00:00")
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--data", default="data", help="dataset directory the job reads or writes")
    p.add_argument("--runs", default="runs", help="directory for checkpoints and reports")
    p.add_argument("--out", default=None, help="write the script here (default: print it)")
    p.set_defaults(func=cmd_jobs_render)
    return parser


def main(argv=None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
        args = build_parser().parse_args(argv)
        args.command_line = shlex.join(["ldensf", *argv])
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return int(exc.code or 0)
    debug = args.debug or os.environ.get("LDENSF_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"ldensf: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ldensf: interrupted; finished work is kept, rerun to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours, never the user's input: say so in one line
        if debug:
            raise
        print(f"ldensf: internal error: {type(exc).__name__}: {error_line(exc)} (rerun with --debug for the "
              "traceback, and please report it)", file=sys.stderr)
        return 1


def error_line(exc: BaseException) -> str:
    """One line for ``exc``: an OS error names the file and the reason, never a raw errno."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())

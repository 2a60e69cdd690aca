"""Render the SLURM batch templates in ``jobs/slurm/`` into scripts a user can read and submit.

``ldensf jobs render slurm generate --nodes 4 --preset paper --out gen.sbatch``
fills the template's ``${...}`` knobs (``$$`` is a literal ``$``) from the CLI. What the job
would run is checked here, before anything reaches the cluster: the config (``--config``,
``--set``) is loaded by the same loader and command rules as the command itself, ``--time``
and the names are SLURM's formats, and every path and value is shell-quoted.
"""
from __future__ import annotations

import os
import re
import shlex
import string
from dataclasses import dataclass, field
from pathlib import Path

from .cases import CASES, PRESETS, load_config
from .errors import ConfigError

JOBS_DIR = Path(__file__).resolve().parents[1] / "jobs"
SLURM_TEMPLATES = ("generate", "generate_dask", "train", "assimilate", "timing", "scaling")
COMMANDS = {"generate": "generate", "generate_dask": "generate", "train": "train", "assimilate": "assimilate",
            "timing": None, "scaling": None}
"""The ``ldensf`` command each template runs (None: a benchmark script, which takes no config)."""
SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$")
"""sbatch --time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
SLURM_NAME = re.compile(r"^[A-Za-z0-9_.+,-]+$")


@dataclass
class SlurmJob:
    """The usual sbatch knobs plus what the job runs."""

    template: str
    case: str = "swe"
    preset: str = "small"
    nodes: int = 1
    ntasks_per_node: int = 1
    cpus_per_task: int = 1
    gpus: int = 0
    time: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    data: str = "data"
    runs: str = "runs"
    workdir: str = field(default_factory=os.getcwd)
    config: str | None = None  # --config file passed to the command (absolute path)
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE passed to the command

    def optional_lines(self) -> str:
        lines = []
        if self.partition:
            lines.append(f"#SBATCH --partition={self.partition}")
        if self.account:
            lines.append(f"#SBATCH --account={self.account}")
        if self.gpus:
            lines.append(f"#SBATCH --gpus-per-node={self.gpus}")
        return "\n".join(lines)


def render_slurm(job: SlurmJob) -> str:
    """Return the batch script text for ``job``; unknown templates or bad knobs raise ConfigError."""
    if job.template not in SLURM_TEMPLATES:
        raise ConfigError(f"unknown SLURM template {job.template!r}; choose one of {', '.join(SLURM_TEMPLATES)}")
    if job.preset not in PRESETS:
        raise ConfigError(f"unknown preset {job.preset!r}; choose one of {', '.join(PRESETS)}")
    if job.case not in CASES:
        raise ConfigError(f"unknown case {job.case!r}; choose one of {', '.join(CASES)}")
    for knob in ("nodes", "ntasks_per_node", "cpus_per_task"):
        if getattr(job, knob) < 1:
            raise ConfigError(f"--{knob.replace('_', '-')} must be >= 1, got {getattr(job, knob)}")
    if job.gpus < 0:
        raise ConfigError(f"--gpus must be >= 0, got {job.gpus}")
    if not SLURM_TIME.match(job.time):
        raise ConfigError(f"--time {job.time!r} is not a SLURM time; use minutes, HH:MM:SS or D-HH:MM:SS")
    for knob in ("partition", "account"):
        value = getattr(job, knob)
        if value is not None and not SLURM_NAME.match(value):
            raise ConfigError(f"--{knob} {value!r} is not a SLURM name (letters, digits, _ . + , -)")
    extra = _command_options(job)
    path = JOBS_DIR / "slurm" / f"{job.template}.sbatch"
    if not path.is_file():
        raise ConfigError(f"template {path} not found (install from a source checkout: pip install -e .)")
    name = f"ldensf-{job.template}-{job.case}-{job.preset}"
    quoted = {knob: shlex.quote(str(getattr(job, knob))) for knob in ("data", "runs", "workdir")}
    values = {**vars(job), **quoted, "extra": extra, "job_name": name, "output": f"{name}-%j.out",
              "optional_lines": job.optional_lines()}
    return string.Template(path.read_text()).substitute(values)


def _command_options(job: SlurmJob) -> str:
    """``--config`` and ``--set`` for the job's command, validated as that command would, shell-quoted."""
    from . import settings

    command = COMMANDS[job.template]
    if command is None:
        if job.config or job.overrides:
            raise ConfigError(f"the {job.template} template runs a benchmark script, which takes no --config "
                              "or --set; give its options in the rendered script")
        return ""
    config = None if job.config is None else str(Path(job.config).resolve())
    cfg = load_config(job.preset, case=job.case, overrides=job.overrides, path=config)
    methods = ("ensf",) if command == "assimilate" else ()  # the templates' default --filter and --model
    settings.check(cfg, job.overrides, command, methods, ("ldnet", "encoder") if command == "train" else ())
    options = ([] if config is None else ["--config", config]) + [a for o in job.overrides for a in ("--set", o)]
    return shlex.join(options)

"""Render the SLURM batch templates in ``jobs/slurm/`` into scripts a user can read and submit.

``ldensf jobs render slurm generate --nodes 4 --preset paper --out gen.sbatch``
fills the template's ``${...}`` knobs (``$$`` is a literal ``$``) from the CLI.
"""
from __future__ import annotations

import os
import string
from dataclasses import dataclass, field
from pathlib import Path

from .cases import CASES, PRESETS
from .errors import ConfigError

JOBS_DIR = Path(__file__).resolve().parents[1] / "jobs"
SLURM_TEMPLATES = ("generate", "generate_dask", "train", "assimilate", "timing", "scaling")


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
    extra: str = ""

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
    path = JOBS_DIR / "slurm" / f"{job.template}.sbatch"
    if not path.is_file():
        raise ConfigError(f"template {path} not found (install from a source checkout: pip install -e .)")
    name = f"ldensf-{job.template}-{job.case}-{job.preset}"
    values = {**vars(job), "job_name": name, "output": f"{name}-%j.out", "optional_lines": job.optional_lines()}
    return string.Template(path.read_text()).substitute(values)

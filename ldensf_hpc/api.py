"""The Python API: the objects the ``ldensf`` command runs, for notebooks and scripts.

    import ldensf_hpc as ld
    case = ld.Case.load("swe", preset="tiny")
    data = case.generate("runs/swe-tiny/data")                 # the CLI's generation (serial, Dask or MPI)
    models = case.train(data, "runs/swe-tiny/models")          # LDNet + LSTM encoder (resumable)
    result = ld.assimilate(case, "ld_ensf", data, models=models)
    result.record["summary"], result.to_xarray()               # scores; mean / spread / truth with coordinates

Every call checks its inputs as the command does (same loader, same errors) and returns
what the command writes; nothing here branches on a case or method name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .assimilation import Assimilation
from .assimilation import assimilate as _assimilate
from .cases import load_config
from .config import Config


@dataclass
class Case:
    """A case at a preset with overrides: its whole :class:`~ldensf_hpc.config.Config`."""

    cfg: Config

    @classmethod
    def load(cls, name: str | None = None, preset: str = "small", *, overrides=(), config=None) -> Case:
        """Case ``name`` (a registered case) at ``preset``, then the YAML file ``config``, then ``overrides``
        (``"section.field=value"`` strings, as ``--set``)."""
        return cls(load_config(preset, case=name, overrides=list(overrides), path=config))

    @property
    def name(self) -> str:
        return self.cfg.case

    def generate(self, out, *, backend: str = "serial", scheduler: str = "local", workers: int | None = None,
                 progress: bool = False) -> Path:
        """Generate (or finish) the dataset into ``out``; its directory (resumable, as ``ldensf generate``)."""
        from .data.generate import generate

        generate(self.cfg, out, scheduler=scheduler, workers=workers, backend=backend, progress=progress)
        return Path(out)

    def train(self, data, out, models=("ldnet", "encoder"), *, progress: bool = False) -> Path:
        """Train (or resume, or reuse) ``models`` and what they need on ``data`` into ``out``; the checkpoint
        directory. The summaries (train/validation/test errors) are ``out/<model>.json``."""
        from .surrogate import train

        train(self.cfg, data, out, list(models), progress=progress)
        return Path(out)


def assimilate(case: Case, method: str, data, *, models=None, backend: str = "serial") -> Assimilation | None:
    """Run ``method`` (a registered method) on the first test trajectory of ``data`` with the
    observations of ``case.cfg.observe``; the :class:`~ldensf_hpc.assimilation.Assimilation`
    (rank 0; None on the other ranks of ``backend="mpi"``)."""
    return _assimilate(case.cfg, data, method, backend, models)


__all__ = ["Assimilation", "Case", "assimilate"]

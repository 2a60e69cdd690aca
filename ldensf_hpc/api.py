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
from .cases import ModelCase, load_config
from .config import Config
from .data.store import made_with


@dataclass
class ImportSummary:
    """What ``ldensf import`` wrote: the store's summary and the layout found in the source."""

    store: object
    layout: object

    def describe(self) -> str:
        layout = self.layout
        text = (f"{self.store.describe()}\n  fields {', '.join(layout.fields)} over ({layout.y}, {layout.x}); parameters "
                f"{', '.join(layout.param_names)}")
        return text + (f"; not imported: {', '.join(layout.ignored)}" if layout.ignored else "")


@dataclass
class Case:
    """A case at a preset with overrides: its whole :class:`~ldensf_hpc.config.Config`
    (and, for :meth:`from_dataset`, the summary of the import)."""

    cfg: Config
    imported: object = None

    @classmethod
    def load(cls, name: str | None = None, preset: str = "small", *, overrides=(), config=None, data=None) -> Case:
        """Case ``name`` (a registered case, or ``"package.module:Class"`` of your own) at ``preset``, then the
        YAML file ``config``, then ``overrides`` (``"section.field=value"`` strings, as ``--set``). With
        ``data`` (a dataset directory) and no ``name``, the dataset's case and solver settings."""
        return cls(load_config(preset, case=name, overrides=list(overrides), path=config, dataset=made_with(data)))

    @classmethod
    def from_dataset(cls, source, out, *, preset: str = "small", trajectory: str = "trajectory", fields=None,
                     params=None, periodic: bool = False, shard_size: int = 4) -> Case:
        """Import ``source`` (a NetCDF/HDF5 file, a Zarr directory or an ``xarray.Dataset``) into the dataset
        directory ``out`` (as ``ldensf import``; :mod:`ldensf_hpc.data.importer`) and return its case
        at ``preset``; ``case.imported`` says what was written."""
        from .data.importer import import_dataset

        summary, cfg, layout = import_dataset(source, out, preset=preset, trajectory=trajectory, fields=fields,
                                              params=params, periodic=periodic, shard_size=shard_size)
        return cls(cfg, imported=ImportSummary(summary, layout))

    @property
    def name(self) -> str:
        return self.cfg.case

    def generate(self, out, *, backend: str = "serial", scheduler: str = "local", workers: int | None = None,
                 progress: bool = False):
        """Generate (or finish) the dataset into ``out`` (resumable, as ``ldensf generate``); its
        :class:`~ldensf_hpc.data.generate.Summary`, which stands for the directory (``os.PathLike``)."""
        from .data.generate import generate

        return generate(self.cfg, out, scheduler=scheduler, workers=workers, backend=backend, progress=progress)

    def train(self, data, out, models=("ldnet", "encoder"), *, progress: bool = False) -> Trained:
        """Train (or resume, or reuse) ``models`` and what they need on ``data`` into ``out``; the
        checkpoint directory with the summaries (train/validation/test errors, also ``out/<model>.json``)."""
        from .surrogate import train

        return Trained(Path(out), train(self.cfg, data, out, list(models), progress=progress))

    def run(self, workdir=None, *, methods=None, levels=None, data=None, backend: str = "dask",
            progress: bool = False, command: str | None = None) -> dict:
        """The whole pipeline (``ldensf run``): generate (or use ``data``), train what the ``methods`` need,
        compare them at the noise ``levels``; the report (also ``WORKDIR/report.json``, ``report.md``, plots)."""
        from .pipeline import DEFAULT_METHODS, run

        return run(self.cfg, workdir, methods=DEFAULT_METHODS if methods is None else methods, levels=levels, generate_backend=backend,
                   progress=progress, command=command, data=data)


@dataclass
class Trained:
    """Trained surrogates: their checkpoint directory (``os.PathLike``) and ``{name: summary}``."""

    out: Path
    summaries: dict

    def __fspath__(self) -> str:
        return str(self.out)

    __str__ = __fspath__


def assimilate(case: Case, method: str, data, *, models=None, backend: str = "serial", observations=None,
               trajectory: int | None = None) -> Assimilation | None:
    """Run ``method`` (a registered method) on trajectory ``trajectory`` of ``data`` (default: the first
    test trajectory) with the observations of ``case.cfg.observe``, or the readings of the sensor log
    ``observations`` (CSV, NetCDF or Zarr; :mod:`ldensf_hpc.sensor_log`); the
    :class:`~ldensf_hpc.assimilation.Assimilation` (rank 0; None on the other ranks of ``backend="mpi"``)."""
    return _assimilate(case.cfg, data, method, backend, models, observations, trajectory)


__all__ = ["Assimilation", "Case", "ImportSummary", "ModelCase", "Trained", "assimilate"]

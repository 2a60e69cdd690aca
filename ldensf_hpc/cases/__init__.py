"""The case registry: one module per physical test case, and the presets that configure it.

A case (:class:`Case`) declares everything that differs between test problems: its
model and the model's config section, the geometry of its grid (periodic or walled,
where grid point ``j`` sits), its stored-frame schedule, units, and what a report
plots. Everything else asks the registry: ``cases.get(cfg.case).model(cfg)``.

Presets: ``presets/<preset>.yaml`` holds the case-independent settings and
``presets/<case>/<preset>.yaml`` the case's own (its solver section, observation
layout and surrogate sizes); :func:`load_config` merges preset, case preset, a YAML
file and ``--set`` overrides, in that order. A new case is one module here, one
line in :data:`CASES` and its preset files.

A case of the user's own, outside the package, is a :class:`ModelCase` subclass (its model,
section and presets) named by its import path, ``--case package.module:Class``, or by
an entry point of the group ``ldensf_hpc.cases``. In a YAML file and in ``--set`` the
section ``model`` stands for the case's own section (``--set model.n=64``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np
import yaml

from ..config import SECTIONS, Config, build_config, merge, parse_override
from ..errors import ConfigError
from ..models import FrameSchedule
from ..observe import ObservationOperator, grid_operator
from ..registry import Registry

CASES = Registry("case", {
    "swe": "ldensf_hpc.cases.swe:SWE",
    "kolmogorov": "ldensf_hpc.cases.kolmogorov:Kolmogorov",
    "atmosphere": "ldensf_hpc.cases.atmosphere:Atmosphere",
    "imported": "ldensf_hpc.cases.imported:Imported",
}, group="ldensf_hpc.cases", importable=True,
    accept=lambda obj: None if isinstance(obj, type) and issubclass(obj, Case) and not getattr(obj, "__abstractmethods__", None)
    else "is not a complete subclass of ldensf_hpc.cases.Case (see ModelCase)")
PRESETS = ("tiny", "small", "medium", "paper")
DEFAULT_CASE = "swe"


@dataclass(frozen=True)
class Plotting:
    """What a report draws of a case: one field's maps and its colour-bar label."""

    field: int = 0
    label: str = ""


class Case(ABC):
    """A test case; subclasses fill the class attributes and :meth:`schedule`."""

    name: ClassVar[str]
    label: ClassVar[str]
    model_class: ClassVar[type]  # the truth solver, built from the config section
    config_class: ClassVar[type]  # its dataclass section (``cfg.model``)
    periodic: ClassVar[bool]  # the domain wraps around (distances, sensor layouts)
    grid_offset: ClassVar[float]  # grid point j sits at (j + offset) dx
    geometry: ClassVar[str] = "plane"  # of ldensf_hpc.geometry: distances, point features, cell areas
    plotting: ClassVar[Plotting] = Plotting()

    @abstractmethod
    def schedule(self, section) -> FrameSchedule:
        """Stored frames of one trajectory for the config section."""

    @abstractmethod
    def units(self, model) -> dict:
        """``{quantity: unit}`` of the fields, parameters, coordinates and time."""

    def model(self, cfg: Config):
        """The truth solver of ``cfg``; a section the model rejects raises ConfigError."""
        try:
            return self.model_class(cfg.model)
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"{self.name}: {exc}") from None

    def coordinates(self, model, ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
        """Physical grid coordinates ``x (nx,)``, ``y (ny,)``."""
        dx = model.grid["dx"]
        return (np.arange(nx) + self.grid_offset) * dx, (np.arange(ny) + self.grid_offset) * dx

    def observation_operator(self, cfg: Config, shape) -> ObservationOperator:
        """The sparse sensor grid of ``cfg.observe`` (every ``stride``-th point of every field)."""
        return grid_operator(shape, cfg.observe.stride, periodic=self.periodic, geometry=self.geometry)

    def preset(self, preset: str) -> dict:
        """The case's own settings at ``preset`` (``presets/<case>/<preset>.yaml``); ConfigError if it has none."""
        return _read_preset(preset, self.name)

    def forecast_steps(self, cfg: Config) -> int:
        """Solver steps from the first to the last stored frame."""
        s = self.schedule(cfg.model)
        return (s.n_frames - 1) * s.steps_per_frame


class ModelCase(Case):
    """A case around any model of the protocol of :mod:`ldensf_hpc.models` (e.g. the user's own).

    Subclasses set ``model_class`` (built from its section) and ``config_class``
    (a dataclass with ``n_frames``, ``steps_per_frame`` and optionally ``warmup_frames``), and
    may set ``presets`` (``{preset: {section: {field: value}}}``, the section ``model`` being
    the case's own), ``periodic``, ``grid_offset`` and ``plotting``. The model's ``grid`` holds
    ``dx``; its ``units`` (a dict, optional) names the units of fields, parameters, x, y and time.
    """

    label: ClassVar[str] = ""
    periodic: ClassVar[bool] = False
    grid_offset: ClassVar[float] = 0.0
    presets: ClassVar[dict] = {}

    def schedule(self, section) -> FrameSchedule:
        """``warmup_frames`` frames dropped (default 0), then ``n_frames`` kept ``steps_per_frame`` steps apart."""
        warmup = getattr(section, "warmup_frames", 0)
        if section.steps_per_frame < 1 or section.n_frames < 2 or warmup < 0:
            raise ConfigError(f"{self.name}: steps_per_frame must be >= 1, n_frames >= 2 and warmup_frames >= 0")
        return FrameSchedule(warmup * section.steps_per_frame, section.steps_per_frame, section.n_frames)

    def units(self, model) -> dict:
        quantities = (*model.field_names, *model.param_names, "x", "y", "time")
        return {q: getattr(model, "units", {}).get(q, "1") for q in quantities}

    def preset(self, preset: str) -> dict:
        values = dict(self.presets.get(preset, {}))
        if "model" in values:
            values[self.name] = values.pop("model")
        return values


def get(name: str) -> Case:
    """The registered case ``name`` (an instance, named as registered: an import path or an entry point's name)."""
    case = CASES[name]()
    case.name = name
    return case


def _read_preset(preset: str, case: str | None = None) -> dict:
    folder = resources.files("ldensf_hpc.presets")
    if case is not None:
        folder = folder.joinpath(case)
        if not folder.joinpath(f"{preset}.yaml").is_file():
            have = [p for p in PRESETS if folder.joinpath(f"{p}.yaml").is_file()]
            raise ConfigError(f"case {case} has no preset {preset!r}; choose one of {', '.join(have)}")
    text = folder.joinpath(f"{preset}.yaml").read_text()
    return yaml.safe_load(text) or {}


def _read_file(path) -> dict:
    try:
        values = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got a {type(values).__name__}")
    return values


COMPUTE_KEYS = ("backend", "workers")
"""Solver settings that say how data is computed, not what it is (a dataset does not fix them)."""


def load_config(preset: str = "small", case: str | None = None, overrides=(), path: str | Path | None = None,
                dataset: dict | None = None) -> Config:
    """The config of ``case`` at ``preset``, then the YAML file ``path``, then ``overrides`` (``key.sub=value``).

    The case is ``case`` if given, else a ``case:`` of the file or overrides, else the case of
    ``dataset`` (the generation config of a dataset's manifest), else :data:`DEFAULT_CASE`; a file
    or override naming another case than ``case`` is refused. A dataset of that case supplies its
    solver section (below the file and the overrides): a command on a dataset reads what it is.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    extra = _read_file(path) if path is not None else {}
    for text in overrides:
        extra = merge(extra, parse_override(text))
    named = extra.pop("case", None)
    if case is not None and named is not None and named != case:
        raise ConfigError(f"case {named!r} in the config file or --set contradicts --case {case}; give one of them")
    case = CASES.check(case or named or (dataset or {}).get("case") or DEFAULT_CASE)
    if "model" in extra:  # the case's own section, whatever its name
        extra = merge({k: v for k, v in extra.items() if k != "model"}, {case: extra["model"]})
    values = merge(_read_preset(preset), get(case).preset(preset))
    if dataset is not None and dataset.get("case") == case:
        made = {k: v for k, v in dataset.get(case, {}).items() if k not in COMPUTE_KEYS}
        values = merge(values, {case: made})
    values = merge(values, extra)
    foreign = sorted(k for k in values if k in CASES and k != case)
    if foreign:
        raise ConfigError(f"settings for case {foreign[0]!r} were given, but the case is {case!r}; "
                          f"use {case}.* keys (or --case {foreign[0]})")
    unknown = sorted(k for k in values if k not in (*SECTIONS, case, "preset"))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; known: {sorted((*SECTIONS, case))}")
    values.update(case=case, preset=preset)
    return build_config(values, get(case).config_class)


def config_from_dict(values: dict) -> Config:
    """Rebuild a :class:`Config` from :meth:`Config.to_dict` output (e.g. HDF5 attributes)."""
    return build_config(values, get(CASES.check(values.get("case"))).config_class)

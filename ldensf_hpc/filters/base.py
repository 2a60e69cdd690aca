"""The method interface: what every data-assimilation method takes and returns (DAPPER-style).

A method is a registered class (:data:`ldensf_hpc.filters.METHODS`) with one entry point,
``method.assimilate(problem, observations, seed) -> MethodRun``, for filters and
smoothers alike, and class attributes that declare what the report's tables show:

- ``name``, ``label``: registry key and display name;
- ``capabilities``: a :class:`Capabilities` (booleans only);
- ``space``, ``dynamics``: where the analysis happens and what propagates the ensemble;
- :meth:`Method.surrogates`: the trained networks it needs (``()`` for full-space methods).

A :class:`Problem` is everything a method may use: the model, the prior ensemble, the
observation operators and times, the grid, the surrogates, validation trajectories for
calibrating latent observation errors, and the MPI sharding of the members. It holds no
truth: a method never sees what it is scored against. The observations of one noise
level are an :class:`ObservationSet`; the result is a :class:`MethodRun` of physical
fields at every observation time, scored by the application (``ldensf_hpc.experiment``).
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..backend import array_module, rng_for, to_numpy
from ..errors import DataError, InputError
from ..models import Standardized
from ..observe import ObservationOperator, observe
from ..parallel.mpi import Sharding


@dataclass(frozen=True, eq=False)
class Observation:
    """One observation time: operator ``H``, observed vector ``y`` ``(m,)`` and noise std ``(m,)``.

    The noise is Gaussian and independent, ``R = diag(std^2)``.
    """

    operator: ObservationOperator
    y: object
    std: object

    def __post_init__(self):
        y = self.y if hasattr(self.y, "dtype") else np.asarray(self.y, dtype=float)
        xp = array_module(y)
        if not np.issubdtype(y.dtype, np.floating):
            y = y.astype(float)
        std = xp.asarray(self.std, dtype=y.dtype)
        m = self.operator.m
        if y.shape != (m,):
            raise InputError(f"observation vector has shape {y.shape}, operator observes ({m},)")
        if std.shape == ():
            std = xp.full(m, float(std), dtype=y.dtype)
        if std.shape != (m,):
            raise InputError(f"observation noise std has shape {std.shape}, expected ({m},)")
        if not bool(xp.all(xp.isfinite(y))):
            raise InputError("observation vector contains NaN or Inf")
        if not bool(xp.all(std > 0)) or not bool(xp.all(xp.isfinite(std))):
            raise InputError("observation noise std must be finite and > 0 (zero noise has no likelihood score)")
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "std", std)

    @property
    def inv_var(self):
        """``diag(R^-1)``, ``(m,)``."""
        return 1.0 / self.std**2

    def likelihood_score(self, x):
        """``grad_x log p(y | x) = H^T R^-1 (y - H x)`` for states ``(K, d)``."""
        return self.operator.adjoint((self.y - self.operator.apply(x)) * self.inv_var)


@dataclass(frozen=True)
class Capabilities:
    """What a method can take (the report's capability table; every field a boolean)."""

    parameters: bool = field(metadata={"doc": "estimates the model parameters jointly with the state"})
    irregular_times: bool = field(metadata={"doc": "takes observations at any time, not only on the latent steps"})
    moving_sensors: bool = field(metadata={"doc": "takes sensor positions that change from one time to the next"})
    smoother: bool = field(metadata={"doc": "analyses a window of times at once (uses later observations)"})
    member_sharding: bool = field(metadata={"doc": "shards its members over MPI ranks (--backend mpi)"})


CAPABILITY_DOCS = {f.name: f.metadata["doc"] for f in dataclasses.fields(Capabilities)}
"""One line per capability, for the report."""


def check_inputs(forecast, obs: Observation) -> None:
    """Raise :class:`InputError` unless ``forecast`` is a finite ``(K >= 2, d)`` ensemble for ``obs``."""
    xp = array_module(forecast)
    if forecast.ndim != 2:
        raise InputError(f"forecast ensemble must be (K, d), got shape {forecast.shape}")
    K, d = forecast.shape
    if K < 2:
        raise InputError(f"an ensemble needs at least 2 members, got K = {K}")
    if d != obs.operator.d:
        raise InputError(f"forecast members have {d} components, observation operator expects {obs.operator.d}")
    if array_module(obs.y) is not xp:
        raise InputError("forecast and observation live on different array backends")
    if not bool(xp.all(xp.isfinite(forecast))):
        raise InputError("forecast ensemble contains NaN or Inf")


@dataclass
class ObservationSet:
    """The observations of one noise level, per observation time, in physical units.

    ``std`` is the true noise std, ``assumed`` what the methods take it to be (the true std,
    floored at ``observe.noise_floor`` times the field std: noise 0 has no likelihood).
    """

    level: float
    y: list  # T vectors (m_t,)
    std: list  # T arrays (m_t,)
    assumed: list  # T arrays (m_t,)


@dataclass(frozen=True)
class Trajectory:
    """A stored trajectory at the observation times: fields ``(T, F, ny, nx)`` and parameters ``(p,)``."""

    index: int
    frames: np.ndarray
    params: np.ndarray


FIELDS = ("members", "moments", "mean")
"""What a :class:`Problem` asks methods to return of the full fields (see ``Problem.fields``)."""

OBS_STREAM, PRIOR_STREAM, FILTER_STREAM = 11, 12, 13
"""Random streams ``rng_for(seed, STREAM, ...)`` of the observations, the prior and the methods."""


@dataclass
class Problem:
    """Everything a method may use to assimilate observations of one trajectory (no truth).

    Attributes
    ----------
    cfg : the run's config (method sections, ``observe``, ``ensf``).
    model : the truth solver (physical units); ``filter_model`` is it on standardised fields.
    field_mean, field_std : ``(F,)`` train-split statistics: filter units and the noise scale.
    start, prior_params : this rank's members of the prior ensemble at the first observation
        time (solver state) and their parameters ``(K_local, p)``.
    frames : ``(T,)`` stored-frame index of each observation time; ``times`` their model times.
    gaps : ``(T - 1,)`` solver steps between consecutive observation times.
    operators : ``T`` observation operators (one per time: moving sensors allowed).
    x, y : physical grid coordinates ``(nx,)``, ``(ny,)``.
    seed : seeds the observation noise (:meth:`observe`) and the methods.
    surrogates : ``name -> trained network`` (raises DataError naming what to train).
    validation : ``n -> list of Trajectory`` (``None``: all) of held-out validation
        trajectories for calibrating latent observation errors; None if there are none.
    sharding : how the ``K`` members are split over MPI ranks (one process by default).
    fields : what results hold of the full fields at every observation time (:data:`FIELDS`):
        ``members`` every member; ``moments`` their mean and std only (less memory); ``mean``
        the mean only, which latent methods reconstruct from the mean latent state (one
        reconstruction per time, the paper's T_r; R of the mean is not the mean of R).
    """

    cfg: object
    model: object
    field_mean: np.ndarray
    field_std: np.ndarray
    start: object
    prior_params: np.ndarray
    frames: np.ndarray
    times: np.ndarray
    gaps: np.ndarray
    operators: list
    x: np.ndarray
    y: np.ndarray
    seed: int = 0
    surrogates: Callable[[str], object] | None = None
    validation: Callable[[int | None], list] | None = None
    sharding: Sharding = None
    fields: str = "members"
    filter_model: Standardized = field(init=False, repr=False)

    def __post_init__(self):
        self.field_mean = np.asarray(self.field_mean, np.float64)
        self.field_std = np.asarray(self.field_std, np.float64)
        self.filter_model = Standardized(self.model, self.field_mean, self.field_std)
        if self.sharding is None:
            self.sharding = Sharding(len(self.prior_params))
        if self.fields not in FIELDS:
            raise InputError(f"fields must be one of {', '.join(FIELDS)}, got {self.fields!r}")
        if len(self.operators) != len(self.frames) or len(self.gaps) != len(self.frames) - 1:
            raise InputError(f"{len(self.frames)} observation times need as many operators and one gap fewer, "
                             f"got {len(self.operators)} and {len(self.gaps)}")

    @property
    def T(self) -> int:
        return len(self.frames)

    @property
    def keep_members(self) -> bool:
        return self.fields == "members"

    @property
    def K(self) -> int:
        return self.sharding.K

    @property
    def field_shape(self) -> tuple[int, int, int]:
        return self.operators[0].shape

    def surrogate(self, name: str):
        """The trained network ``name`` (e.g. ``"ldnet"``)."""
        if self.surrogates is None:
            raise DataError(f"this problem has no surrogates; `{name}` is needed")
        return self.surrogates(name)

    def validation_trajectories(self, n: int | None = None) -> list[Trajectory]:
        """Up to ``n`` validation trajectories (all by default)."""
        if self.validation is None:
            raise DataError("this problem has no validation trajectories to calibrate latent observation errors; "
                            "give the method's latent_std")
        return self.validation(n)

    def observe(self, frames, level: float, key: int, operators=None) -> ObservationSet:
        """Noisy observations of physical ``frames (T, F, ny, nx)`` at noise ``level`` (of each field's std).

        Observation ``t`` of trajectory ``key`` draws its noise from ``rng_for(seed, OBS_STREAM, key, t)``.
        """
        floor = self.cfg.observe.noise_floor
        if not floor > 0:
            raise InputError(f"observe.noise_floor must be > 0, got {floor}")
        if not (np.isfinite(level) and level >= 0):
            raise InputError(f"noise level must be a finite fraction >= 0, got {level}")
        operators = self.operators if operators is None else operators
        y, std, assumed = [], [], []
        for t, (frame, op) in enumerate(zip(frames, operators, strict=True)):
            scale = self.field_std[op.field]
            std.append(level * scale)
            assumed.append(max(level, floor) * scale)
            y.append(observe(op, np.asarray(frame, np.float64), std[-1], rng_for(self.seed, OBS_STREAM, key, t)))
        return ObservationSet(float(level), y, std, assumed)

    def standardized(self, obs: ObservationSet, first: int = 0) -> list[Observation]:
        """The observations from time ``first`` on, of standardised fields with the assumed std."""
        out = []
        for op, y, std in zip(self.operators[first:], obs.y[first:], obs.assumed[first:]):
            f = op.field
            out.append(Observation(op, (y - self.field_mean[f]) / self.field_std[f], std / self.field_std[f]))
        return out

    def unstandardize(self, fields):
        """Physical fields from standardised ``(..., F, ny, nx)`` fields."""
        return fields * self.field_std[:, None, None] + self.field_mean[:, None, None]


@dataclass
class MethodRun:
    """What a method returns: the ensemble at every observation time, in physical units.

    ``mean`` and ``std`` (member std, ddof 1; None when the problem asks for the mean only) are
    ``(T, F, ny, nx)``; ``members`` ``(T, K, F, ny, nx)`` when the problem keeps them; ``params`` ``(T, K, p)`` physical
    parameters when the method estimates them; ``fields`` more ``(T, F, ny, nx)`` field
    trajectories scored against the truth (e.g. ``forecast``, ``background``).
    """

    mean: np.ndarray
    std: np.ndarray | None
    members: np.ndarray | None
    params: np.ndarray | None
    timings: dict
    extra: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)

    @classmethod
    def of_members(cls, members, keep: bool, **kwargs) -> MethodRun:
        """From members ``(T, K, ...)`` (kept when ``keep``)."""
        members = np.asarray(members)
        return cls(members.mean(axis=1), members.std(axis=1, ddof=1), members if keep else None, **kwargs)


class EnsembleSeries:
    """Ensembles ``(K, ...)`` added one time after another: kept whole, or as mean and std only."""

    def __init__(self, keep_members: bool):
        self.keep = keep_members
        self._members, self._mean, self._std = [], [], []

    def add(self, ensemble) -> None:
        ensemble = to_numpy(ensemble)
        if self.keep:
            self._members.append(ensemble.astype(np.float32))
        self._mean.append(ensemble.mean(axis=0))
        self._std.append(ensemble.std(axis=0, ddof=1))

    @property
    def members(self) -> np.ndarray | None:
        return np.asarray(self._members) if self.keep else None

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self._mean)

    @property
    def std(self) -> np.ndarray:
        return np.asarray(self._std)


FULL_SOLVER = "full solver"
"""The :attr:`Method.dynamics` of methods that step the case's solver (skipped on data without one)."""


class Method(ABC):
    """Base class of the registered methods (see the module docstring).

    Subclasses are dataclasses of their settings with ``from_config(cfg)`` and
    ``assimilate(problem, observations, seed)``.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    space: ClassVar[str]
    dynamics: ClassVar[str]
    settings_read: ClassVar[tuple[str, ...]] = ()
    """Config keys ``from_config`` reads (``section`` or ``section.field``): ``--set`` of any other
    method setting is refused for a command that runs only this method (``ldensf_hpc.settings``)."""

    @classmethod
    def from_config(cls, cfg) -> Method:
        return cls()

    def surrogates(self, cfg) -> tuple[str, ...]:
        """The trained networks this method needs with ``cfg`` (checkpoint names, in training order)."""
        return ()

    def state_dim(self, problem: Problem) -> int:
        """Dimension of the state the analysis works on."""
        return int(np.prod(problem.field_shape))

    def unsupported(self, cfg) -> str | None:
        """Why this method cannot run with ``cfg``'s observation setting, or None."""
        caps = self.capabilities
        if cfg.observe.irregular and not caps.irregular_times:
            return "takes observations on the latent step grid only (observe.irregular)"
        if cfg.observe.sensors == "moving" and not caps.moving_sensors:
            return "needs the same sensors at every time (observe.sensors=moving)"
        return None

    @abstractmethod
    def assimilate(self, problem: Problem, observations: ObservationSet, seed: int = 0) -> MethodRun:
        """Assimilate ``observations`` into ``problem``'s prior ensemble."""

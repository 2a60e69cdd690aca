"""Ensemble score filter (EnSF) in the full state space (LD-EnSF paper eqs. 6-12, Algorithm 1).

The analysis ensemble is drawn by integrating the reverse-time SDE (eq. 9) from
N(0, I) at pseudo-time tau = 1 down to tau = 0 with Euler-Maruyama, using the
score (eq. 10)

    score(x, tau) = prior_score(x, tau) + h(tau) H^T R^-1 (y - H x),   h(tau) = 1 - tau,

where the prior score (eq. 11-12) is a Monte Carlo estimate over the forecast
ensemble ``x_k``. The reverse SDE is the one of :mod:`ldensf_hpc.kernels` (the same
code as the latent filters'): for the selection operators of :mod:`ldensf_hpc.observe`
the likelihood score is ``inv_var (y - x)`` component-wise with ``inv_var = 0`` where
nothing is observed. Schedule, drift, diffusion and the stability rule come from
:mod:`ldensf_hpc.sde`.

Accuracy: EnSF with the h(tau) = 1 - tau damping is not an exact Bayesian
update. On a linear-Gaussian problem it is biased by a few tenths of a posterior
standard deviation in the mean and by -30 % ... +20 % in the variance of observed
components, whatever K or the step count (measured figures in :class:`EnSF`).
With the mixture score the prior at tau -> 0 is the forecast ensemble itself, so
the analysis is essentially a re-weighting of the members: it needs K large
compared to the effective dimension (on Lorenz-96 with K = 20 it loses track).

Precision: the mixture logits grow like ``|x|^2 / beta2``; run in float64 and keep
the state O(1) (normalised fields). The explicit Euler step of the likelihood term
is stable for ``dt max(g2 h) / std^2 < 2``; with 100 steps and eps_alpha = 0.01
(max g2 h = 1.74) that is ``std > 0.09`` in state units (0.08 blows up): the assumed
observation std is floored at 1.1 times that (:meth:`~ldensf_hpc.sde.Schedule.floor_std`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import kernels
from ..backend import array_module
from ..errors import ConfigError
from ..sde import Schedule, schedule
from .base import FULL_SOLVER, Capabilities, Observation, check_inputs
from .cycle import SequentialFilter

PRECISIONS = ("float32", "float64")
"""Storage precisions of the full-space EnSF analysis."""


@dataclass
class ScoreSettings:
    """The reverse SDE and score shared by the score filters (EnSF, Latent-EnSF, LD-EnSF).

    n_steps : Euler-Maruyama steps in pseudo-time (paper: 100).
    eps_alpha, eps_beta : schedule constants (:func:`~ldensf_hpc.sde.schedule`).
    mixture : mixture prior score over all members (default) or member-paired.
    score_clip : clip the total score to [-clip, clip] (None: no clipping).
    kernel : backend of :func:`ldensf_hpc.kernels.ensf_update` (reference, numba, cuda).
    """

    n_steps: int = 100
    eps_alpha: float = 0.01
    eps_beta: float = 0.0
    mixture: bool = True
    score_clip: float | None = None
    kernel: str = "reference"

    def __post_init__(self):
        try:
            self.sde: Schedule = schedule(self.n_steps, self.eps_alpha, self.eps_beta)
        except ValueError as exc:
            raise ConfigError(f"{type(self).__name__}: {exc}") from None
        if self.score_clip is not None and not self.score_clip > 0:
            raise ConfigError(f"{type(self).__name__}: score_clip must be positive or None, got {self.score_clip}")
        kernels.BACKENDS.check(self.kernel)

    @staticmethod
    def settings(cfg, kernel: str, eps_alpha: float | None = None, n_steps: int | None = None) -> dict:
        """The ``ensf`` section of ``cfg`` as keyword arguments (``eps_alpha``, ``n_steps``: a method's own)."""
        e = cfg.ensf
        return {"n_steps": e.n_steps if n_steps is None else n_steps, "eps_alpha": e.eps_alpha if eps_alpha is None else eps_alpha,
                "eps_beta": e.eps_beta, "mixture": e.mixture, "score_clip": e.score_clip, "kernel": kernel}

    def update(self, prior, obs, rows=None, *, obs_std=None, inv_var=None, seed: int):
        """The analysis samples of ``rows`` (:func:`ldensf_hpc.kernels.ensf_update` with these settings)."""
        return kernels.ensf_update(prior, obs, obs_std, inv_var=inv_var, rows=rows, n_steps=self.n_steps,
                                   eps_alpha=self.eps_alpha, eps_beta=self.eps_beta, mixture=self.mixture,
                                   score_clip=self.score_clip, seed=seed, backend=self.kernel)


@dataclass
class EnSF(ScoreSettings, SequentialFilter):
    """Full-space ensemble score filter (Algorithm 1) on standardised fields.

    Measured against the Kalman posterior (``tests/test_ensf.py`` problem: d = 4,
    components 0 and 1 observed with std 0.5, K = 2000, 100 steps, eps_alpha = 0.01,
    8 random priors): mean bias 0.0-0.66 posterior std in 7 problems and 1.1 in the
    eighth (posterior variance 7 % of the prior); variance / Kalman 0.76-1.19 on
    observed and 0.89-1.43 on unobserved components. 400 steps or K = 500 ... 6000
    change these by Monte Carlo noise only. Lorenz-96 (40 variables all observed,
    unit noise, every 0.05, K = 20): time-averaged analysis RMSE 3.8-4.2, no better
    than the free run (3.65); member-paired 3.4; LETKF 0.18 on the same setup.
    """

    kernel: str = "blas"
    precision: str = "float32"

    name: ClassVar[str] = "ensf"
    settings_read: ClassVar[tuple[str, ...]] = ("ensf.n_steps", "ensf.eps_alpha", "ensf.eps_beta", "ensf.mixture",
                                                "ensf.score_clip", "ensf.full_space_kernel", "ensf.full_space_precision")
    label: ClassVar[str] = "EnSF"
    capabilities: ClassVar[Capabilities] = Capabilities(parameters=False, irregular_times=True,
                                                        moving_sensors=True, smoother=False, member_sharding=True)
    space: ClassVar[str] = "full state"
    dynamics: ClassVar[str] = FULL_SOLVER

    def __post_init__(self):
        super().__post_init__()
        if self.precision not in PRECISIONS:
            raise ConfigError(f"EnSF: precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @classmethod
    def from_config(cls, cfg) -> EnSF:
        return cls(**cls.settings(cfg, cfg.ensf.full_space_kernel), precision=cfg.ensf.full_space_precision)

    def assumed_std(self, std: np.ndarray) -> np.ndarray:
        return self.sde.floor_std(std)

    def analyse(self, forecast, obs: Observation, rng: np.random.Generator, rows: slice | None = None):
        """Analysis samples ``(J, d)`` of members ``rows`` (default all) from the forecast ``(K, d)``."""
        check_inputs(forecast, obs)
        xp = array_module(forecast)
        d = forecast.shape[1]
        index = xp.asarray(obs.operator.index)
        y, inv_var = xp.zeros(d), xp.zeros(d)
        y[index], inv_var[index] = obs.y, obs.inv_var
        analysis = self.update(forecast.astype(self.precision, copy=False), y, rows, inv_var=inv_var,
                               seed=int(rng.integers(0, 2**63)))
        return xp.asarray(analysis, dtype=forecast.dtype)

"""Small shared test problems with known answers, and the twin experiment of the filter tests."""
from dataclasses import dataclass

import numpy as np

from ldensf_hpc.backend import rng_for
from ldensf_hpc.filters.base import Observation
from ldensf_hpc.filters.cycle import Cycles, cycle
from ldensf_hpc.observe import ObservationOperator, observe

K_LARGE = 2000
ROUND_OFF = {"float64": 1e-12, "float32": 1e-6}
"""Tolerated differences between rank counts, relative to the largest value: the blocked GEMMs of the
full-space EnSF (its default precision float32) round differently for other blocks of members (how a BLAS
rounds a block depends on its kernel: OpenBLAS's Haswell kernels differ, its AVX-512 ones did not here)."""


def linear_gaussian(obs_std, seed=0, K=K_LARGE):
    """d = 4 Gaussian prior sample, components 0 and 1 observed, and the exact Kalman posterior."""
    rng = np.random.default_rng(seed)
    d = 4
    A = rng.standard_normal((d, d))
    P = A @ A.T / d + 0.5 * np.eye(d)
    mu = rng.standard_normal(d)
    forecast = rng.multivariate_normal(mu, P, size=K)
    op = ObservationOperator("grid", (d,), np.array([0, 1]))
    H, R = np.eye(d)[:2], obs_std**2 * np.eye(2)
    y = H @ rng.multivariate_normal(mu, P) + obs_std * rng.standard_normal(2)
    gain = P @ H.T @ np.linalg.inv(H @ P @ H.T + R)
    post_mean, post_cov = mu + gain @ (y - H @ mu), (np.eye(d) - gain @ H) @ P
    return forecast, Observation(op, y, np.full(2, obs_std)), post_mean, post_cov


class StaticModel:
    """``x`` unchanged by a step (a filter's analysis then equals its Kalman-type update): state ``(K, d)``."""

    name, field_names, param_names, dt = "static", ("x",), (), 1.0

    def step(self, state, params=None, n_steps=1):
        return state

    def to_fields(self, state):
        return state

    def from_fields(self, fields):
        return fields


@dataclass
class Twin:
    """A twin experiment's cycles and the errors of their ensemble means against the truth, per cycle."""

    cycles: Cycles
    forecast_rmse: np.ndarray
    analysis_rmse: np.ndarray

    @property
    def analysis_mean(self):
        return self.cycles.analysis.mean

    @property
    def forecast_mean(self):
        return self.cycles.forecast.mean


def twin(model, filt, ensemble, truth, operator, std, steps, *, seed=0, observations=None, keep_members=False):
    """Cycle ``filt`` along ``truth (n + 1, ...)``: observation ``c`` of ``truth[c + 1]`` with noise from
    ``rng_for(seed, 0, c)`` (or the given ``observations``), by one operator or one per cycle."""
    n = len(truth) - 1
    operators = list(operator) if isinstance(operator, (list, tuple)) else [operator] * n
    stds = list(std) if isinstance(operator, (list, tuple)) else [std] * n
    obs = []
    for c, (op, sd) in enumerate(zip(operators, stds)):
        y = observations[c] if observations is not None else \
            observe(op, np.asarray(truth[c + 1], float).reshape(-1), sd, rng_for(seed, 0, c))
        obs.append(Observation(op, y, sd))
    gaps = np.broadcast_to(np.asarray(steps), (n,)) if np.ndim(steps) == 0 else np.asarray(steps)
    run = cycle(model, filt, ensemble, obs, gaps, seed=seed, keep_members=keep_members)
    flat = np.asarray(truth, float).reshape(n + 1, -1)[1:]

    def rmse(mean):
        return np.sqrt(((mean - flat) ** 2).mean(axis=1))

    return Twin(run, rmse(run.forecast.mean), rmse(run.analysis.mean))

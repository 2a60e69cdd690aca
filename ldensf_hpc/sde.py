"""The pseudo-time diffusion used by every score filter (LD-EnSF paper eqs. 7-12).

Pseudo-time tau runs from 1 (pure noise) down to 0 (the analysis) in ``n_steps``
Euler-Maruyama steps of size ``1 / n_steps``:

- alpha_tau = 1 - tau (1 - eps_alpha)                       (eq. 8)
- beta2_tau = eps_beta + (1 - eps_beta) tau   (paper: eps_beta = 0, beta2 = tau)
- drift f(tau) = d log alpha / d tau = -(1 - eps_alpha) / alpha_tau
- g2(tau) = d beta2 / d tau - 2 f(tau) beta2_tau
- damping h(tau) = 1 - tau on the likelihood score           (eq. 11)

Reverse step (Algorithm 1), with score = prior score + h(tau) likelihood score:
``x <- x - dt (f x - g2 score) + sqrt(dt g2) z``.

Noise convention shared by all backends: an array of shape ``(n_steps + 1, K, d)``;
``noise[0]`` is the N(0, I) start at tau = 1 and ``noise[i + 1]`` the increment of
step ``i``. Passing the same array makes backends comparable member by member.

Stability (one rule for every score filter, :meth:`Schedule.floor_std`): the explicit
Euler step of the likelihood score ``h (y - x) / std^2`` diverges unless
``dt max(g2 h) / std^2 < 2``; an assumed observation std below ``STABILITY_MARGIN``
times that limit is raised to it (noise 0, or very accurate latent observations).
This module sits below ``filters`` and ``kernels`` and imports nothing of the package.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STABILITY_MARGIN = 1.1
"""An assumed observation std is at least this times :meth:`Schedule.stable_std`."""


@dataclass(frozen=True)
class Schedule:
    """Coefficients of the reverse SDE at every Euler step (host float64 arrays)."""

    tau: np.ndarray  # pseudo-time at the start of each step, 1 ... dt
    alpha: np.ndarray
    beta2: np.ndarray
    drift: np.ndarray  # f(tau)
    g2: np.ndarray
    damping: np.ndarray  # h(tau)
    dt: float

    def stable_std(self) -> float:
        """Smallest observation noise std (identity H) for which the explicit Euler step of the
        likelihood score is stable: ``dt max(g2 h) / std^2 < 2``."""
        return float(np.sqrt(0.5 * self.dt * np.max(self.g2 * self.damping)))

    def floor_std(self, std, floor: float = 0.0) -> np.ndarray:
        """``std`` raised to ``max(floor, STABILITY_MARGIN * stable_std())`` component-wise (float64)."""
        return np.maximum(np.asarray(std, dtype=np.float64), max(float(floor), STABILITY_MARGIN * self.stable_std()))


def schedule(n_steps: int, eps_alpha: float = 0.01, eps_beta: float = 0.0) -> Schedule:
    """Coefficients for ``n_steps`` Euler-Maruyama steps from tau = 1 towards 0."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if not 0.0 < eps_alpha <= 1.0:
        raise ValueError(f"eps_alpha must be in (0, 1], got {eps_alpha}")
    if not 0.0 <= eps_beta < 1.0:
        raise ValueError(f"eps_beta must be in [0, 1), got {eps_beta}")
    dt = 1.0 / n_steps
    tau = 1.0 - dt * np.arange(n_steps)
    alpha = 1.0 - tau * (1.0 - eps_alpha)
    beta2 = eps_beta + (1.0 - eps_beta) * tau
    drift = -(1.0 - eps_alpha) / alpha
    g2 = (1.0 - eps_beta) - 2.0 * drift * beta2
    return Schedule(tau=tau, alpha=alpha, beta2=beta2, drift=drift, g2=g2, damping=1.0 - tau, dt=dt)


def draw_noise(rng: np.random.Generator, n_steps: int, K: int, d: int, dtype=np.float64) -> np.ndarray:
    """Standard normal noise in the shared ``(n_steps + 1, K, d)`` convention."""
    return rng.standard_normal((n_steps + 1, K, d)).astype(dtype, copy=False)

"""The EnSF analysis (LD-EnSF paper eqs. 6-12, Algorithm 1) behind one function, for every score filter.

:func:`ensf_update` takes a forecast ensemble ``prior`` (K, d) and an observation ``obs`` (d,)
of the components with positive inverse noise variance ``inv_var`` (d,): the identity operator
of the latent filters (``inv_var = 1 / obs_std^2`` everywhere) or, with zeros at unobserved
components, any selection operator ``H`` of the full-space EnSF (the likelihood score
``H^T R^-1 (y - H x)`` is then ``inv_var (y - x)`` component-wise). For every sample it runs
all Euler-Maruyama steps of the reverse SDE from x ~ N(0, I) at tau = 1 to tau = 0:

- prior score (eq. 11-12), mixture over the forecast members
  ``-sum_k w_k (x - alpha p_k) / beta2`` with ``w = softmax_k(-|x - alpha p_k|^2 / (2 beta2))``,
  or member-paired ``-(x - alpha p_m) / beta2`` (``mixture=False``);
- plus the damped likelihood score ``h(tau) (y - x) / sigma^2`` (eq. 10);
- optionally clipped component-wise to ``[-score_clip, score_clip]`` (the total score);
- ``x <- x - dt (f x - g2 score) + sqrt(dt g2) z``, written as
  ``x <- (1 - dt f) x + (dt g2) score + sqrt(dt g2) z`` with the coefficients of
  :func:`ldensf_hpc.sde.schedule` (see :func:`step_table`).

Backends, chosen by name from :data:`BACKENDS`:

- ``reference``: torch; the mixture score as dot-product attention (ground truth; two BLAS
  products per step, the right backend for large ``d``: full-space EnSF);
- ``numba``: fused CPU kernel, one member per ``prange`` iteration, online softmax (latent ``d``);
- ``blas``: two BLAS products and one fused Numba pass per step, normals drawn in the pass
  (:mod:`ldensf_hpc.kernels.blas`; large ``d``: the full-space EnSF's default; CuPy input
  goes through the reference path on its device);
- ``cuda``: CUDA C kernel ``kernels/cuda/ensf_fused.cu`` through CuPy, one thread per member (d <= 32);
- ``cuda_host``: the same CUDA C and launch executed on the CPU by host emulation
  (:mod:`ldensf_hpc.cuda_host`; a C++20 compiler, slow: for tests without a GPU).

``rows`` draws only the samples of those members (all ``K`` members enter the score): an MPI
rank draws its own block, and the blocks of all ranks equal the one-process analysis.

Noise: a pre-drawn array ``(n_steps + 1, K, d)`` (convention of :mod:`ldensf_hpc.sde`), or a ``seed``.
With a seed every backend draws the same normals: Philox4x32-10 keyed by the 64-bit seed,
counter ``(j // 4, step, member, 0)``, Box-Muller in float64 (:func:`reference.philox_normals`).
With the same noise a backend ``a`` agrees with the reference ``b`` member by member to
``|a - b| <= 1e-5 (1 + |b|)`` in float32 and to 1e-11 in float64 (tests/test_kernels.py).
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from ..errors import BackendError, InputError
from ..registry import Registry
from ..sde import schedule

BACKENDS = Registry("EnSF kernel backend", {
    "reference": "ldensf_hpc.kernels.reference:analysis",
    "numba": "ldensf_hpc.kernels.cpu:analysis",
    "blas": "ldensf_hpc.kernels.blas:analysis",
    "cuda": "ldensf_hpc.kernels.cuda:analysis",
    "cuda_host": "ldensf_hpc.kernels.cuda:host_analysis",
}, error=BackendError)
"""Backend name -> ``analysis(prior, obs, inv_var, table, noise, seed, mixture, clip, rows)``."""

TABLE_COLUMNS = ("alpha", "inv_beta2", "half_inv_beta2", "x_factor", "score_factor", "damping", "noise_scale")
"""Columns of :func:`step_table`, one row per Euler step."""


def step_table(n_steps: int, eps_alpha: float = 0.01, eps_beta: float = 0.0, dtype=np.float64) -> np.ndarray:
    """Per-step coefficients ``(n_steps, 7)`` shared by all backends (see :data:`TABLE_COLUMNS`).

    Computed in float64 from :func:`~ldensf_hpc.sde.schedule` and then cast,
    so every backend multiplies by exactly the same numbers.
    """
    s = schedule(n_steps, eps_alpha, eps_beta)
    table = np.stack([s.alpha, 1.0 / s.beta2, 0.5 / s.beta2, 1.0 - s.dt * s.drift, s.dt * s.g2,
                      s.damping, np.sqrt(s.dt * s.g2)], axis=1)
    return table.astype(dtype)


def _as_array(value):
    return value if hasattr(value, "__cuda_array_interface__") else np.asarray(value)


def _contiguous(xp, value, dtype):
    return xp.ascontiguousarray(xp.asarray(value, dtype=dtype))


def _check_finite(xp, value, what: str) -> None:
    if not bool(xp.isfinite(value).all()):
        raise InputError(f"{what} contains NaN or Inf")


def ensf_update(prior, obs, obs_std=None, *, inv_var=None, rows: slice | None = None, n_steps: int = 100,
                eps_alpha: float = 0.01, eps_beta: float = 0.0, mixture: bool = True,
                score_clip: float | None = None, noise=None, seed: int | None = None, backend: str = "numba"):
    """EnSF analysis samples ``(J, d)`` of members ``rows`` (default all K) (paper Algorithm 1).

    Parameters
    ----------
    prior : (K, d) array, K >= 2
        Forecast ensemble; float32 input is processed in float32, anything else in float64
        (the ``cuda`` backend always works in float32).
    obs : (d,) array
        Observed values (entries where ``inv_var`` is 0 are ignored).
    obs_std : scalar or (d,) array
        Noise standard deviation of an identity observation (give this or ``inv_var``).
    inv_var : (d,) array >= 0
        ``diag(H^T R^-1 H)``: inverse noise variance of observed components, 0 elsewhere.
    rows : slice of member indices whose samples are drawn (default ``slice(0, K)``).
    n_steps, eps_alpha, eps_beta : schedule of the reverse SDE (:mod:`ldensf_hpc.sde`).
    mixture : mixture prior score (default) or member-paired score.
    score_clip : clip the total score to ``[-score_clip, score_clip]`` (None: no clip).
    noise : (n_steps + 1, K, d) array, optional
        Pre-drawn standard normals; ``noise[0]`` is the start, ``noise[i + 1]`` step ``i``.
    seed : int in [0, 2**64), optional
        Seed of the Philox stream used when ``noise`` is None (fresh entropy if None too).
    backend : one of :data:`BACKENDS`.

    Returns
    -------
    (J, d) analysis samples, NumPy (CuPy for CuPy input to the ``cuda``, ``reference`` and ``blas`` backends).
    """
    analysis = BACKENDS[backend]
    prior = _as_array(prior)
    xp = array_module(prior)
    if prior.ndim != 2:
        raise InputError(f"prior must be a (K, d) ensemble, got shape {prior.shape}")
    K, d = prior.shape
    if K < 2:
        raise InputError(f"the EnSF prior score needs at least 2 members, got K = {K}")
    if d < 1:
        raise InputError("prior has zero state dimension")
    rows = slice(0, K) if rows is None else rows
    if rows.step not in (None, 1) or not 0 <= rows.start < rows.stop <= K:
        raise InputError(f"rows must be a contiguous non-empty slice of the {K} members, got {rows}")
    dtype = xp.float32 if prior.dtype == xp.float32 else xp.float64
    prior = _contiguous(xp, prior, dtype)
    obs = _contiguous(xp, obs, dtype)
    if obs.shape != (d,):
        raise InputError(f"obs must have shape ({d},) to match prior (K, d) = {prior.shape}, got {obs.shape}")
    _check_finite(xp, prior, "prior")
    _check_finite(xp, obs, "obs")
    if (obs_std is None) == (inv_var is None):
        raise InputError("give exactly one of obs_std and inv_var")
    if obs_std is not None:
        std = xp.asarray(obs_std, dtype=xp.float64)
        if std.ndim > 1 or (std.ndim == 1 and std.shape != (d,)):
            raise InputError(f"obs_std must be a scalar or have shape ({d},), got {std.shape}")
        _check_finite(xp, std, "obs_std")
        if not bool((std > 0).all()):
            raise InputError("obs_std must be positive")
        inv_var = xp.zeros(d) + 1.0 / std**2
    inv_var = _contiguous(xp, inv_var, dtype)
    if inv_var.shape != (d,):
        raise InputError(f"inv_var must have shape ({d},), got {inv_var.shape}")
    _check_finite(xp, inv_var, "inv_var")
    if not bool((inv_var >= 0).all()):
        raise InputError("inv_var must be >= 0 (0: unobserved component)")
    if score_clip is not None and not (np.isfinite(score_clip) and score_clip > 0):
        raise InputError(f"score_clip must be a positive number or None, got {score_clip}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)):
        raise InputError(f"n_steps must be an integer, got {n_steps!r}")
    try:
        table = step_table(int(n_steps), eps_alpha, eps_beta, dtype=np.dtype(dtype))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if noise is not None:
        noise = _contiguous(xp, noise, dtype)
        if noise.shape != (n_steps + 1, K, d):
            raise InputError(f"noise must have shape (n_steps + 1, K, d) = {(n_steps + 1, K, d)}, got {noise.shape}")
        _check_finite(xp, noise, "noise")
        seed = 0
    elif seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
        raise InputError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return analysis(prior, obs, inv_var, table, noise, int(seed), bool(mixture), score_clip, rows)

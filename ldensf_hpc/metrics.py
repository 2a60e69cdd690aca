"""Accuracy and calibration of an ensemble against the truth.

An ensemble is ``(K, ...)`` (members first); everything after the member axis is
flattened to ``d`` components and the truth has the shape of one member. All
functions accept NumPy or CuPy arrays and return Python floats.
"""
from __future__ import annotations

from .backend import array_module
from .errors import InputError


def _flatten(ensemble, truth):
    """``(K, d)`` ensemble and ``(d,)`` truth, checked for matching sizes."""
    xp = array_module(ensemble)
    ensemble = xp.asarray(ensemble)
    if ensemble.ndim < 2:
        raise InputError(f"an ensemble needs a leading member axis, got shape {ensemble.shape}")
    K = ensemble.shape[0]
    ens = ensemble.reshape(K, -1)
    truth = xp.asarray(truth).reshape(-1)
    if truth.shape[0] != ens.shape[1]:
        raise InputError(f"truth has {truth.shape[0]} components but ensemble members have {ens.shape[1]}")
    return xp, ens, truth


def rmse(ensemble, truth) -> float:
    """Root-mean-square error of the ensemble mean, sqrt(mean_j (xbar_j - x_j)^2)."""
    xp, ens, truth = _flatten(ensemble, truth)
    return float(xp.sqrt(xp.mean((ens.mean(axis=0) - truth) ** 2)))


def rel_rmse(ensemble, truth) -> float:
    """Relative error of the ensemble mean, ||xbar - x|| / ||x|| (paper Fig. 5, 6)."""
    xp, ens, truth = _flatten(ensemble, truth)
    return float(xp.linalg.norm(ens.mean(axis=0) - truth) / xp.linalg.norm(truth))


def spread(ensemble) -> float:
    """Ensemble spread sqrt(mean_j var_j), with the unbiased (K - 1) member variance."""
    xp = array_module(ensemble)
    ens = xp.asarray(ensemble).reshape(ensemble.shape[0], -1)
    if ens.shape[0] < 2:
        raise InputError(f"spread needs at least 2 members, got {ens.shape[0]}")
    return float(xp.sqrt(xp.mean(ens.var(axis=0, ddof=1))))


def spread_error_ratio(ensemble, truth) -> float:
    """:func:`spread` / :func:`rmse`; about 1 for a calibrated ensemble."""
    return spread(ensemble) / rmse(ensemble, truth)


def crps(ensemble, truth, weights=None) -> float:
    """Continuous ranked probability score, ensemble estimator, averaged over components
    (with ``weights`` of one member's shape, e.g. cell areas: their weighted mean).

    CRPS_j = mean_k |x_kj - y_j| - 1 / (2 K^2) sum_{k,l} |x_kj - x_lj|; the pair sum
    is computed from the sorted members, sum_{k,l} |x_k - x_l| = 2 sum_i (2i - K - 1) x_(i).
    """
    xp, ens, truth = _flatten(ensemble, truth)
    K = ens.shape[0]
    skill = xp.abs(ens - truth).mean(axis=0)
    rank_weight = 2.0 * xp.arange(1, K + 1, dtype=ens.dtype) - K - 1
    pair_sum = 2.0 * (rank_weight[:, None] * xp.sort(ens, axis=0)).sum(axis=0)
    score = skill - pair_sum / (2.0 * K * K)
    if weights is None:
        return float(xp.mean(score))
    w = xp.asarray(weights, dtype=score.dtype).reshape(-1)
    return float((w * score).sum() / w.sum())


def energy_score(ensemble, truth) -> float:
    """Energy score mean_k ||x_k - y|| - 1 / (2 K^2) sum_{k,l} ||x_k - x_l|| (multivariate CRPS)."""
    xp, ens, truth = _flatten(ensemble, truth)
    K = ens.shape[0]
    skill = xp.linalg.norm(ens - truth, axis=1).mean()
    anomalies = ens - ens.mean(axis=0)  # centring reduces cancellation in the Gram form
    sq = (anomalies**2).sum(axis=1)
    dist2 = sq[:, None] + sq[None, :] - 2.0 * anomalies @ anomalies.T
    dist2[xp.arange(K), xp.arange(K)] = 0.0  # exact zeros, not rounding noise under the sqrt
    pair_sum = xp.sqrt(xp.maximum(dist2, 0.0)).sum()
    return float(skill - pair_sum / (2.0 * K * K))


def param_error(params, truth) -> float:
    """Relative error of the parameter mean, ||ubar - u|| / ||u|| for params ``(K, p)``."""
    xp, ens, truth = _flatten(params, truth)
    return float(xp.linalg.norm(ens.mean(axis=0) - truth) / xp.linalg.norm(truth))

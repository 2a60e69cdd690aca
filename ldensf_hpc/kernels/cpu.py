"""Numba CPU kernel of the fused latent EnSF analysis (backend ``numba``).

``prange`` over members; each member runs all Euler steps with its own state. The mixture
prior score is an online softmax over tiles of ``TILE`` forecast members (flash-attention
style): squared distances of one tile into a small buffer, a running minimum distance
(= running max logit) with rescaling of the partial sums; nothing K x K in memory. The
forecast ensemble is read transposed (d, K), so the inner loops run over forecast members
and compile to SIMD code; ``exp``, ``log`` and ``sincos`` are small polynomial versions
because Numba has no SIMD math library without SVML. ``error_model="numpy"`` drops the
Python division checks that would block vectorisation. Fast-math flags measured on the
2-core AMD EPYC (Zen 4, one thread, K = 100 / 1000, d = 12, 100 steps): without them
11.4 / 838 ms per analysis (reductions stay scalar), with ``FASTMATH`` 3.2 / 189 ms,
with ``fastmath=True`` (adds no-NaN/no-Inf assumptions) 3.0 / 180 ms; we keep the safe set.

Without a noise array each member first draws its (n_steps + 1, d) normals from the
Philox4x32-10 stream of :func:`ldensf_hpc.kernels.reference.philox_normals` (vectorised
over steps), so results do not depend on the thread count.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange
from numba.extending import overload

from ..errors import InputError
from .philox import FASTMATH, JIT, bitcast, member_normals

TILE = 256
"""Forecast members per online-softmax tile."""

PAD = 64
"""The transposed forecast ensemble is zero-padded to a multiple of this many members, so
the SIMD loops (16 lanes x 4 interleaved) never fall into their scalar remainder."""

_LN2 = math.log(2.0)


def _exp_nonpositive(x):
    """exp(x) for x <= 0 in SIMD-friendly arithmetic (implemented by the overload below)."""
    return math.exp(x)


def _min_nonnegative(values):
    """Smallest of non-negative ``values`` (implemented by the overload below)."""
    return values.min()


@overload(_exp_nonpositive, jit_options={"fastmath": FASTMATH})
def _exp_nonpositive_impl(x):
    """``2^n 2^f`` with n = round(x log2 e): 2^n from the exponent bits, 2^f (|f| <= 1/2) by
    its Taylor series to the working precision. Arguments below the log of the smallest
    normal number are clamped there (softmax weights < 1e-38 of the largest: negligible).
    The relative error is ~|x| eps (the rounding of x log2 e), as for the logits themselves.
    """
    single = x.bitwidth == 32
    ftype, itype = (np.float32, np.int32) if single else (np.float64, np.int64)
    low, bias, shift = (-87.0, 127, 23) if single else (-708.0, 1023, 52)
    coeffs = tuple(ftype(_LN2**k / math.factorial(k)) for k in reversed(range(8 if single else 14)))
    low, log2e, half = ftype(low), ftype(1.0 / _LN2), ftype(0.5)
    bias, shift, like = itype(bias), itype(shift), ftype(0.0)

    def impl(x):
        t = max(x, low) * log2e
        n = np.floor(t + half)
        f = t - n
        p = coeffs[0]
        for c in coeffs[1:]:
            p = p * f + c
        return p * bitcast(itype((itype(n) + bias) << shift), like)

    return impl


@overload(_min_nonnegative)
def _min_nonnegative_impl(values):
    """Non-negative floats order like their bit patterns as integers, and integer minimum
    reductions vectorise (floating-point ones do not without no-NaN assumptions)."""
    single = values.dtype.bitwidth == 32
    ilike, flike = (np.int32(0), np.float32(0)) if single else (np.int64(0), np.float64(0))

    def impl(values):
        low = bitcast(values[0], ilike)
        for t in range(1, values.shape[0]):
            low = min(low, bitcast(values[t], ilike))
        return bitcast(low, flike)

    return impl


@njit(**JIT)
def _squared_distances(x, a, prior_t, k0, dist):
    """``dist[t] = |x - a p_(k0 + t)|^2`` for the tile of ``len(dist)`` members from k0.

    Four state components per pass over the tile; rows are sliced as ``prior_t[j, k0:k1]``
    (contiguous views, which vectorise; a computed index ``k0 + t`` does not).
    """
    d = prior_t.shape[0]
    k1 = k0 + dist.shape[0]
    dist[:] = 0
    j = 0
    while j + 4 <= d:
        x0, x1, x2, x3 = x[j], x[j + 1], x[j + 2], x[j + 3]
        r0, r1, r2, r3 = prior_t[j, k0:k1], prior_t[j + 1, k0:k1], prior_t[j + 2, k0:k1], prior_t[j + 3, k0:k1]
        for t in range(dist.shape[0]):
            e0, e1, e2, e3 = x0 - a * r0[t], x1 - a * r1[t], x2 - a * r2[t], x3 - a * r3[t]
            dist[t] += (e0 * e0 + e1 * e1) + (e2 * e2 + e3 * e3)
        j += 4
    for j in range(j, d):
        xj, row = x[j], prior_t[j, k0:k1]
        for t in range(dist.shape[0]):
            e = xj - a * row[t]
            dist[t] += e * e


@njit(**JIT)
def _accumulate(acc, weights, prior_t, k0):
    """``acc[j] += sum_t weights[t] p_(k0 + t), j`` over the tile, four components per pass."""
    d = prior_t.shape[0]
    k1 = k0 + weights.shape[0]
    j = 0
    while j + 4 <= d:
        r0, r1, r2, r3 = prior_t[j, k0:k1], prior_t[j + 1, k0:k1], prior_t[j + 2, k0:k1], prior_t[j + 3, k0:k1]
        a0, a1, a2, a3 = acc[j], acc[j + 1], acc[j + 2], acc[j + 3]
        for t in range(weights.shape[0]):
            w = weights[t]
            a0 += w * r0[t]
            a1 += w * r1[t]
            a2 += w * r2[t]
            a3 += w * r3[t]
        acc[j], acc[j + 1], acc[j + 2], acc[j + 3] = a0, a1, a2, a3
        j += 4
    for j in range(j, d):
        row, s = prior_t[j, k0:k1], acc[j]
        for t in range(weights.shape[0]):
            s += weights[t] * row[t]
        acc[j] = s


@njit(**JIT)
def _mixture_mean(x, prior_t, K, a, c, buf, mean):
    """Softmax-weighted forecast mean ``sum_k w_k p_k`` for one query ``x`` (eq. 11-12).

    ``w_k`` proportional to ``exp(-|x - a p_k|^2 c)``, accumulated tile by tile with a running
    minimum distance. ``prior_t`` (d, K_pad) holds the K members and zero padding up to a
    multiple of ``PAD`` (full-width SIMD loops; padded weights are set to 0). ``buf`` (TILE,)
    is scratch; the result goes into ``mean`` (d,).
    """
    mean[:] = 0
    zero = mean[0]  # in the working dtype
    total = best = zero
    for k0 in range(0, prior_t.shape[1], TILE):
        dist = buf[:min(TILE, prior_t.shape[1] - k0)]
        real = min(TILE, K - k0)
        _squared_distances(x, a, prior_t, k0, dist)
        low = _min_nonnegative(dist[:real])
        if k0 == 0:
            best = low
        new_best = min(best, low)
        scale = _exp_nonpositive((new_best - best) * c)
        total *= scale
        for j in range(mean.shape[0]):
            mean[j] *= scale
        for t in range(dist.shape[0]):
            w = _exp_nonpositive((new_best - dist[t]) * c)
            w = w if t < real else zero
            dist[t] = w
            total += w
        _accumulate(mean, dist, prior_t, k0)
        best = new_best
    for j in range(mean.shape[0]):
        mean[j] /= total


@njit(parallel=True, **JIT)
def _analysis(prior, prior_t, obs, inv_var, table, noise, k0, k1, mixture, clip, first, out):
    """All Euler steps for the samples of members ``first .. first + len(out) - 1`` (one per
    prange iteration) into ``out``; every member of ``prior`` enters the mixture score.

    ``noise`` is (n_steps + 1, K, d) or empty (then the Philox stream with key (k0, k1));
    ``clip[0] > 0`` clips the score; the per-step coefficients are the rows of ``table``.
    """
    K, d = prior.shape
    n_steps = table.shape[0]
    has_noise = noise.shape[0] > 0
    has_clip = clip[0] > 0
    for r in prange(out.shape[0]):
        m = first + r
        x = np.empty(d, prior.dtype)
        mean = np.empty(d, prior.dtype)
        buf = np.empty(TILE, prior.dtype)
        if has_noise:
            z = noise[:, m]
        else:
            z = np.empty((n_steps + 1, d), prior.dtype)
            member_normals(z, k0, k1, m)
        x[:] = z[0]
        for i in range(n_steps):
            a, inv_b2, c = table[i, 0], table[i, 1], table[i, 2]
            x_factor, score_factor, h, noise_scale = table[i, 3], table[i, 4], table[i, 5], table[i, 6]
            if mixture:
                _mixture_mean(x, prior_t, K, a, c, buf, mean)
            else:
                mean[:] = prior[m]
            for j in range(d):
                score = (a * mean[j] - x[j]) * inv_b2 + h * (obs[j] - x[j]) * inv_var[j]
                if has_clip:
                    score = min(max(score, -clip[0]), clip[0])
                x[j] = x_factor * x[j] + score_factor * score + noise_scale * z[i + 1, j]
        out[r] = x


def analysis(prior, obs, inv_var, table, noise, seed, mixture, clip, rows) -> np.ndarray:
    """Numba EnSF analysis (arguments as prepared by :func:`ldensf_hpc.kernels.ensf_update`)."""
    if not isinstance(prior, np.ndarray):
        raise InputError("the numba backend needs NumPy arrays; use backend='cuda' for CuPy arrays")
    dtype = prior.dtype
    if noise is None:
        noise = np.empty((0, 0, 0), dtype)
    K, d = prior.shape
    out = np.empty((rows.stop - rows.start, d), dtype)
    prior_t = np.zeros((d, -(-K // PAD) * PAD), dtype)
    prior_t[:, :K] = prior.T
    _analysis(prior, prior_t, obs, inv_var, table.astype(dtype, copy=False), noise,
              np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32), mixture, np.array([clip or 0.0], dtype),
              np.int64(rows.start), out)
    return out

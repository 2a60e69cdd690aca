"""Counter-based normals of the EnSF kernels: Philox4x32-10 + Box-Muller, compiled with Numba.

The stream of :func:`ldensf_hpc.kernels.reference.philox_normals` (the NumPy definition):
member ``m``, components ``4b .. 4b + 3`` of noise index ``step`` come from the counter
``(b, step, m, 0)`` under the key ``(seed mod 2**32, seed // 2**32)``. Every draw depends only
on (seed, step, member), so a block of members drawn by one MPI rank or one thread equals
the same rows of the whole ensemble. ``log`` and ``sincos`` are small polynomial versions
(Numba has no SIMD math library without SVML), accurate to a few ulp in float64.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange
from numba.extending import intrinsic

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
"""LLVM fast-math flags: reassociation vectorises the sums; no nnan/ninf assumptions."""

JIT = {"cache": True, "fastmath": FASTMATH, "error_model": "numpy"}

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_LO = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
_LN2 = math.log(2.0)
_SQRT2 = math.sqrt(2.0)
_LOG_SERIES = tuple(2.0 / (2 * k + 1) for k in reversed(range(12)))  # log m = 2 atanh(s), |s| < 0.172
_SIN_SERIES = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in reversed(range(10)))
_COS_SERIES = tuple((-1.0) ** k / math.factorial(2 * k) for k in reversed(range(11)))


@intrinsic
def bitcast(typingctx, value, like):
    """The bits of ``value`` reinterpreted as the type of ``like`` (same width; LLVM bitcast)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(like))

    return like(value, like), codegen


@njit(inline="always", **JIT)
def _log_unit(u):
    """log(u) for float64 u > 0 to a few ulp: u = m 2^e, m in [1/sqrt2, sqrt2), series."""
    bits = bitcast(u, np.int64(0))
    e = (bits >> 52) - 1023
    m = bitcast((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000, 0.0)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = _LOG_SERIES[0]
    for c in _LOG_SERIES[1:]:
        p = p * s2 + c
    return e * _LN2 + s * p


@njit(inline="always", **JIT)
def _sincos_turn(u):
    """(cos, sin)(2 pi u) for float64 u in [0, 1]: quarter-turn reduction, Taylor series."""
    n = np.floor(4.0 * u + 0.5)
    r = 2.0 * math.pi * (u - 0.25 * n)  # |r| <= pi / 4
    r2 = r * r
    s = _SIN_SERIES[0]
    for c in _SIN_SERIES[1:]:
        s = s * r2 + c
    s *= r
    c_ = _COS_SERIES[0]
    for c in _COS_SERIES[1:]:
        c_ = c_ * r2 + c
    quarter = np.int64(n)  # rotate (cos r, sin r) by quarter * 90 degrees
    odd = (quarter & 1) == 1
    cos = (1 - 2 * (((quarter + 1) >> 1) & 1)) * (s if odd else c_)
    sin = (1 - 2 * ((quarter >> 1) & 1)) * (c_ if odd else s)
    return cos, sin


@njit(inline="always", **JIT)
def _philox(block, step, member, k0, k1):
    """Philox4x32-10 of the counter ``(block, step, member, 0)`` under the key ``(k0, k1)``: four words."""
    c0, c1, c2, c3 = np.uint64(block), np.uint64(step), np.uint64(member), np.uint64(0)
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = (p1 >> _SHIFT) ^ c1 ^ k0, p1 & _LO, (p0 >> _SHIFT) ^ c3 ^ k1, p0 & _LO
        k0 = (k0 + _W0) & _LO
        k1 = (k1 + _W1) & _LO
    return c0, c1, c2, c3


@njit(**JIT)
def member_normals(z, k0, k1, member, step0=0):
    """Normals ``z`` (n, d) of ``philox_normals`` for one member, noise indices ``step0 .. step0 + n - 1``:
    Philox4x32-10 with counter (j // 4, step, member, 0) and key (k0, k1), then Box-Muller."""
    n, d = z.shape
    words = np.empty((4, n), np.uint64)
    pair = np.empty((2, n))
    for b in range((d + 3) // 4):
        for s in range(n):
            words[0, s], words[1, s], words[2, s], words[3, s] = _philox(b, step0 + s, member, k0, k1)
        for h in range(min(2, (d - 4 * b + 1) // 2)):
            first, second = words[2 * h], words[2 * h + 1]
            for s in range(n):
                u1 = (np.float64(first[s]) + 0.5) * 2.0**-32
                u2 = (np.float64(second[s]) + 0.5) * 2.0**-32
                radius = math.sqrt(-2.0 * _log_unit(u1))
                cos, sin = _sincos_turn(u2)
                pair[0, s] = radius * cos
                pair[1, s] = radius * sin
            for e in range(min(2, d - 4 * b - 2 * h)):
                z[:, 4 * b + 2 * h + e] = pair[e]


@njit(**JIT)
def _row_normals(out, k0, k1, step, member, words):
    """Normals ``out`` (d,) of one member at one noise index; ``words`` (4, ceil(d / 4)) scratch.

    The loops run over the counter blocks, so they vectorise across blocks (one step, many
    components: the full-space EnSF's case; :func:`member_normals` vectorises across steps).
    """
    d = out.shape[0]
    nb = words.shape[1]
    for b in range(nb):
        words[0, b], words[1, b], words[2, b], words[3, b] = _philox(b, step, member, k0, k1)
    for h in range(2):
        first, second = words[2 * h], words[2 * h + 1]
        for b in range(nb):
            u1 = (np.float64(first[b]) + 0.5) * 2.0**-32
            u2 = (np.float64(second[b]) + 0.5) * 2.0**-32
            radius = math.sqrt(-2.0 * _log_unit(u1))
            cos, sin = _sincos_turn(u2)
            j = 4 * b + 2 * h
            if j < d:
                out[j] = radius * cos
            if j + 1 < d:
                out[j + 1] = radius * sin


@njit(parallel=True, **JIT)
def step_normals(out, k0, k1, step, first):
    """Normals ``out`` (J, d) of noise index ``step`` for members ``first .. first + J - 1``."""
    nb = (out.shape[1] + 3) // 4
    for r in prange(out.shape[0]):
        _row_normals(out[r], k0, k1, step, first + r, np.empty((4, nb), np.uint64))


def normals(seed: int, step: int, first: int, count: int, d: int) -> np.ndarray:
    """``philox_normals(seed, step, K, d)[first:first + count]`` (float64), compiled."""
    out = np.empty((count, d))
    step_normals(out, np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32), np.int64(step), np.int64(first))
    return out

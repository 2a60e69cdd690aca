"""Counter-based normals of the EnSF kernels: Philox4x32-10 + Box-Muller, compiled with Numba.

The stream of :func:`ldensf_hpc.kernels.reference.philox_normals` (the NumPy definition):
member ``m``, components ``4b .. 4b + 3`` of noise index ``step`` come from the counter
``(b, step, m, 0)`` under the key ``(seed mod 2**32, seed // 2**32)``. Every draw depends only
on (seed, step, member), so a block of members drawn by one MPI rank or one thread equals
the same rows of the whole ensemble. ``log`` and ``sincos`` are small polynomial versions
(Numba has no SIMD math library without SVML), accurate to a few ulp in float64; float32
output is computed in float32 (:func:`box_muller`).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange
from numba.extending import intrinsic, overload

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
"""LLVM fast-math flags: reassociation vectorises the sums; no nnan/ninf assumptions."""

JIT = {"cache": True, "fastmath": FASTMATH, "error_model": "numpy"}

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_LO = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
_LN2 = math.log(2.0)


@intrinsic
def bitcast(typingctx, value, like):
    """The bits of ``value`` reinterpreted as the type of ``like`` (same width; LLVM bitcast)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(like))

    return like(value, like), codegen


def box_muller(first, second, like):
    """Two standard normals from two Philox words, in the dtype of ``like`` (compiled: the overload below)."""
    radius = math.sqrt(-2.0 * math.log((int(first) + 0.5) * 2.0**-32))
    angle = 2.0 * math.pi * (int(second) + 0.5) * 2.0**-32
    kind = type(like)
    return kind(radius * math.cos(angle)), kind(radius * math.sin(angle))


@overload(box_muller, jit_options={"fastmath": FASTMATH, "error_model": "numpy"}, inline="always")
def _box_muller_impl(first, second, like):
    """``u = (w + 0.5) 2^-32``; ``sqrt(-2 log u1) (cos, sin)(2 pi u2)``. log: ``u1 = m 2^e`` with m in
    [1/sqrt2, sqrt2), ``log m = 2 atanh(s)``, s = (m - 1) / (m + 1), |s| < 0.172; sincos: quarter-turn
    reduction and Taylor series on |r| <= pi / 4. Series lengths reach the working precision:
    a few ulp in float64, about 1e-7 relative in float32 (vectorises 16 lanes wide).
    """
    single = like.bitwidth == 32
    ftype, itype = (np.float32, np.int32) if single else (np.float64, np.int64)
    mantissa, bias = (23, 127) if single else (52, 1023)
    terms = (6, 6, 7) if single else (12, 10, 11)
    log_series = tuple(ftype(2.0 / (2 * k + 1)) for k in reversed(range(terms[0])))
    sin_series = tuple(ftype((-1.0) ** k / math.factorial(2 * k + 1)) for k in reversed(range(terms[1])))
    cos_series = tuple(ftype((-1.0) ** k / math.factorial(2 * k)) for k in reversed(range(terms[2])))
    mask, one_bits, ilike = itype((1 << mantissa) - 1), itype(bias << mantissa), itype(0)
    half, one, two, four, quarter_turn = ftype(0.5), ftype(1.0), ftype(2.0), ftype(4.0), ftype(0.25)
    scale, sqrt2, ln2, turn = ftype(2.0**-32), ftype(math.sqrt(2.0)), ftype(_LN2), ftype(2.0 * math.pi)
    fbias = ftype(bias)

    def impl(first, second, like):
        u1 = (ftype(np.int64(first)) + half) * scale
        u2 = (ftype(np.int64(second)) + half) * scale
        bits = bitcast(u1, ilike)
        m = bitcast(itype((bits & mask) | one_bits), one)
        e = ftype(bits >> mantissa) - fbias
        big = m > sqrt2
        m = m * half if big else m
        e = e + one if big else e
        t = (m - one) / (m + one)
        t2 = t * t
        p = log_series[0]
        for c in log_series[1:]:
            p = p * t2 + c
        radius = math.sqrt(-two * (e * ln2 + t * p))
        n = np.floor(four * u2 + half)
        r = turn * (u2 - quarter_turn * n)
        r2 = r * r
        s_ = sin_series[0]
        for c in sin_series[1:]:
            s_ = s_ * r2 + c
        s_ *= r
        c_ = cos_series[0]
        for c in cos_series[1:]:
            c_ = c_ * r2 + c
        quarter = np.int64(n)  # rotate (cos r, sin r) by quarter * 90 degrees
        odd = (quarter & 1) == 1
        cos = ftype(1 - 2 * (((quarter + 1) >> 1) & 1)) * (s_ if odd else c_)
        sin = ftype(1 - 2 * ((quarter >> 1) & 1)) * (c_ if odd else s_)
        return radius * cos, radius * sin

    return impl


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
                pair[0, s], pair[1, s] = box_muller(first[s], second[s], 0.0)
            for e in range(min(2, d - 4 * b - 2 * h)):
                z[:, 4 * b + 2 * h + e] = pair[e]


@njit(**JIT)
def block_normals(out, k0, k1, step, member, b0, words, pairs):
    """Normals ``out`` (n,) of one member at one noise index: components ``4 b0 .. 4 b0 + n - 1``
    (counter blocks ``b0 ..``); scratch ``words`` (4, >= ceil(n / 4)) uint32 and ``pairs``
    (4, >= ceil(n / 4)) of ``out``'s dtype.

    Three loops over the counter blocks that vectorise (one step, many components: the
    full-space EnSF's case; :func:`member_normals` vectorises across steps): Philox words,
    Box-Muller into contiguous planes, then the planes interleaved into ``out``.
    """
    n = out.shape[0]
    nb = (n + 3) // 4
    like = out.dtype.type(0)
    for b in range(nb):
        w0, w1, w2, w3 = _philox(b0 + b, step, member, k0, k1)
        words[0, b], words[1, b], words[2, b], words[3, b] = np.uint32(w0), np.uint32(w1), np.uint32(w2), np.uint32(w3)
    for h in range(2):
        first, second, cos, sin = words[2 * h], words[2 * h + 1], pairs[2 * h], pairs[2 * h + 1]
        for b in range(nb):
            cos[b], sin[b] = box_muller(first[b], second[b], like)
    full = n // 4
    for b in range(full):
        out[4 * b], out[4 * b + 1], out[4 * b + 2], out[4 * b + 3] = pairs[0, b], pairs[1, b], pairs[2, b], pairs[3, b]
    for j in range(4 * full, n):
        out[j] = pairs[j - 4 * full, full]


@njit(parallel=True, **JIT)
def step_normals(out, k0, k1, step, first):
    """Normals ``out`` (J, d) of noise index ``step`` for members ``first .. first + J - 1``."""
    nb = (out.shape[1] + 3) // 4
    for r in prange(out.shape[0]):
        block_normals(out[r], k0, k1, step, first + r, 0, np.empty((4, nb), np.uint32), np.empty((4, nb), out.dtype))


def normals(seed: int, step: int, first: int, count: int, d: int) -> np.ndarray:
    """``philox_normals(seed, step, K, d)[first:first + count]`` (float64), compiled."""
    out = np.empty((count, d))
    step_normals(out, np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32), np.int64(step), np.int64(first))
    return out

"""EnSF analysis for a large state dimension (backend ``blas``: the full-space EnSF's default).

Each Euler-Maruyama step of Algorithm 1 (LD-EnSF paper eqs. 9-12) is the mixture score as
dot-product attention (as in :mod:`ldensf_hpc.kernels.reference`): logits
``(2 a x.p_k - a^2 |p_k|^2) c`` from ``G = x p^T`` (J x K), a row softmax ``W``, the weighted
forecast mean ``M = W p`` (J x d), then the update. The state components are split into fixed
chunks of ``CHUNK`` processed in parallel (single-threaded BLAS in each); a chunk walks its
tiles of ``TILE`` components and, per tile, with the forecast tile read once from cache:

1. ``M = W p`` on the tile (GEMM);
2. one fused pass over the J samples: the prior score ``(a M - x) / beta2``, the damped
   likelihood score ``h inv_var (y - x)``, the clip, the drift and the Philox4x32-10 noise of
   :mod:`ldensf_hpc.kernels.philox` drawn in the pass (the stream of every backend; no (K, d)
   noise array per step), updating ``x`` in place;
3. the tile's share of the next step's ``G`` (GEMM, accumulated).

The chunks' shares of ``G`` are summed in chunk order, so no result depends on the thread
count. float32 input runs in float32 (half the time of float64; accuracy in
:class:`~ldensf_hpc.filters.ensf.EnSF`), float64 in float64. CuPy input (a model on the GPU)
goes through :mod:`ldensf_hpc.kernels.reference` on its device.
"""
from __future__ import annotations

import math

import llvmlite.binding as llvm
import numpy as np
from numba import njit, prange, types
from numba.extending import get_cython_function_address
from threadpoolctl import threadpool_limits

from . import reference
from .philox import JIT, block_normals, step_normals

TILE = 512
"""Components per tile of the fused pass (its normals stay in L1)."""

CHUNK = 4 * TILE
"""Components per parallel chunk (fixed, so that the summation order does not depend on threads)."""


@njit(**JIT)
def _softmax_rows(logits, norms, scale, shift):
    """``logits[q] <- softmax_k(scale logits[q, k] - shift norms[k])`` row by row, in place."""
    for q in range(logits.shape[0]):
        row = logits[q]
        best = -np.inf
        for k in range(row.shape[0]):
            row[k] = scale * row[k] - shift * norms[k]
            best = max(best, row[k])
        total = 0.0
        for k in range(row.shape[0]):
            row[k] = math.exp(row[k] - best)
            total += row[k]
        inv = 1.0 / total
        for k in range(row.shape[0]):
            row[k] *= inv


for _name in ("sgemm", "dgemm"):  # BLAS of scipy, by symbol name: compiled code that calls it can be cached
    llvm.add_symbol(f"ldensf_{_name}", get_cython_function_address("scipy.linalg.cython_blas", _name))
_SGEMM, _DGEMM = (types.ExternalFunction(f"ldensf_{name}", types.void(*([types.voidptr] * 13))) for name in ("sgemm", "dgemm"))


@njit(**JIT)
def _gemm(a, b, c, transpose_b, beta):
    """``c <- a @ op(b) + beta c`` (BLAS ?gemm; row-major 2-D views with unit last stride,
    ``op(b) = b.T`` if ``transpose_b``): a column-major ``c.T = op(b).T @ a.T``."""
    m, k = a.shape
    ints = np.array([c.shape[1], m, k, b.strides[0] // b.itemsize, a.strides[0] // a.itemsize,
                     c.strides[0] // c.itemsize], np.int32)
    chars = np.array([ord("T") if transpose_b else ord("N"), ord("N")], np.uint8)
    if a.itemsize == 4:
        scalars = np.array([1.0, beta], np.float32)
        _SGEMM(chars[0:].ctypes, chars[1:].ctypes, ints[0:].ctypes, ints[1:].ctypes, ints[2:].ctypes, scalars[0:].ctypes,
               b.ctypes, ints[3:].ctypes, a.ctypes, ints[4:].ctypes, scalars[1:].ctypes, c.ctypes, ints[5:].ctypes)
    else:
        scalars64 = np.array([1.0, beta], np.float64)
        _DGEMM(chars[0:].ctypes, chars[1:].ctypes, ints[0:].ctypes, ints[1:].ctypes, ints[2:].ctypes, scalars64[0:].ctypes,
               b.ctypes, ints[3:].ctypes, a.ctypes, ints[4:].ctypes, scalars64[1:].ctypes, c.ctypes, ints[5:].ctypes)


@njit(**JIT)
def _euler_columns(x, mixture, weights, prior, obs, inv_var, coef, clipped, clip, noise, k0, k1, step, first, c0, c1,
                   logits):
    """One Euler step of the samples ``x`` (J, d) (members ``first ..``) on the components
    ``c0 .. c1 - 1``, in place, tile by tile of ``TILE`` (each tile of the forecast read once):

    1. ``mean = weights @ prior`` on the tile (the forecast rows themselves without
       ``mixture``: member-paired);
    2. ``x <- x_factor x + score_factor score + noise_scale z``;
    3. ``logits = x @ prior.T`` over these components: their share of the next step's dot
       products (mixture only).

    ``coef`` = (a, 1 / beta2, damping, x_factor, score_factor, noise_scale, ...); ``noise`` the
    samples' normals (J, d) or empty (then the Philox normals of noise index ``step``);
    ``clipped``: clip the score to [-clip, clip].
    """
    J = x.shape[0]
    a, inv_b2, h, x_factor, score_factor, noise_scale = coef[0], coef[1], coef[2], coef[3], coef[4], coef[5]
    mean = np.empty((J, TILE), x.dtype)
    z = np.empty(TILE, x.dtype)
    words = np.empty((4, TILE // 4), np.uint32)
    pairs = np.empty((4, TILE // 4), x.dtype)
    for j0 in range(c0, c1, TILE):
        n = min(TILE, c1 - j0)
        tile = prior[:, j0:j0 + n]
        if mixture:
            _gemm(weights, tile, mean[:, :n], False, 0.0)
        else:
            mean[:, :n] = prior[first:first + J, j0:j0 + n]
        for r in range(J):
            xr, mr = x[r, j0:j0 + n], mean[r]
            if noise.shape[0] > 0:
                z[:n] = noise[r, j0:j0 + n]
            else:
                block_normals(z[:n], k0, k1, step, first + r, j0 // 4, words, pairs)
            for t in range(n):
                j = j0 + t
                score = (a * mr[t] - xr[t]) * inv_b2 + h * (obs[j] - xr[t]) * inv_var[j]
                if clipped:
                    score = min(max(score, -clip), clip)
                xr[t] = x_factor * xr[t] + score_factor * score + noise_scale * z[t]
        if mixture:
            _gemm(x[:, j0:j0 + n], tile, logits, True, 0.0 if j0 == c0 else 1.0)


@njit(parallel=True, **JIT)
def _analysis(prior, obs, inv_var, coefs, clipped, clip, noise, k0, k1, mixture, first, x):
    """All Euler steps for the samples ``x`` (J, d) of members ``first ..`` (``x`` holds the start,
    noise index 0, on entry). The components are split into chunks of ``CHUNK`` that run in
    parallel, each with its own single-threaded GEMMs over all J samples; the chunks' shares of
    the logits are summed in chunk order once per step (so no result depends on the thread count)."""
    J, d = x.shape
    K = prior.shape[0]
    chunks = (d + CHUNK - 1) // CHUNK
    norms = np.empty(K, prior.dtype)
    for k in range(K):
        norms[k] = np.dot(prior[k], prior[k])
    shares = np.zeros((chunks, J, K), prior.dtype)
    weights = np.empty((J, K), prior.dtype)
    if mixture:
        for c in prange(chunks):
            _gemm(x[:, c * CHUNK:min(d, (c + 1) * CHUNK)], prior[:, c * CHUNK:min(d, (c + 1) * CHUNK)], shares[c], True, 0.0)
    for i in range(coefs.shape[0]):
        coef = coefs[i]
        if mixture:
            weights[:] = shares[0]
            for c in range(1, chunks):
                weights += shares[c]
            _softmax_rows(weights, norms, coef[6], coef[7])
        step_noise = noise[i + 1, first:first + J] if noise.shape[1] > 0 else noise[0]
        for c in prange(chunks):
            _euler_columns(x, mixture, weights, prior, obs, inv_var, coef, clipped, clip, step_noise, k0, k1, i + 1, first,
                           c * CHUNK, min(d, (c + 1) * CHUNK), shares[c])


def analysis(prior, obs, inv_var, table, noise, seed, mixture, clip, rows) -> np.ndarray:
    """BLAS EnSF analysis (arguments as prepared by :func:`ldensf_hpc.kernels.ensf_update`)."""
    if not isinstance(prior, np.ndarray):  # CuPy arrays: the reference path's GEMMs, on their device
        return reference.analysis(prior, obs, inv_var, table, noise, seed, mixture, clip, rows)
    dtype = prior.dtype
    K, d = prior.shape
    first, J = rows.start, rows.stop - rows.start
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)
    if noise is None:
        x = np.empty((J, d), dtype)
        step_normals(x, k0, k1, np.int64(0), np.int64(first))  # the N(0, I) start at tau = 1
    else:
        x = noise[0, rows].copy()
    t = table.astype(np.float64)  # alpha, 1/beta2, 1/(2 beta2), x_factor, score_factor, damping, noise_scale
    coefs = np.stack([t[:, 0], t[:, 1], t[:, 5], t[:, 3], t[:, 4], t[:, 6], 2 * t[:, 0] * t[:, 2],
                      t[:, 0] ** 2 * t[:, 2]], axis=1).astype(dtype)
    noise = np.empty((1, 0, 0), dtype) if noise is None else noise
    with threadpool_limits(1, user_api="blas"):  # one BLAS thread inside each parallel chunk
        _analysis(prior, obs, inv_var, coefs, clip is not None, dtype.type(clip or 0.0), noise, k0, k1, mixture,
                  np.int64(first), x)
    return x

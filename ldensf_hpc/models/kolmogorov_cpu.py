"""Fused CPU passes of the Kolmogorov IF-RK4 step (the ``scipy`` backend), compiled with Numba.

The readable step of :class:`ldensf_hpc.models.kolmogorov.Kolmogorov` forms every product and
RK4 combination as whole-array NumPy expressions, one temporary (and one pass over memory) per
operator. Here each is one parallel pass over ``(member, k_y)`` rows, written into buffers kept
for the whole call; the FFTs stay scipy's (pocketfft with workers). Same expressions in the
same order, so the two agree to round-off (``tests/test_kolmogorov.py``).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

JIT = {"cache": True, "error_model": "numpy", "nogil": True}  # blocks of members run on threads


@njit(**JIT)
def spectra(w, ops, out):
    """``out[:, 0:2] = w * ops`` (velocity spectra), ``out[:, 2] = w`` (vorticity): ``(K, 3, ny, nx)``."""
    K, ny, nx = w.shape
    for r in range(K * ny):
        k, i = r // ny, r % ny
        for j in range(nx):
            a = w[k, i, j]
            out[k, 0, i, j] = a * ops[0, i, j]
            out[k, 1, i, j] = a * ops[1, i, j]
            out[k, 2, i, j] = a


@njit(**JIT)
def fluxes(g, out, speed):
    """``out = (u omega, v omega)`` from grid fields ``g = (u, v, omega)``; ``speed[k, i]`` the row's
    largest ``hypot(u, v)`` (for the CFL check; NaN propagates, no overflow)."""
    K, _, n, m = g.shape
    for r in range(K * n):
        k, i = r // n, r % n
        top = 0.0
        for j in range(m):
            u, v, om = g[k, 0, i, j], g[k, 1, i, j], g[k, 2, i, j]
            out[k, 0, i, j] = u * om
            out[k, 1, i, j] = v * om
            s = u * u + v * v
            top = s if s > top or s != s else top
        if top == math.inf:  # u^2 + v^2 overflowed (or a velocity is infinite): the row again, by hypot
            top = 0.0
            for j in range(m):
                top = max(top, math.hypot(g[k, 0, i, j], g[k, 1, i, j]))
            speed[k, i] = top
        else:
            speed[k, i] = math.sqrt(top)


@njit(**JIT)
def tendency(flux, ikx, iky, forcing, out):
    """``out = forcing - (ikx flux_x + iky flux_y)``, the explicit tendency N(omega_hat)."""
    K, _, ny, nx = flux.shape
    for r in range(K * ny):
        k, i = r // ny, r % ny
        for j in range(nx):
            out[k, i, j] = forcing[i, j] - (ikx[i, j] * flux[k, 0, i, j] + iky[i, j] * flux[k, 1, i, j])


@njit(**JIT)
def stage2(E2, w, c, k, out):
    """``out = E2 (w + c k1)``, the input of RK4 stage 2 (c = dt / 2)."""
    K, ny, nx = w.shape
    for r in range(K * ny):
        m, i = r // ny, r % ny
        for j in range(nx):
            out[m, i, j] = E2[m, i, j] * (w[m, i, j] + c * k[m, i, j])


@njit(**JIT)
def stage3(E2, w, c, k, out):
    """``out = E2 w + c k2``, the input of stage 3 (c = dt / 2)."""
    K, ny, nx = w.shape
    for r in range(K * ny):
        m, i = r // ny, r % ny
        for j in range(nx):
            out[m, i, j] = E2[m, i, j] * w[m, i, j] + c * k[m, i, j]


@njit(**JIT)
def stage4(E, E2, w, c, k, out):
    """``out = E w + c (E2 k3)``, the input of stage 4 (c = dt)."""
    K, ny, nx = w.shape
    for r in range(K * ny):
        m, i = r // ny, r % ny
        for j in range(nx):
            out[m, i, j] = E[m, i, j] * w[m, i, j] + c * (E2[m, i, j] * k[m, i, j])


@njit(**JIT)
def combine(E, E2, w, c, k1, k2, k3, k4, out):
    """``out = E w + c (E k1 + 2 E2 (k2 + k3) + k4)``, the IF-RK4 update with c = dt / 6."""
    K, ny, nx = w.shape
    for r in range(K * ny):
        m, i = r // ny, r % ny
        for j in range(nx):
            e, e2 = E[m, i, j], E2[m, i, j]
            out[m, i, j] = e * w[m, i, j] + c * (e * k1[m, i, j] + 2.0 * e2 * (k2[m, i, j] + k3[m, i, j]) + k4[m, i, j])


def finite_members(w) -> np.ndarray:
    """``(K,)`` True where a member's spectrum is finite."""
    return np.isfinite(w.view(w.real.dtype)).reshape(len(w), -1).all(axis=1)

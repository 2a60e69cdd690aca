"""Tsunami shallow water (LD-EnSF paper eq. 21) on an Arakawa C grid, batched over members.

Equations on the L x L basin, walls on all four sides (normal velocity 0)::

    d eta / dt = -div((H + eta) v)                      continuity, flux form
    d v / dt   = -g grad eta - f k x v,  f = f0 + beta (y - L/2)

Grid and state ``(K, 3, n, n)`` float64 = (eta, u, v), row index j along y,
column index i along x, spacing dx = L / n:

- ``eta[j, i]`` at the cell centre ((i + 1/2) dx, (j + 1/2) dx);
- ``u[j, i]`` on the east face of cell (j, i); column n-1 is the east wall
  (always 0) and the west wall face is implicit 0;
- ``v[j, i]`` on the north face of cell (j, i); row n-1 is the north wall
  (always 0) and the south wall face is implicit 0.

One time step (forward-backward, Mesinger & Arakawa 1976):

1. continuity with the donor-cell (upwind) flux of the total depth,
   F = u (H + eta_upwind), eta <- eta - dt/dx (div F). The fluxes telescope,
   so sum(eta) dx^2 is conserved to round-off with walls;
2. u <- u - g dt d(eta_new)/dx + f dt v_avg(old v);
3. v <- v - g dt d(eta_new)/dy - f dt u_avg(new u).

Steps 2-3 treat Coriolis like a symplectic Euler step: for uniform flow the
update matrix [[1, a], [-a, 1 - a^2]] (a = f dt) has determinant 1, so
inertial oscillations are neutral for f dt < 2. u_avg and v_avg are the
four-point averages onto the other face. Gravity waves are stable for
sqrt(g (H + max eta)) dt / dx <= 1/sqrt(2) (the 2-D forward-backward limit).

Backends (``cfg.backend``): "numpy" (readable reference, vectorised over K),
"numba" (one member through all steps per thread, state kept in cache),
"cupy" (one CUDA block per member, all steps in one launch: ``kernels/cuda/swe_advance.cu``),
"cuda_host" (that CUDA source and launch run on the CPU by host emulation, for tests).
All use the same expressions in the same order, so they agree to round-off.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit, prange

from .. import cuda_host
from ..backend import array_module, cupy_available
from ..errors import BackendError, ConfigError, InputError, SolverError


@dataclass
class SWEConfig:
    """Tsunami shallow water on an L x L basin (DESIGN.md, "Test cases")."""

    n: int = 150  # grid points per direction
    length: float = 1.0e6  # basin side L [m]
    depth: float = 100.0  # mean depth H [m]
    g: float = 9.81  # gravity [m s^-2]
    f0: float = 1.0e-4  # Coriolis parameter [s^-1]
    beta: float = 2.0e-11  # beta-plane gradient [m^-1 s^-1]
    cfl: float = 0.1  # dt = cfl * dx / sqrt(g H)
    n_steps: int = 2000  # solver steps per trajectory
    save_every: int = 5  # steps between stored frames
    bump_width: float = 5.0e4  # Gaussian bump sigma [m]
    bump_height: float = 1.0  # Gaussian bump amplitude [m]
    backend: str = "numba"  # numpy | numba | cupy | cuda_host (CPU emulation of the CUDA kernel)

CFL_LIMIT = 1.0 / math.sqrt(2.0)  # forward-backward gravity waves on a 2-D C grid


# --------------------------------------------------------------------------- numpy reference
def _advance_numpy(state, n_steps, H, r, gr, fdt_u, fdt_v):
    """Advance a copy of ``state`` by ``n_steps``; return it and each member's first bad step.

    ``r = dt/dx``, ``gr = g dt/dx``, ``fdt_u[j]``/``fdt_v[j]`` = f dt on u/v rows.
    A bad step is the first step after which the member holds a NaN/Inf (0: none);
    the run stops at that step.
    """
    state = np.array(state, dtype=np.float64)
    K, _, n, _ = state.shape
    work = np.zeros((K, n, n + 1)), np.zeros((K, n + 1, n)), np.zeros((K, n, n + 1))
    bad = np.zeros(K, dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by step
        for step in range(1, n_steps + 1):
            _step_numpy(state, H, r, gr, fdt_u, fdt_v, *work)
            finite = np.isfinite(state).reshape(K, -1).all(axis=1)
            if not finite.all():
                bad[~finite] = step
                break
    return state, bad


def _step_numpy(state, H, r, gr, fdt_u, fdt_v, fx, fy, u_pad):
    """One step of all members in place; ``fx``, ``fy``, ``u_pad`` are zeroed work arrays
    (face fluxes and u with one column per face, the wall faces staying 0)."""
    eta, u, v = state[:, 0], state[:, 1], state[:, 2]
    ue, vn = u[:, :, :-1], v[:, :-1, :]
    fx[:, :, 1:-1] = ue * (H + np.where(ue > 0, eta[:, :, :-1], eta[:, :, 1:]))
    fy[:, 1:-1, :] = vn * (H + np.where(vn > 0, eta[:, :-1, :], eta[:, 1:, :]))
    eta -= r * ((fx[:, :, 1:] - fx[:, :, :-1]) + (fy[:, 1:, :] - fy[:, :-1, :]))

    v_pair = v[:, :, :-1] + v[:, :, 1:]  # v summed along x onto u columns
    v_sum = v_pair.copy()
    v_sum[:, 1:] += v_pair[:, :-1]  # plus the row below (south wall: nothing)
    u[:, :, :-1] = u[:, :, :-1] - gr * (eta[:, :, 1:] - eta[:, :, :-1]) + fdt_u[:, None] * (0.25 * v_sum)

    u_pad[:, :, 1:] = u
    u_pair = u_pad[:, :, 1:] + u_pad[:, :, :-1]  # u summed along x onto v columns (west wall: 0)
    u_sum = u_pair[:, :-1] + u_pair[:, 1:]
    v[:, :-1, :] = v[:, :-1, :] - gr * (eta[:, 1:, :] - eta[:, :-1, :]) - fdt_v[:-1, None] * (0.25 * u_sum)


# --------------------------------------------------------------------------- numba kernel
@njit(cache=True)
def _advance_member(eta, u, v, n_steps, H, r, gr, fdt_u, fdt_v):
    """Advance one member in place; return the first step with a NaN/Inf (0: none).

    Row loops read both upwind candidates unconditionally so that they vectorise.
    """
    n = eta.shape[0]
    fx = np.zeros(n + 1)  # east-face fluxes of the current row, walls fx[0] = fx[n] = 0
    fy_south = np.zeros(n)
    fy_north = np.zeros(n)
    nonfinite = np.zeros(n)  # sums of value * 0.0: stay 0 unless a NaN/Inf is present
    for step in range(1, n_steps + 1):
        nonfinite[:] = 0.0
        fy_south[:] = 0.0
        for j in range(n):  # continuity, row by row; row j + 1 is still old
            for i in range(n - 1):
                ue, here, east = u[j, i], eta[j, i], eta[j, i + 1]
                fx[i + 1] = ue * (H + (here if ue > 0 else east))
            if j < n - 1:
                for i in range(n):
                    vn, here, north = v[j, i], eta[j, i], eta[j + 1, i]
                    fy_north[i] = vn * (H + (here if vn > 0 else north))
            else:
                fy_north[:] = 0.0
            for i in range(n):
                x = eta[j, i] - r * ((fx[i + 1] - fx[i]) + (fy_north[i] - fy_south[i]))
                eta[j, i] = x
                nonfinite[i] += x * 0.0
            fy_south, fy_north = fy_north, fy_south
        for j in range(n):  # u: new eta, old v (south wall: no row below j = 0)
            fu = fdt_u[j]
            for i in range(n - 1):
                v_sum = v[j, i] + v[j, i + 1]
                if j > 0:
                    v_sum = v_sum + (v[j - 1, i] + v[j - 1, i + 1])
                x = u[j, i] - gr * (eta[j, i + 1] - eta[j, i]) + fu * (0.25 * v_sum)
                u[j, i] = x
                nonfinite[i] += x * 0.0
        for j in range(n - 1):  # v: new eta, new u (west wall: no column left of i = 0)
            fv = fdt_v[j]
            for i in range(n):
                if i > 0:
                    u_sum = (u[j, i] + u[j, i - 1]) + (u[j + 1, i] + u[j + 1, i - 1])
                else:
                    u_sum = u[j, i] + u[j + 1, i]
                x = v[j, i] - gr * (eta[j + 1, i] - eta[j, i]) - fv * (0.25 * u_sum)
                v[j, i] = x
                nonfinite[i] += x * 0.0
        if nonfinite.sum() != 0.0:
            return step
    return 0


@njit(parallel=True, cache=True)
def _advance_members(state, out, n_steps, H, r, gr, fdt_u, fdt_v, bad):
    for k in prange(state.shape[0]):
        out[k] = state[k]  # copied by the thread that steps it: the member stays in its cache
        bad[k] = _advance_member(out[k, 0], out[k, 1], out[k, 2], n_steps, H, r, gr, fdt_u, fdt_v)


def _advance_numba(state, n_steps, H, r, gr, fdt_u, fdt_v):
    state = np.ascontiguousarray(state, dtype=np.float64)
    out = np.empty_like(state)
    bad = np.zeros(state.shape[0], dtype=np.int64)
    _advance_members(state, out, n_steps, H, r, gr, fdt_u, fdt_v, bad)
    return out, bad


# --------------------------------------------------------------------------- CUDA kernel
CUDA_SOURCE = Path(__file__).resolve().parents[2] / "kernels" / "cuda" / "swe_advance.cu"
CUDA_THREADS = 512
"""Threads per block (one block per member) of ``swe_advance``; any count gives the same result."""


@functools.cache
def _cuda_kernel():
    import cupy

    return cupy.RawKernel(CUDA_SOURCE.read_text(), "swe_advance", options=("--fmad=false",))  # round like numpy


def _cuda_arguments(xp, state, n_steps, H, r, gr, fdt_u, fdt_v):
    """(state copy, bad, the arguments of ``swe_advance`` in order) on array module ``xp``."""
    state = xp.array(state, dtype=xp.float64, order="C")  # a C-contiguous copy, stepped in place
    K, _, n, _ = state.shape
    bad = xp.zeros(K, dtype=xp.int64)  # set by the kernel
    return state, bad, (state, xp.empty((K, 2, n, n)), xp.asarray(fdt_u, dtype=xp.float64),
                        xp.asarray(fdt_v, dtype=xp.float64), np.int32(n), np.int32(n_steps), np.float64(H),
                        np.float64(r), np.float64(gr), bad)


def _advance_cupy(state, n_steps, H, r, gr, fdt_u, fdt_v, threads=CUDA_THREADS):
    import cupy

    state, bad, arguments = _cuda_arguments(cupy, state, n_steps, H, r, gr, fdt_u, fdt_v)
    if len(state):
        _cuda_kernel()((len(state),), (threads,), arguments)
    return state, bad.get()


def _advance_cuda_host(state, n_steps, H, r, gr, fdt_u, fdt_v, threads=CUDA_THREADS):
    """The CUDA kernel and launch run on the CPU by host emulation (:mod:`ldensf_hpc.cuda_host`)."""
    state, bad, arguments = _cuda_arguments(np, state, n_steps, H, r, gr, fdt_u, fdt_v)
    if len(state):
        cuda_host.launch("swe_advance", len(state), threads, arguments)
    return state, bad


BACKENDS = {"numpy": _advance_numpy, "numba": _advance_numba, "cupy": _advance_cupy, "cuda_host": _advance_cuda_host}


# --------------------------------------------------------------------------- model
class ShallowWater:
    """Tsunami SWE truth solver; parameters u = bump centre (x, y) in metres.

    ``step(state, params, n_steps)`` checks the CFL limit and positive depth before
    stepping and checks every step for NaN/Inf, so the step it reports is exact.
    """

    name = "swe"
    field_names = ("eta", "u", "v")
    param_names = ("bump_x", "bump_y")

    def __init__(self, cfg):
        _validate(cfg)
        self.cfg = cfg
        n, L = cfg.n, cfg.length
        self.dx = L / n
        self.dt = cfg.cfl * self.dx / math.sqrt(cfg.g * cfg.depth)
        self.grid = {"n": n, "dx": self.dx, "length": L, "units": "m"}
        self.margin = 2.0 * cfg.bump_width  # bump centres stay this far from the walls
        y_u = (np.arange(n) + 0.5) * self.dx  # rows of eta and u
        y_v = (np.arange(n) + 1.0) * self.dx  # rows of v
        self._fdt_u = (cfg.f0 + cfg.beta * (y_u - L / 2)) * self.dt
        self._fdt_v = (cfg.f0 + cfg.beta * (y_v - L / 2)) * self.dt
        self._advance = BACKENDS[cfg.backend]

    # -- protocol
    def sample_params(self, rng, n):
        """Bump centres uniform in [2 sigma, L - 2 sigma]^2, shape ``(n, 2)``."""
        return rng.uniform(self.margin, self.cfg.length - self.margin, size=(n, 2))

    def initial_state(self, params, rng=None):
        """eta = h exp(-|x - c|^2 / (2 sigma^2)), u = v = 0; ``rng`` is unused (deterministic)."""
        params = np.asarray(params, dtype=np.float64)
        if params.ndim != 2 or params.shape[1] != 2:
            raise InputError(f"SWE parameters must have shape (K, 2) (bump x, y), got {params.shape}")
        n, cfg = self.cfg.n, self.cfg
        centres = (np.arange(n) + 0.5) * self.dx
        dx2 = (centres[None, :] - params[:, 0, None]) ** 2  # (K, n) along x
        dy2 = (centres[None, :] - params[:, 1, None]) ** 2  # (K, n) along y
        state = np.zeros((len(params), 3, n, n))
        state[:, 0] = cfg.bump_height * np.exp(-(dy2[:, :, None] + dx2[:, None, :]) / (2 * cfg.bump_width**2))
        return self._to_device(state)

    def step(self, state, params=None, n_steps: int = 1):
        """Advance all members ``n_steps`` steps; ``params`` (the bump centres) is unused.

        Raises SolverError if dt breaks the CFL limit or H + eta <= 0 before stepping,
        or if a NaN/Inf appears (naming the step, counted from 1 within this call).
        """
        if int(n_steps) != n_steps or n_steps < 0:
            raise InputError(f"n_steps must be a non-negative integer, got {n_steps!r}")
        self._check_state(state)
        state, bad = self._advance(state, int(n_steps), self.cfg.depth, self.dt / self.dx,
                                   self.cfg.g * self.dt / self.dx, self._fdt_u, self._fdt_v)
        if bad.any():
            first = int(bad[bad > 0].min())
            members = np.flatnonzero(bad == first).tolist()
            raise SolverError(f"shallow water: NaN/Inf appeared at step {first} of {n_steps} in this call "
                              f"(member(s) {members}); check the time step and the initial state")
        return state

    def to_fields(self, state):
        """The fields (K, 3, n, n) = (eta, u on east faces, v on north faces), as stored."""
        return state

    def from_fields(self, fields):
        """A state from fields (K, 3, n, n); wall faces are set to 0 (e.g. after an analysis)."""
        xp = array_module(fields)
        n = self.cfg.n
        if fields.ndim != 4 or fields.shape[1:] != (3, n, n):
            raise InputError(f"SWE fields must have shape (K, 3, {n}, {n}), got {tuple(fields.shape)}")
        state = xp.array(fields, dtype=xp.float64)
        state[:, 1, :, -1] = 0.0
        state[:, 2, -1, :] = 0.0
        return state

    # -- checks
    def _check_state(self, state):
        xp = array_module(state)
        cfg, n = self.cfg, self.cfg.n
        if state.ndim != 4 or state.shape[1:] != (3, n, n):
            raise InputError(f"SWE state must have shape (K, 3, {n}, {n}), got {tuple(state.shape)}")
        if bool(xp.any(state[:, 1, :, -1] != 0)) or bool(xp.any(state[:, 2, -1, :] != 0)):
            raise InputError("SWE state has nonzero velocity on a wall face (u[..., -1], v[..., -1, :]); "
                             "build states with from_fields")
        if state.shape[0] == 0:
            return
        eta = state[:, 0]
        low = float(xp.nanmin(eta))  # NaN is left to the per-step check
        if cfg.depth + low <= 0:
            k, j, i = np.unravel_index(int(xp.nanargmin(eta)), eta.shape)
            raise SolverError(f"shallow water: total depth H + eta = {cfg.depth + low:.4g} m <= 0 "
                              f"(member {k}, cell j={j}, i={i}) before stepping; the model needs H + eta > 0")
        speed = math.sqrt(cfg.g * (cfg.depth + max(float(xp.nanmax(eta)), 0.0)))
        dt_max = CFL_LIMIT * self.dx / speed
        if self.dt > dt_max:
            raise SolverError(f"shallow water: dt = {self.dt:.4g} s exceeds the CFL limit {dt_max:.4g} s "
                              f"(wave speed sqrt(g (H + max eta)) = {speed:.4g} m/s, dx = {self.dx:.4g} m, "
                              f"limit dt <= dx / (sqrt(2) speed)); lower swe.cfl")

    def _to_device(self, state):
        if self.cfg.backend == "cupy":
            import cupy

            return cupy.asarray(state)
        return state


def _validate(cfg) -> None:
    """Reject SWE configs that cannot run, naming the field."""
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"unknown swe.backend {cfg.backend!r}; choose one of {', '.join(BACKENDS)}")
    if cfg.backend == "cupy" and not cupy_available():
        raise BackendError("swe.backend 'cupy' requested but no usable CUDA GPU/CuPy was found")
    if cfg.n < 4:
        raise ConfigError(f"swe.n must be >= 4, got {cfg.n}")
    for field in ("length", "depth", "g", "bump_width"):
        if not getattr(cfg, field) > 0:
            raise ConfigError(f"swe.{field} must be positive, got {getattr(cfg, field)}")
    if not 0 < cfg.cfl <= CFL_LIMIT:
        raise ConfigError(f"swe.cfl must be in (0, 1/sqrt(2) = {CFL_LIMIT:.4f}] for forward-backward "
                          f"stability, got {cfg.cfl}")
    if not cfg.depth + min(cfg.bump_height, 0.0) > 0:
        raise ConfigError(f"swe.bump_height {cfg.bump_height} would make the depth H + eta negative "
                          f"(H = {cfg.depth})")
    if not 4 * cfg.bump_width < cfg.length:
        raise ConfigError(f"swe.bump_width {cfg.bump_width} is too wide for the basin: bump centres keep "
                          f"2 widths from each wall, so 4 widths must be < swe.length = {cfg.length}")
    if not (math.isfinite(cfg.f0) and math.isfinite(cfg.beta)):
        raise ConfigError(f"swe.f0 and swe.beta must be finite, got {cfg.f0}, {cfg.beta}")
    if cfg.n_steps < 0 or cfg.save_every < 1:
        raise ConfigError(f"swe.n_steps must be >= 0 and swe.save_every >= 1, got {cfg.n_steps}, {cfg.save_every}")

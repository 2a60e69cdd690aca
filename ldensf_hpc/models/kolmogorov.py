"""Kolmogorov flow: forced 2-D Navier-Stokes on [0, 2 pi]^2 in vorticity form (paper eq. 22).

Taking the curl of eq. 22 with f = F sin(k_f y) x-hat - drag v (F = 1) gives

    d omega/dt + v . grad omega = nu lap omega - drag omega - F k_f cos(k_f y),   nu = 1 / Re,

with omega = d v/dx - d u/dy and v = (u, v) = (d psi/dy, -d psi/dx), lap psi = -omega.

Discretisation (pseudo-spectral, n x n points, real FFTs):

- state: the vorticity spectrum ``omega_hat = rfft2(omega)``, shape ``(K, n, n // 2 + 1)``
  complex, axes (k_y, k_x); it holds no mean flow (the k = 0 velocity mode is zero)
  and only resolved modes |k_x|, |k_y| <= (n - 1) // 3 (2/3 rule);
- advection in divergence form d(u omega)/dx + d(v omega)/dy, products taken on the grid
  and dealiased by the 2/3 rule;
- viscosity and drag, L = -nu |k|^2 - drag per member, by an integrating factor (exact
  for the linear part, e.g. Taylor-Green decay); advection and forcing by classical RK4
  on the transformed variable (Lawson's IF-RK4, 4th order in time).

Fields (``to_fields``) are the velocities ``(K, 2, n, n)`` = (u, v), indexed ``[..., iy, ix]``
at x_j = y_j = 2 pi j / n. FFT backends are chosen by name from :data:`FFT_BACKENDS`: "numpy"
(the readable reference: the step's array code written once against ``xp``, also CuPy's:
"cupy"), "scipy" (scipy.fft with workers, the elementwise passes fused by the Numba kernels
of :mod:`ldensf_hpc.models.kolmogorov_cpu`) and "ducc0" (the same with ducc0's transforms
writing into preallocated buffers; optional package). All agree to round-off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..backend import get_xp, to_numpy
from ..errors import ConfigError, SolverError


@dataclass
class KolmogorovConfig:
    """Forced 2-D Navier-Stokes on [0, 2pi]^2 in vorticity form."""

    n: int = 150
    dt: float = 0.004
    steps_per_frame: int = 10  # frames every 0.04
    warmup_frames: int = 100  # dropped
    n_frames: int = 200  # kept
    re_min: float = 500.0
    re_max: float = 1500.0
    drag: float = 0.1  # linear drag coefficient
    forcing_wavenumber: int = 4  # f = sin(k y) x-hat
    backend: str = "scipy"  # numpy (readable reference) | scipy (fused passes) | ducc0 (fused, no allocations) | cupy
    workers: int = 2  # scipy.fft workers
    initial_seed: int | None = 0  # one initial vorticity for all trajectories (None: one per trajectory)


BLOCK = 2
"""Members per block of the fused CPU step: its buffers (~3 MB per member at 150^2) stay in cache; 1-2 measured
fastest on 2 Zen 4 cores (K = 8: 7.4 ms per step at 2, 17.8 at 8; K = 100: 82 ms at 2, 129 at 8)."""
MAX_CFL = 1.0  # max |v| dt / dx accepted before a step (RK4 + 2/3-dealiased spectral advection)
INITIAL_PEAK_WAVENUMBER = 4.0  # initial vorticity spectrum ~ exp(-|k|^2 / (2 k_p^2)), |k| <= 2 k_p
INITIAL_RMS_SPEED = 1.0  # sqrt(<u^2 + v^2>) of the initial state


@dataclass(frozen=True)
class SpectralBackend:
    """An array module plus the real 2-D FFT pair over the last two axes."""

    name: str
    xp: object
    rfft2: Callable  # rfft2(a, out=None) -> complex (..., n, n // 2 + 1)
    irfft2: Callable  # irfft2(a, n, out=None) -> real (..., n, n); ``out`` is used where the library can
    fused: bool = False  # elementwise passes by the Numba kernels of kolmogorov_cpu (NumPy arrays)


def _numpy_fft(workers: int) -> SpectralBackend:
    return SpectralBackend("numpy", np, lambda a, out=None: np.fft.rfft2(a),
                           lambda a, n, out=None: np.fft.irfft2(a, s=(n, n)))


def _scipy_fft(workers: int) -> SpectralBackend:
    import scipy.fft

    return SpectralBackend(
        "scipy",
        np,
        lambda a, out=None: scipy.fft.rfft2(a, workers=workers),
        lambda a, n, out=None: scipy.fft.irfft2(a, s=(n, n), workers=workers),
        fused=True,
    )


def _ducc0_fft(workers: int) -> SpectralBackend:
    """ducc0's FFTs (pocketfft's successor, optional: ``pip install ducc0``) writing into the step's
    buffers: no array is allocated per transform, which on CPUs costs as much as the transform."""
    try:
        import ducc0.fft as fft
    except ImportError:
        raise ConfigError("kolmogorov.backend=ducc0 needs the ducc0 package: pip install ducc0 "
                          "(or use kolmogorov.backend=scipy)") from None

    def rfft2(a, out=None):
        return fft.r2c(a, axes=(-2, -1), forward=True, inorm=0, out=out, nthreads=workers)

    def irfft2(a, n, out=None):
        return fft.c2r(a, axes=(-2, -1), lastsize=n, forward=False, inorm=2, out=out, nthreads=workers)

    return SpectralBackend("ducc0", np, rfft2, irfft2, fused=True)


def _cupy_fft(workers: int) -> SpectralBackend:
    cp = get_xp("cupy")  # raises BackendError without a usable GPU
    return SpectralBackend("cupy", cp, lambda a, out=None: cp.fft.rfft2(a),
                           lambda a, n, out=None: cp.fft.irfft2(a, s=(n, n)))


FFT_BACKENDS: dict[str, Callable[[int], SpectralBackend]] = {
    "numpy": _numpy_fft,
    "scipy": _scipy_fft,
    "ducc0": _ducc0_fft,
    "cupy": _cupy_fft,
}


def fft_backend(name: str, workers: int = 1) -> SpectralBackend:
    """The FFT backend called ``name`` (one of :data:`FFT_BACKENDS`)."""
    if name not in FFT_BACKENDS:
        raise ConfigError(f"kolmogorov.backend: unknown FFT backend {name!r}; choose one of {', '.join(FFT_BACKENDS)}")
    return FFT_BACKENDS[name](workers)


def _check_config(cfg) -> None:
    problems = []
    if cfg.n < 8:
        problems.append(f"n must be >= 8, got {cfg.n}")
    if not cfg.dt > 0:
        problems.append(f"dt must be positive, got {cfg.dt}")
    if cfg.steps_per_frame < 1 or cfg.n_frames < 1 or cfg.warmup_frames < 0:
        problems.append("steps_per_frame and n_frames must be >= 1 and warmup_frames >= 0")
    if not 0 < cfg.re_min <= cfg.re_max:
        problems.append(f"need 0 < re_min <= re_max, got re_min={cfg.re_min}, re_max={cfg.re_max}")
    if cfg.drag < 0:
        problems.append(f"drag must be >= 0, got {cfg.drag}")
    if not 0 <= cfg.forcing_wavenumber <= (cfg.n - 1) // 3:
        problems.append(
            f"forcing_wavenumber must be in [0, {(cfg.n - 1) // 3}] (resolved after 2/3 dealiasing on n={cfg.n}), "
            f"got {cfg.forcing_wavenumber}"
        )
    if cfg.workers < 1:
        problems.append(f"workers must be >= 1, got {cfg.workers}")
    if problems:
        raise ConfigError("kolmogorov: " + "; ".join(problems))


def wavenumbers(n: int):
    """Integer wavenumbers ``(ky, kx)`` on the rfft2 grid, shapes ``(n, 1)`` and ``(1, n // 2 + 1)``."""
    return np.fft.fftfreq(n, 1.0 / n)[:, None], np.fft.rfftfreq(n, 1.0 / n)[None, :]


def energy_spectrum(fields):
    """Shell-summed kinetic energy spectrum E(k) of velocity fields ``(K, 2, n, n)``.

    Shells are |k| rounded to the nearest integer, ``k = 0, 1, ...`` up to the grid's corner;
    returns host arrays ``(k, E)``, ``E`` of shape ``(K, len(k))``, normalised so that
    ``E.sum(axis=1) = 1/2 <u^2 + v^2>`` (grid mean, Parseval) per member.
    """
    velocity = to_numpy(fields)
    if velocity.ndim != 4 or velocity.shape[1] != 2 or velocity.shape[2] != velocity.shape[3]:
        raise SolverError(f"energy_spectrum needs velocities of shape (K, 2, n, n), got {velocity.shape}")
    n = velocity.shape[-1]
    ky, kx = wavenumbers(n)
    density = 0.5 * np.sum(np.abs(np.fft.rfft2(velocity)) ** 2, axis=1) / n**4  # (K, n, n//2+1)
    density[..., 1 : (n + 1) // 2] *= 2.0  # rfft2 stores each kx > 0 (below Nyquist) once for +-kx
    shell = np.rint(np.sqrt(kx**2 + ky**2)).astype(int)
    shell = np.broadcast_to(shell, density.shape[1:]).ravel()
    k = np.arange(shell.max() + 1)
    E = np.stack([np.bincount(shell, weights=d.ravel(), minlength=k.size) for d in density])
    return k, E


class Kolmogorov:
    """Batched pseudo-spectral Kolmogorov-flow solver; parameter ``Re`` per member, params ``(K, 1)``."""

    name = "kolmogorov"
    field_names = ("u", "v")
    param_names = ("Re",)

    def __init__(self, cfg):
        _check_config(cfg)
        self.cfg = cfg
        self.dt = cfg.dt
        self.n = n = cfg.n
        self.fft = fft_backend(cfg.backend, cfg.workers)
        self._block_fft = fft_backend(cfg.backend, 1) if self.fft.fused else None  # one block per thread
        xp = self.fft.xp
        self.grid = {"n": n, "length": 2 * math.pi, "dx": 2 * math.pi / n, "units": "nondimensional"}
        ky, kx = wavenumbers(n)
        k2 = kx**2 + ky**2
        kcut = (n - 1) // 3
        resolved = (np.abs(kx) <= kcut) & (np.abs(ky) <= kcut)
        inv_k2 = np.divide(1.0, k2, out=np.zeros_like(k2), where=k2 > 0)
        # (u, v, omega)_hat = ops * omega_hat; Nyquist rows/columns lie outside `resolved`.
        self._velocity_ops = xp.asarray(np.stack([1j * ky * inv_k2, -1j * kx * inv_k2]) * resolved)
        self._field_ops = xp.concatenate([self._velocity_ops, xp.ones((1,) + k2.shape, complex)])
        self._ikx = xp.asarray(1j * kx * resolved)
        self._iky = xp.asarray(1j * ky * resolved)
        self._k2 = xp.asarray(k2)
        kf = cfg.forcing_wavenumber  # curl f = -kf cos(kf y): rfft2 coefficient -kf n^2 / 2 at (+-kf, 0)
        forcing_hat = np.zeros(k2.shape, complex)
        forcing_hat[[kf % n, -kf % n], 0] = -kf * n * n / 2.0
        self._forcing_hat = xp.asarray(forcing_hat)

    # -- protocol -----------------------------------------------------------------------
    def sample_params(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Re ~ U(re_min, re_max), shape ``(n, 1)``."""
        return rng.uniform(self.cfg.re_min, self.cfg.re_max, size=(n, 1))

    def initial_state(self, params, rng: np.random.Generator | None = None):
        """Random smooth vorticity, deterministic.

        With ``cfg.initial_seed`` set (default), every member starts from the same field drawn
        from that seed, so after the warm-up the flow depends on Re alone, the one parameter
        the surrogates see (paper §4); with ``initial_seed: null`` each member gets its own
        draw from ``rng``. Gaussian Fourier coefficients for 1 <= |k| <= 2 k_p with amplitude
        exp(-|k|^2 / (2 k_p^2)), k_p = 4 (independent of n, cut at the 2/3 limit),
        scaled to an rms speed of 1.
        """
        K = self._members(params).shape[0]
        shared = self.cfg.initial_seed is not None
        if shared:
            rng = np.random.default_rng(self.cfg.initial_seed)
        rng = rng if rng is not None else np.random.default_rng(0)
        draws = 1 if shared else K
        n, kp = self.n, INITIAL_PEAK_WAVENUMBER
        band = min(int(2 * kp), (n - 1) // 3)
        kk = np.arange(-band, band + 1)
        kyb, kxb = kk[:, None], kk[None, :]
        kb2 = kxb**2 + kyb**2
        amp = np.where((kb2 >= 1) & (kb2 <= (2 * kp) ** 2), np.exp(-kb2 / (2 * kp**2)), 0.0)
        shape = (draws, kk.size, kk.size)
        coeff = np.broadcast_to(amp * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)), (K, *shape[1:]))
        full = np.zeros((K, n, n), complex)
        full[:, kyb % n, kxb % n] = coeff
        omega = np.real(np.fft.ifft2(full))  # the real part keeps the Hermitian-symmetric half
        xp = self.fft.xp
        omega_hat = self.fft.rfft2(xp.asarray(omega))
        rms_speed = xp.sqrt(xp.mean(self.to_fields(omega_hat) ** 2, axis=(2, 3)).sum(axis=1))
        return omega_hat * (INITIAL_RMS_SPEED / rms_speed)[:, None, None]

    def step(self, state, params, n_steps: int = 1):
        """Advance every member ``n_steps`` steps of IF-RK4 (Lawson) with step ``dt``.

        With L = -nu |k|^2 - drag, E = exp(L dt), E2 = exp(L dt / 2) and N the advection plus
        forcing tendency: k1 = N(w), k2 = N(E2 (w + dt/2 k1)), k3 = N(E2 w + dt/2 k2),
        k4 = N(E w + dt E2 k3), w <- E w + dt/6 (E k1 + 2 E2 (k2 + k3) + k4).
        """
        xp, dt = self.fft.xp, self.dt
        w = self._check_state(state)
        if int(n_steps) != n_steps or n_steps < 0:
            raise SolverError(f"Kolmogorov step: n_steps must be an integer >= 0, got {n_steps}")
        nu = 1.0 / self._members(params, len(w))
        linear = -nu[:, None, None] * self._k2 - self.cfg.drag
        E, E2 = xp.exp(linear * dt), xp.exp(linear * (0.5 * dt))
        if self.fft.fused:
            w = self._step_fused(w, E, E2, int(n_steps))
        for i in range(0 if self.fft.fused else int(n_steps)):
            k1 = self.tendency(w, check_step=i)
            k2 = self.tendency(E2 * (w + (0.5 * dt) * k1))
            k3 = self.tendency(E2 * w + (0.5 * dt) * k2)
            k4 = self.tendency(E * w + dt * (E2 * k3))
            w = E * w + (dt / 6.0) * (E * k1 + 2.0 * E2 * (k2 + k3) + k4)
        bad = ~xp.all(xp.isfinite(w), axis=(1, 2))
        if bool(xp.any(bad)):
            raise SolverError(
                f"Kolmogorov solver: member(s) {np.flatnonzero(to_numpy(bad)).tolist()} became NaN/Inf "
                f"in step {int(n_steps) - 1} (counting from 0 in this call)"
            )
        return w

    def to_fields(self, state):
        """Velocities (u, v), shape ``(K, 2, n, n)``, from the vorticity spectrum."""
        w = self._check_state(state)
        return self.fft.irfft2(w[:, None] * self._velocity_ops, self.n)

    def from_fields(self, fields):
        """Vorticity spectrum (curl of the velocity), projected onto the resolved, mean-free modes."""
        xp = self.fft.xp
        fields = xp.asarray(fields)
        if fields.ndim != 4 or fields.shape[1:] != (2, self.n, self.n):
            raise SolverError(f"Kolmogorov fields must have shape (K, 2, {self.n}, {self.n}), got {fields.shape}")
        velocity_hat = self.fft.rfft2(fields)
        return self._ikx * velocity_hat[:, 1] - self._iky * velocity_hat[:, 0]

    def tendency(self, w, check_step: int | None = None):
        """N(omega_hat) = -(2/3-dealiased) div(v omega) + curl f, the explicit part of the step.

        Products are formed on the grid from (u, v, omega); with ``check_step`` the CFL number
        and finiteness of (u, v) are checked first (see :meth:`step`).
        """
        xp = self.fft.xp
        u, v, omega = self.fft.irfft2(w[:, None] * self._field_ops, self.n).transpose(1, 0, 2, 3)
        if check_step is not None:
            self._check_cfl(to_numpy(xp.max(xp.hypot(u, v), axis=(1, 2))), check_step)
        flux = self.fft.rfft2(xp.stack([u * omega, v * omega], axis=1))
        return self._forcing_hat - (self._ikx * flux[:, 0] + self._iky * flux[:, 1])

    def _step_fused(self, w, E, E2, n_steps: int):
        """The IF-RK4 steps of :meth:`step`, members in blocks of :data:`BLOCK` (their buffers stay in
        cache), blocks on ``workers`` threads (each block's FFTs in one thread; one block: all threads)."""
        from concurrent.futures import ThreadPoolExecutor

        w = np.array(w, order="C")  # a copy: the buffers are swapped, the caller's state is never written
        blocks = [slice(a, min(a + BLOCK, len(w))) for a in range(0, len(w), BLOCK)]
        threads = min(self.cfg.workers, len(blocks))
        fft = self.fft if threads == 1 else self._block_fft

        def advance(rows):
            return self._advance_block(w[rows], E[rows], E2[rows], n_steps, fft, rows.start)

        if threads == 1:
            return np.concatenate([advance(rows) for rows in blocks])
        with ThreadPoolExecutor(threads) as pool:
            return np.concatenate(list(pool.map(advance, blocks)))

    def _advance_block(self, w, E, E2, n_steps: int, fft: SpectralBackend, first: int):
        """``n_steps`` IF-RK4 steps of the members ``w`` (``first`` is the first one's index, for messages)
        with every elementwise pass fused (:mod:`.kolmogorov_cpu`) and all buffers allocated once."""
        from . import kolmogorov_cpu as cpu

        dt, n = self.dt, self.n
        k1, k2, k3, k4, stage, new = (np.empty_like(w) for _ in range(6))
        spectra = np.empty((len(w), 3, *w.shape[1:]), w.dtype)
        grid = np.empty((len(w), 3, n, n), w.real.dtype)
        products = np.empty((len(w), 2, n, n), w.real.dtype)
        flux = np.empty((len(w), 2, *w.shape[1:]), w.dtype)
        speed = np.empty((len(w), n), w.real.dtype)

        def tendency(state, out, check_step=None):
            cpu.spectra(state, self._velocity_ops, spectra)
            cpu.fluxes(fft.irfft2(spectra, n, grid), products, speed)
            if check_step is not None:
                self._check_cfl(speed.max(axis=1), check_step, first)
            cpu.tendency(fft.rfft2(products, flux), self._ikx, self._iky, self._forcing_hat, out)

        w = w.copy()
        for i in range(n_steps):
            tendency(w, k1, check_step=i)
            cpu.stage2(E2, w, 0.5 * dt, k1, stage)
            tendency(stage, k2)
            cpu.stage3(E2, w, 0.5 * dt, k2, stage)
            tendency(stage, k3)
            cpu.stage4(E, E2, w, dt, k3, stage)
            tendency(stage, k4)
            cpu.combine(E, E2, w, dt / 6.0, k1, k2, k3, k4, new)
            w, new = new, w
        return w

    # -- internals ----------------------------------------------------------------------
    def _check_cfl(self, speed, step: int, first: int = 0) -> None:
        """Raise before ``step`` if a member's largest speed ``speed (K,)`` is NaN/Inf or gives
        max|v| dt/dx > MAX_CFL (members counted from ``first``)."""
        cfl = np.asarray(speed) * self.dt / self.grid["dx"]
        bad = (first + np.flatnonzero(~np.isfinite(cfl))).tolist()
        if bad and step == 0:
            raise SolverError(f"Kolmogorov solver: the state of member(s) {bad} contains NaN/Inf")
        if bad:
            raise SolverError(
                f"Kolmogorov solver: member(s) {bad} became NaN/Inf in step {step - 1} (counting from 0 in this call)"
            )
        if cfl.max() > MAX_CFL:
            member = first + int(np.argmax(cfl))
            raise SolverError(
                f"Kolmogorov solver: CFL number max|v| dt/dx = {cfl.max():.3g} > {MAX_CFL} (member {member}, "
                f"before step {step}); reduce kolmogorov.dt (now {self.dt})"
            )

    def _members(self, params, K: int | None = None):
        xp = self.fft.xp
        re = xp.asarray(params, dtype=float)
        if re.ndim != 2 or re.shape[1] != 1 or (K is not None and re.shape[0] != K):
            want = f"({K}, 1)" if K is not None else "(K, 1)"
            raise SolverError(f"Kolmogorov params must be Re with shape {want}, got {tuple(re.shape)}")
        if not bool(xp.all(re > 0)):
            raise SolverError("Kolmogorov params: Re must be positive")
        return re[:, 0]

    def _check_state(self, state):
        shape = (self.n, self.n // 2 + 1)
        if getattr(state, "ndim", 0) != 3 or tuple(state.shape[1:]) != shape:
            raise SolverError(
                f"Kolmogorov state must be a vorticity spectrum of shape (K, {shape[0]}, {shape[1]}), "
                f"got {getattr(state, 'shape', type(state))}"
            )
        return state

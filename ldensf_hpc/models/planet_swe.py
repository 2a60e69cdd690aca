"""Forced rotating shallow water on the sphere: the LEVDA paper's atmospheric case (§4.1, The Well's planetswe).

Equations (radius a, rotation Omega, gravity g, mean depth H, orography h_s, hyperviscosity nu)::

    du/dt = -(zeta + f) k x u - grad(g h + |u|^2 / 2) - nu lap^2 u      (u.grad u in vector-invariant form)
    dh/dt = -div((H + h - h_s) u) + h_f - nu lap^2 h

with f = 2 Omega sin(lat) and the unknown forcing (m per hour, per member ``(hf0, sigma)``)::

    h_f = hf0 cos(lon - lon_c(t)) exp(-(lat - lat_c(t))^2 / sigma^2),
    lon_c = 2 pi t / day,  lat_c = 0.4 sin(2 pi t / year)   (day = 24 h, model year = 1008 h).

Taking curl and divergence (zeta = k.curl u, delta = div u, q = zeta + f)::

    d zeta/dt = -div(q u),   d delta/dt = k.curl(q u) - lap(g h + |u|^2 / 2),   each - nu lap^2.

Discretisation (spectral transform): triangular truncation at degree ``lmax`` on a Gauss-Legendre
grid ``nlat x nlon``; with nlat >= (3 lmax + 1) / 2 and nlon >= 3 lmax + 1 the quadratic products
are alias-free. Transforms are ducc0's spherical harmonic transforms (spin 0 for scalars, spin 1 for
vectors: the synthesis of (E, B) = sqrt(l (l + 1)) (chi, psi)_lm is grad chi + r x grad psi on the
unit sphere). Hyperviscosity is matched to a Laplacian viscosity ``viscosity`` at degree
``viscosity_l`` (the planetswe generator's nu = 1e5 m^2/s / 32^2 in units of a) and taken exactly by
an integrating factor; the rest by classical RK4 (Lawson's IF-RK4). Mass is conserved to round-off
(the l = 0 height tendency is a divergence, and the forcing has no l = 0 part: only m = 1).

State: complex ``(K, 3, nalm)`` = (zeta, delta, h)_lm in ducc0's order (m-major, l = m ... lmax). The
l = 0 coefficient of delta (zero for every velocity field on a sphere) holds the model time t [s],
which the forcing needs; :meth:`PlanetSWE.with_clock` carries it over to a state rebuilt from fields.
Fields: ``(K, 3, nlat, nlon)`` = (h, u, v), height perturbation [m] and eastward / northward wind
[m/s]; rows run from north to south (the Gauss-Legendre latitudes), columns lon_i = 2 pi i / nlon.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, SolverError

HOUR = 3600.0
MAX_CFL = 2.0
"""Largest accepted (gravity-wave + wind speed) dt sqrt(lmax (lmax + 1)) / a; RK4 is stable to 2.8."""
FORCING_LAT_AMPLITUDE = 0.4  # lat_c = 0.4 sin(2 pi t / year), radians
CLOCK = (1, 0)  # (variable, coefficient) of the state slot that holds the model time


@dataclass
class PlanetSWEConfig:
    """Forced shallow water on the rotating sphere (LEVDA §4.1; defaults: the planetswe generator)."""

    nlat: int = 256  # Gauss-Legendre latitudes
    nlon: int = 512  # longitudes
    lmax: int = 0  # triangular truncation; 0: the alias-free (nlon - 1) // 3 (and <= (2 nlat - 1) // 3)
    dt: float = 240.0  # [s]
    steps_per_frame: int = 60  # frames every 4 h
    warmup_frames: int = 63  # 252 h burn-in, dropped
    n_frames: int = 127  # 504 h kept, the start included
    radius: float = 6.37122e6  # [m]
    rotation: float = 7.292e-5  # Omega [1/s]
    g: float = 9.80616  # [m/s^2]
    depth: float = 1.0e4  # mean depth H [m]
    viscosity: float = 1.0e5  # Laplacian viscosity [m^2/s] the hyperviscosity matches at degree viscosity_l
    viscosity_l: int = 32
    hf0_min: float = 0.1  # forcing amplitude prior U(hf0_min, hf0_max) [m/h]
    hf0_max: float = 30.0
    sigma_min: float = 1.0  # forcing width prior U(sigma_min, sigma_max) [rad]
    sigma_max: float = 4.0
    day: float = 24.0  # forcing period in longitude [h]
    year: float = 1008.0  # forcing period in latitude [h]
    initial_flow: str = "galewsky"  # the shared initial state's zonal wind, one of INITIAL_FLOWS, balanced
    jet_speed: float = 80.0  # its maximum [m/s]
    perturbation: float = 120.0  # Galewsky's height bump on it [m] (0: a steady zonal flow)
    mountain_height: float = 0.0  # smooth Gaussian mountain at (lon, lat) = (270, 30) deg, e-fold 20 deg [m]
    tilt: float = 0.0  # rotation axis tilted by this angle towards lon = 0 [rad] (Williamson test 2)
    workers: int = 2  # threads (members in blocks, one transform thread each)


def galewsky_jet(lat, speed):
    """Galewsky et al. (2004): u = u_max / e_n exp(1 / ((lat - lat0)(lat - lat1))) on lat0 = pi/7 < lat < pi/2 - lat0;
    barotropically unstable (the bump turns it into eddies within days)."""
    lat0, lat1 = np.pi / 7, np.pi / 2 - np.pi / 7
    inside = (lat > lat0) & (lat < lat1)
    u = np.zeros_like(lat)
    en = math.exp(-4.0 / (lat1 - lat0) ** 2)
    u[inside] = speed / en * np.exp(1.0 / ((lat[inside] - lat0) * (lat[inside] - lat1)))
    return u


def solid_body(lat, speed):
    """Solid-body rotation u = u0 cos(lat) (Williamson et al. 1992, test 2): stable; the forcing shapes the flow."""
    return speed * np.cos(lat)


INITIAL_FLOWS = {"galewsky": galewsky_jet, "solid_body": solid_body}


def _check_config(cfg) -> int:
    """The truncation ``lmax`` of ``cfg`` after checking every setting (ConfigError naming the bad ones)."""
    problems = []
    if cfg.nlat < 4 or cfg.nlon < 8:
        problems.append(f"need nlat >= 4 and nlon >= 8, got {cfg.nlat} x {cfg.nlon}")
    alias_free = max(0, min((cfg.nlon - 1) // 3, (2 * cfg.nlat - 1) // 3))
    lmax = cfg.lmax or alias_free
    if not 1 <= lmax <= alias_free:
        problems.append(f"lmax must be in [1, {alias_free}] (alias-free on {cfg.nlat} x {cfg.nlon}), got {cfg.lmax}")
    if not cfg.dt > 0:
        problems.append(f"dt must be positive, got {cfg.dt}")
    if cfg.steps_per_frame < 1 or cfg.n_frames < 2 or cfg.warmup_frames < 0:
        problems.append("steps_per_frame must be >= 1, n_frames >= 2 and warmup_frames >= 0")
    for name in ("radius", "g", "depth", "day", "year"):
        if not getattr(cfg, name) > 0:
            problems.append(f"{name} must be positive, got {getattr(cfg, name)}")
    if cfg.viscosity < 0 or cfg.viscosity_l < 1:
        problems.append(f"need viscosity >= 0 and viscosity_l >= 1, got {cfg.viscosity}, {cfg.viscosity_l}")
    if not 0 <= cfg.hf0_min <= cfg.hf0_max:
        problems.append(f"need 0 <= hf0_min <= hf0_max, got {cfg.hf0_min}, {cfg.hf0_max}")
    if not 0 < cfg.sigma_min <= cfg.sigma_max:
        problems.append(f"need 0 < sigma_min <= sigma_max, got {cfg.sigma_min}, {cfg.sigma_max}")
    if cfg.mountain_height >= cfg.depth:
        problems.append(f"mountain_height ({cfg.mountain_height}) must stay below the depth ({cfg.depth})")
    if cfg.workers < 1:
        problems.append(f"workers must be >= 1, got {cfg.workers}")
    if cfg.initial_flow not in INITIAL_FLOWS:
        problems.append(f"initial_flow must be one of {', '.join(INITIAL_FLOWS)}, got {cfg.initial_flow!r}")
    if problems:
        raise ConfigError("atmosphere: " + "; ".join(problems))
    return lmax


def _ducc_sht():
    try:
        import ducc0.sht as sht
    except ImportError:
        raise ConfigError("the atmosphere case needs the ducc0 package for its spherical harmonic transforms: "
                          "pip install ducc0") from None
    return sht


class PlanetSWE:
    """Batched spectral-transform solver; parameters ``(K, 2)`` = (hf0 [m/h], sigma [rad]) per member."""

    name = "atmosphere"
    field_names = ("h", "u", "v")
    param_names = ("hf0", "sigma")

    def __init__(self, cfg):
        self.lmax = L = _check_config(cfg)
        self.cfg, self.dt = cfg, cfg.dt
        self.sht = _ducc_sht()
        self.nlat, self.nlon, a = cfg.nlat, cfg.nlon, cfg.radius
        m = np.concatenate([np.full(L + 1 - mm, mm) for mm in range(L + 1)])
        ell = np.concatenate([np.arange(mm, L + 1) for mm in range(L + 1)])
        self.nalm = ell.size
        ll = ell * (ell + 1.0)
        self._sq = np.sqrt(ll)  # sqrt(l (l + 1))
        self._inv_sq = np.divide(1.0, self._sq, out=np.zeros_like(ll), where=ll > 0)
        self._ll = ll / a**2  # -lap on Y_lm
        nu4 = cfg.viscosity * a**2 / cfg.viscosity_l**2  # nu4 (l(l+1)/a^2)^2 = viscosity (l(l+1)/a^2) at viscosity_l^2
        self._linear = -nu4 * self._ll**2
        mu = -np.polynomial.legendre.leggauss(cfg.nlat)[0]  # sin(lat) of the rings, north to south
        self.lat = np.arcsin(mu)
        self.lon = 2 * np.pi * np.arange(cfg.nlon) / cfg.nlon
        weights = np.polynomial.legendre.leggauss(cfg.nlat)[1]
        self.area = np.broadcast_to((weights * 2 * np.pi * a**2 / cfg.nlon)[:, None], (cfg.nlat, cfg.nlon))
        lat, lon = self.lat[:, None], self.lon[None, :]
        self._f = 2 * cfg.rotation * (np.sin(lat) * math.cos(cfg.tilt) - np.cos(lat) * np.cos(lon) * math.sin(cfg.tilt))
        centre_lon, centre_lat, width = 1.5 * np.pi, np.pi / 6, np.pi / 9
        distance = np.arccos(np.clip(np.sin(lat) * math.sin(centre_lat)
                                     + np.cos(lat) * math.cos(centre_lat) * np.cos(lon - centre_lon), -1, 1))
        self.orography = cfg.mountain_height * np.exp(-(distance / width) ** 2)
        self._depth = cfg.depth - self.orography  # H - h_s
        self._m1 = np.flatnonzero(m == 1)
        self._forcing_rows = self._m1_projector()
        self.grid = {"nlat": cfg.nlat, "nlon": cfg.nlon, "lmax": L, "radius": a,
                     "dx": 2 * np.pi * a / cfg.nlon, "units": "m"}
        self.units = {"h": "m", "u": "m/s", "v": "m/s", "hf0": "m/h", "sigma": "rad", "x": "degrees_east",
                      "y": "degrees_north", "time": "s"}

    # -- transforms ---------------------------------------------------------------------------
    def _synth(self, alm, spin, threads):
        return self.sht.synthesis_2d(alm=alm, spin=spin, lmax=self.lmax, geometry="GL", ntheta=self.nlat,
                                     nphi=self.nlon, nthreads=threads)

    def _analyse(self, grid, spin, threads):
        return self.sht.analysis_2d(map=grid, spin=spin, lmax=self.lmax, geometry="GL", nthreads=threads)

    def _m1_projector(self):
        """``(nlat, n_m1)``: the m = 1 coefficients of cos(lon) on each ring alone (the forcing's only order)."""
        rows = np.empty((self.nlat, self._m1.size))
        ring = np.zeros((1, self.nlat, self.nlon))
        for j in range(self.nlat):
            ring[0, j] = np.cos(self.lon)
            rows[j] = self._analyse(ring, 0, 1)[0, self._m1].real
            ring[0, j] = 0.0
        return rows

    # -- protocol -----------------------------------------------------------------------------
    def sample_params(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """hf0 ~ U(hf0_min, hf0_max) [m/h], sigma ~ U(sigma_min, sigma_max) [rad], shape ``(n, 2)``."""
        c = self.cfg
        return np.stack([rng.uniform(c.hf0_min, c.hf0_max, n), rng.uniform(c.sigma_min, c.sigma_max, n)], axis=1)

    def initial_state(self, params, rng: np.random.Generator | None = None):
        """The zonal flow ``initial_flow`` (:data:`INITIAL_FLOWS`) at t = 0, the same for every member.

        The height is in nonlinear balance with the wind (d delta / dt = 0, computed in spectral space,
        so the zonal flow is a steady state of the discrete equations) with zero mean, plus Galewsky's
        bump ``perturbation`` cos(lat) exp(-(lon'/alpha)^2 - ((pi/4 - lat)/beta)^2), alpha = 1/3,
        beta = 1/15, lon' = lon - pi in (-pi, pi).
        """
        K = len(self._members(params))
        lat = np.broadcast_to(self.lat[:, None], (self.nlat, self.nlon))
        u = INITIAL_FLOWS[self.cfg.initial_flow](lat, self.cfg.jet_speed)
        fields = np.stack([np.zeros_like(u), u, np.zeros_like(u)])[None]
        state = self.from_fields(fields)
        state[0, 2] = self.balanced_height(state[0])
        lon = self.lon[None, :] - np.pi
        bump = self.cfg.perturbation * np.cos(lat) * np.exp(-(lon / (1 / 3)) ** 2 - ((np.pi / 4 - lat) / (1 / 15)) ** 2)
        state[0, 2] += self._analyse(bump[None], 0, self.cfg.workers)[0]
        return np.repeat(state, K, axis=0)

    def balanced_height(self, spectral):
        """h_lm (zero mean) with d delta / dt = 0 for the wind of ``spectral (3, nalm)``:
        lap(g h + |u|^2 / 2) = k.curl(q u)."""
        zeta, delta = spectral[0], spectral[1]
        uv = self._wind(zeta, delta, 1)
        q = self._synth(zeta[None], 0, 1)[0] + self._f
        curl_flux = -self._sq * self._analyse(q * uv, 1, 1)[1] / self.cfg.radius
        kinetic = self._analyse(0.5 * (uv**2).sum(0)[None], 0, 1)[0]
        phi = -np.divide(curl_flux, self._ll, out=np.zeros_like(curl_flux), where=self._ll > 0)
        return (phi - kinetic) / self.cfg.g * (self._ll > 0)

    def step(self, state, params, n_steps: int = 1):
        """Advance every member ``n_steps`` steps of IF-RK4 (Lawson; see kolmogorov.Kolmogorov.step)."""
        w = self._check_state(state)
        if int(n_steps) != n_steps or n_steps < 0:
            raise SolverError(f"atmosphere step: n_steps must be an integer >= 0, got {n_steps}")
        p = self._members(params, len(w))
        blocks = np.array_split(np.arange(len(w)), min(self.cfg.workers, len(w)))
        threads = max(1, self.cfg.workers // len(blocks))

        def advance(rows):
            return self._advance(w[rows].copy(), p[rows], int(n_steps), threads, int(rows[0]))

        if len(blocks) == 1:
            return advance(blocks[0])
        with ThreadPoolExecutor(len(blocks)) as pool:
            return np.concatenate(list(pool.map(advance, blocks)))

    def to_fields(self, state):
        """(h, u, v) on the grid, shape ``(K, 3, nlat, nlon)``."""
        w = self._check_state(state)
        out = np.empty((len(w), 3, self.nlat, self.nlon))
        for k, s in enumerate(w):
            out[k, 0] = self._synth(s[2][None], 0, self.cfg.workers)[0]
            south, east = self._wind(s[0], s[1], self.cfg.workers)
            out[k, 1], out[k, 2] = east, -south
        return out

    def from_fields(self, fields):
        """(zeta, delta, h)_lm of fields ``(K, 3, nlat, nlon)``, the clock at 0 (see :meth:`with_clock`)."""
        fields = np.asarray(fields, dtype=np.float64)
        if fields.ndim != 4 or fields.shape[1:] != (3, self.nlat, self.nlon):
            raise SolverError(f"atmosphere fields must have shape (K, 3, {self.nlat}, {self.nlon}), got {fields.shape}")
        out = np.empty((len(fields), 3, self.nalm), complex)
        for k, (h, u, v) in enumerate(fields):
            E, B = self._analyse(np.stack([-v, u]), 1, self.cfg.workers)
            out[k, 0] = -self._sq * B / self.cfg.radius
            out[k, 1] = -self._sq * E / self.cfg.radius
            out[k, 2] = self._analyse(h[None], 0, self.cfg.workers)[0]
        return out

    def with_clock(self, state, like):
        """``state`` at the model time of ``like`` (a state of the same instant, e.g. the forecast it analyses)."""
        state = np.array(state, copy=True)
        state[(slice(None), *CLOCK)] = np.asarray(like)[(0, *CLOCK)].real
        return state

    def time(self, state) -> float:
        """Model time [s] of ``state``."""
        return float(np.asarray(state)[(0, *CLOCK)].real)

    def integrals(self, state) -> dict:
        """Per member: mass int (H + h - h_s) dA [m^3] and energy int D |u|^2 / 2 + g (H + h)^2 / 2 dA [m^5/s^2]."""
        f = self.to_fields(state)
        depth = self._depth + f[:, 0]
        surface = self.cfg.depth + f[:, 0]
        energy = 0.5 * depth * (f[:, 1] ** 2 + f[:, 2] ** 2) + 0.5 * self.cfg.g * surface**2
        return {"mass": (depth * self.area).sum(axis=(1, 2)), "energy": (energy * self.area).sum(axis=(1, 2))}

    def forcing(self, params, t: float):
        """h_f of each member at time ``t`` [s] on the grid, ``(K, nlat, nlon)`` [m/s]."""
        p = self._members(params)
        lon_c, lat_c = self._forcing_centre(t)
        shape = np.exp(-((self.lat[None, :] - lat_c) / p[:, 1:2]) ** 2)  # (K, nlat)
        return (p[:, 0, None, None] / HOUR) * np.cos(self.lon - lon_c)[None, None, :] * shape[:, :, None]

    # -- internals ----------------------------------------------------------------------------
    def _forcing_centre(self, t):
        return (2 * np.pi * t / (self.cfg.day * HOUR),
                FORCING_LAT_AMPLITUDE * math.sin(2 * np.pi * t / (self.cfg.year * HOUR)))

    def _forcing_lm(self, p, t):
        """h_f's coefficients (m = 1 only) for the members ``p (B, 2)`` at time ``t``."""
        lon_c, lat_c = self._forcing_centre(t)
        shape = np.exp(-((self.lat[None, :] - lat_c) / p[:, 1:2]) ** 2)
        out = np.zeros((len(p), self.nalm), complex)
        out[:, self._m1] = (p[:, :1] / HOUR * np.exp(-1j * lon_c)) * (shape @ self._forcing_rows)
        return out

    def _wind(self, zeta, delta, threads):
        """(theta, phi) wind components ``(2, nlat, nlon)`` of the spectral vorticity and divergence."""
        a = self.cfg.radius
        return self._synth(np.stack([-a * delta * self._inv_sq, -a * zeta * self._inv_sq]), 1, threads)

    def _tendency(self, w, forcing, threads, check=None):
        """Explicit tendency of the members ``w (B, 3, nalm)``: transforms member by member, the arithmetic on the
        whole block; ``check = (step, first member)`` checks CFL and NaN first."""
        a, g, B = self.cfg.radius, self.cfg.g, len(w)
        uv = np.empty((B, 2, self.nlat, self.nlon))
        zeta, h = np.empty((B, self.nlat, self.nlon)), np.empty((B, self.nlat, self.nlon))
        for k, s in enumerate(w):
            uv[k] = self._wind(s[0], s[1], threads)
            zeta[k] = self._synth(s[0][None], 0, threads)[0]
            h[k] = self._synth(s[2][None], 0, threads)[0]
        if check is not None:
            self._check_cfl(uv, h, *check)
        q_flux = (zeta + self._f)[:, None] * uv
        mass_flux = (self._depth + h)[:, None] * uv
        bernoulli = g * h + 0.5 * (uv**2).sum(1)
        q = np.empty((B, 2, self.nalm), complex)
        mass, bern = np.empty((B, self.nalm), complex), np.empty((B, self.nalm), complex)
        for k in range(B):
            q[k] = self._analyse(q_flux[k], 1, threads)
            mass[k] = self._analyse(mass_flux[k], 1, threads)[0]
            bern[k] = self._analyse(bernoulli[k][None], 0, threads)[0]
        out = np.empty_like(w)
        out[:, 0] = self._sq * q[:, 0] / a
        out[:, 1] = -self._sq * q[:, 1] / a + self._ll * bern
        out[:, 2] = self._sq * mass / a + forcing
        return out

    def _advance(self, w, p, n_steps, threads, first):
        """``n_steps`` IF-RK4 steps of the members ``w (B, 3, nalm)`` (``first``: index of the first, for messages)."""
        dt = self.dt
        E, E2 = np.exp(self._linear * dt), np.exp(self._linear * 0.5 * dt)
        for i in range(n_steps):
            t = self.time(w)
            f0, f_half, f1 = (self._forcing_lm(p, t + c * dt) for c in (0.0, 0.5, 1.0))
            k1 = self._tendency(w, f0, threads, check=(i, first))
            k2 = self._tendency(E2 * (w + 0.5 * dt * k1), f_half, threads)
            k3 = self._tendency(E2 * w + 0.5 * dt * k2, f_half, threads)
            k4 = self._tendency(E * w + dt * (E2 * k3), f1, threads)
            w = E * w + (dt / 6.0) * (E * k1 + 2.0 * E2 * (k2 + k3) + k4)
            w[(slice(None), *CLOCK)] = t + dt
        return w

    def _check_cfl(self, uv, h, step, first):
        """Raise before ``step`` if a member of ``uv (B, 2, ...)``, ``h (B, ...)`` is NaN/Inf or over MAX_CFL."""
        speed = np.sqrt((uv**2).sum(1).max(axis=(1, 2))) + np.sqrt(self.cfg.g * np.maximum(self.cfg.depth
                                                                                             + h.max(axis=(1, 2)), 0))
        cfl = speed * self.dt * math.sqrt(self.lmax * (self.lmax + 1)) / self.cfg.radius
        bad = np.flatnonzero(~np.isfinite(cfl))
        if bad.size:
            raise SolverError(f"atmosphere solver: member {first + int(bad[0])} became NaN/Inf before step {step} "
                              f"of this call")
        if cfl.max() > MAX_CFL:
            k = int(np.argmax(cfl))
            raise SolverError(f"atmosphere solver: CFL {cfl[k]:.2f} > {MAX_CFL} for member {first + k} before step "
                              f"{step} (gravity-wave + wind speed {speed[k]:.0f} m/s); lower atmosphere.dt below "
                              f"{self.dt * MAX_CFL / cfl[k]:.0f} s")

    def _check_state(self, state):
        w = np.asarray(state)
        if w.ndim != 3 or w.shape[1:] != (3, self.nalm) or not np.iscomplexobj(w):
            raise SolverError(f"atmosphere state must be complex (K, 3, {self.nalm}), got {w.dtype} {w.shape}")
        return w

    def _members(self, params, K=None):
        p = np.asarray(params, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 2 or (K is not None and len(p) != K):
            raise SolverError(f"atmosphere params must be (K{'' if K is None else ' = ' + str(K)}, 2) = (hf0, sigma), "
                              f"got shape {p.shape}")
        if np.any(p[:, 1] <= 0):
            raise SolverError("atmosphere params: the forcing width sigma must be positive")
        return p

"""Tsunami shallow-water solver: conservation, wave and inertial frequencies, backends, checks."""
import math
import shutil
import subprocess

import numpy as np
import pytest

from ldensf_hpc import cases
from ldensf_hpc.backend import cupy_available, to_numpy
from ldensf_hpc.cases import load_config
from ldensf_hpc.errors import ConfigError, InputError, SolverError
from ldensf_hpc import cuda_host
from ldensf_hpc.models import shallow_water, trajectory
from ldensf_hpc.models.shallow_water import ShallowWater, SWEConfig

CPU_BACKENDS = ["numpy", "numba"]
BACKENDS = CPU_BACKENDS + [
    pytest.param("cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(not cupy_available(), reason="no CUDA GPU/CuPy")]),
    pytest.param("cuda_host", marks=pytest.mark.skipif(cuda_host.compiler() is None, reason="no host C++ compiler"))]


def model(backend="numpy", **overrides):
    return ShallowWater(SWEConfig(**{"n": 32, "bump_width": 1.0e5, "backend": backend, **overrides}))


def bumps(m, K, seed=0):
    params = m.sample_params(np.random.default_rng(seed), K)
    return m.initial_state(params), params


@pytest.mark.parametrize("backend", BACKENDS)
def test_mass_is_conserved_with_walls(backend):
    """The upwind flux form telescopes: sum(eta) dx^2 is constant up to round-off (500 steps, Coriolis on)."""
    m = model(backend, bump_height=5.0)
    state, params = bumps(m, 2)
    mass0 = to_numpy(state[:, 0]).sum(axis=(1, 2)) * m.dx**2
    state = to_numpy(m.step(state, params, 500))
    mass = state[:, 0].sum(axis=(1, 2)) * m.dx**2
    assert np.abs(state[:, 1:]).max() > 1e-3  # the bump has spread and moved water around
    np.testing.assert_array_less(np.abs(mass / mass0 - 1), 1e-12)


def measured_period(m, mode, n_steps):
    """Period of the standing mode from two successive zero crossings of its amplitude."""
    state = np.zeros((1, 3, m.cfg.n, m.cfg.n))
    state[0, 0] = 1e-3 * mode  # small: the flux nonlinearity is 1e-5 of the linear term
    amp = [1e-3]
    for _ in range(n_steps):
        state = m.step(state, None, 1)
        amp.append((state[0, 0] * mode).sum() / (mode * mode).sum())
    amp, t = np.array(amp), m.dt * np.arange(n_steps + 1)
    i = np.flatnonzero(np.sign(amp[:-1]) != np.sign(amp[1:]))[:2]
    crossings = t[i] - amp[i] * m.dt / (amp[i + 1] - amp[i])
    return 2 * (crossings[1] - crossings[0])


@pytest.mark.parametrize("p, q", [(1, 0), (0, 1), (1, 1), (2, 1)])
def test_standing_wave_frequency(p, q):
    """eta ~ cos(p pi x/L) cos(q pi y/L) in the closed basin (f = 0) has omega = sqrt(gH) pi |(p, q)| / L;
    the C-grid forward-backward scheme has cos(omega dt) = 1 - 2 mu^2 (sin^2(p pi/2n) + sin^2(q pi/2n))."""
    errors = []
    for n in (32, 64):
        m = model("numba", n=n, f0=0.0, beta=0.0, cfl=0.5)
        x = (np.arange(n) + 0.5) * m.dx
        mode = np.cos(p * math.pi * x[None, :] / m.cfg.length) * np.cos(q * math.pi * x[:, None] / m.cfg.length)
        c = math.sqrt(m.cfg.g * m.cfg.depth)
        period = 2 * m.cfg.length / (c * math.hypot(p, q))
        measured = measured_period(m, mode, int(0.9 * period / m.dt) + 2)
        mu2 = (c * m.dt / m.dx) ** 2
        s2 = math.sin(p * math.pi / (2 * n)) ** 2 + math.sin(q * math.pi / (2 * n)) ** 2
        discrete = 2 * math.pi * m.dt / math.acos(1 - 2 * mu2 * s2)
        assert abs(measured / discrete - 1) < 1e-4
        errors.append(abs(measured / period - 1))
    assert errors[0] < 1e-2  # phase speed sqrt(gH) within 1 % already at n = 32
    assert 3.5 < errors[0] / errors[1] < 4.5  # second order in dx


def test_inertial_oscillation_turns_clockwise():
    """Uniform u = U0 with f = f0: away from the walls (reached by waves only after the run)
    each step is the Coriolis map [[1, a], [-a, 1 - a^2]], a = f dt, close to the continuous
    clockwise rotation (U0 cos ft, -U0 sin ft) for f > 0."""
    n, U0, n_steps = 128, 0.1, 32
    m = model("numba", n=n, f0=8e-4, beta=0.0, cfl=0.5)
    a = m.cfg.f0 * m.dt
    state = np.zeros((1, 3, n, n))
    state[0, 1, :, :-1] = U0
    centre = slice(n // 2 - 16, n // 2 + 16)
    step_map = np.array([[1.0, a], [-a, 1.0 - a * a]])
    expected, ft = np.array([U0, 0.0]), 0.0
    for _ in range(n_steps):  # half an inertial period
        state = m.step(state, None, 1)
        expected, ft = step_map @ expected, ft + a
        np.testing.assert_allclose(state[0, 1:, centre, centre] - expected[:, None, None], 0, atol=1e-12 * U0)
        np.testing.assert_allclose(expected, [U0 * math.cos(ft), -U0 * math.sin(ft)], rtol=0, atol=0.6 * a * U0)


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_kernel_matches_numpy_reference(backend):
    """Same expressions in the same order: the kernels agree to round-off after many nonlinear steps."""
    ref = model("numpy", bump_height=20.0, f0=5e-4, beta=1e-10)
    state, params = bumps(ref, 3, seed=1)
    expected = ref.step(state, params, 300)
    got = to_numpy(model(backend, bump_height=20.0, f0=5e-4, beta=1e-10).step(state, params, 300))
    scale = np.abs(expected).max(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(got / scale, expected / scale, rtol=0, atol=1e-12)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_kernel_compiles(tmp_path):
    """The CUDA source of the cupy backend compiles (CUDA dialect: block barriers, device isfinite)."""
    src = tmp_path / "swe.cu"
    src.write_text(shallow_water.CUDA_SOURCE.read_text())
    run = subprocess.run(["nvcc", "-ptx", "-arch=sm_80", str(src), "-o", str(tmp_path / "swe.ptx")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert ".entry swe_advance" in (tmp_path / "swe.ptx").read_text()


@pytest.mark.skipif(cuda_host.compiler() is None, reason="no host C++ compiler")
@pytest.mark.parametrize("threads", [1, 37, shallow_water.CUDA_THREADS])
def test_cuda_source_on_host_matches_numpy_at_any_block_size(threads):
    """swe_advance.cu run by host emulation (a block's threads as host threads, real barriers)
    equals the NumPy reference bitwise for any block size, and flags the step of a NaN."""
    m = model(bump_height=20.0, f0=5e-4, beta=1e-10)
    state, params = bumps(m, 3, seed=1)
    coef = (m.cfg.depth, m.dt / m.dx, m.cfg.g * m.dt / m.dx, m._fdt_u, m._fdt_v)
    expected = shallow_water._advance_numpy(state, 100, *coef)[0]
    got, bad = shallow_water._advance_cuda_host(state, 100, *coef, threads=threads)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(bad, [0, 0, 0])
    state[2, 2, 20, 3] = np.nan
    np.testing.assert_array_equal(shallow_water._advance_cuda_host(state, 5, *coef, threads=threads)[1], [0, 0, 1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_member_does_not_depend_on_batch(backend):
    m = model(backend, bump_height=10.0)
    state, params = bumps(m, 4, seed=2)
    batch = to_numpy(m.step(state, params, 50))
    alone = to_numpy(m.step(state[2:3], params[2:3], 50))
    np.testing.assert_array_equal(batch[2:3], alone)


def test_cfl_violation_raises_before_stepping():
    with pytest.raises(ConfigError, match="swe.cfl"):
        model(cfl=0.8)
    m = model(cfl=0.7, bump_height=10.0)  # 0.7 sqrt(1.1) > 1/sqrt(2) on the crest of the bump
    state, params = bumps(m, 2)
    before = state.copy()
    with pytest.raises(SolverError, match=r"dt = .* exceeds the CFL limit .* lower swe.cfl"):
        m.step(state, params, 10)
    np.testing.assert_array_equal(state, before)
    model(cfl=0.7, bump_height=1.0).step(state / 10, params, 10)  # 1 m on 100 m: within the limit


@pytest.mark.parametrize("backend", BACKENDS)
def test_negative_depth_raises_before_stepping(backend):
    m = model(backend)
    state, params = bumps(m, 3)
    state[1, 0, 5, 7] = -m.cfg.depth - 1.0
    with pytest.raises(SolverError, match=r"total depth H \+ eta = -1 m <= 0 \(member 1, cell j=5, i=7\)"):
        m.step(state, params, 5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_stops_the_run_at_its_step(backend):
    m = model(backend)
    state, params = bumps(m, 3)
    state[1, 2, 10, 10] = np.nan  # a velocity: the pre-checks look at eta only
    with pytest.raises(SolverError, match=r"NaN/Inf appeared at step 1 of 5 .*member\(s\) \[1\]"):
        m.step(state, params, 5)

    # u = 1e200 passes the checks; the flux u (H + eta) gives eta ~ 1e199 (finite) at step 1,
    # and u (H + eta) ~ 1e399 overflows at step 2
    state = np.zeros_like(to_numpy(state))
    state[2, 1, 16, 16] = 1e200
    assert np.isfinite(to_numpy(m.step(state, params, 1))).all()
    with pytest.raises(SolverError, match=r"NaN/Inf appeared at step 2 of 6 .*member\(s\) \[2\]"):
        m.step(state, params, 6)


def test_protocol_round_trip():
    cfg = load_config("tiny", case="swe")
    m = cases.get("swe").model(cfg)
    assert (m.name, m.field_names, m.param_names) == ("swe", ("eta", "u", "v"), ("bump_x", "bump_y"))
    assert m.grid == {"n": 32, "dx": 1e6 / 32, "length": 1e6, "units": "m"}
    params = m.sample_params(np.random.default_rng(3), 500)
    assert params.shape == (500, 2)
    lo, hi = 2 * cfg.model.bump_width, cfg.model.length - 2 * cfg.model.bump_width
    assert params.min() >= lo and params.max() <= hi and params.max() - params.min() > 0.9 * (hi - lo)

    state = m.initial_state(params[:4])
    assert state.shape == (4, 3, 32, 32) and state.dtype == np.float64
    assert not state[:, 1:].any()
    peak = np.array(np.unravel_index(state[:, 0].reshape(4, -1).argmax(axis=1), (32, 32))).T  # (j, i)
    np.testing.assert_array_equal(peak, np.floor(params[:4, ::-1] / m.dx))
    assert state[:, 0].max() <= cfg.model.bump_height

    later = m.step(state, params[:4], 3)
    np.testing.assert_array_equal(m.from_fields(m.to_fields(later)), later)
    frames = trajectory(m, state, params[:4], n_frames=2, steps_per_frame=3)
    assert frames.shape == (4, 3, 3, 32, 32)
    np.testing.assert_array_equal(frames[:, 1], later)

    analysis = later + 1.0  # e.g. a filter update touching the wall faces
    fixed = m.from_fields(analysis)
    assert not fixed[:, 1, :, -1].any() and not fixed[:, 2, -1, :].any()
    with pytest.raises(InputError, match="wall face"):
        m.step(analysis, params[:4], 1)
    with pytest.raises(InputError, match=r"shape \(K, 3, 32, 32\)"):
        m.step(state[:, :2], params[:4], 1)
    with pytest.raises(InputError, match=r"shape \(K, 2\)"):
        m.initial_state(params[:, :1])


def test_paper_time_step():
    m = cases.get("swe").model(load_config("paper", case="swe"))
    assert m.grid["n"] == 150 and abs(m.dt - 21.3) < 0.05  # dt = 0.1 dx / sqrt(gH), "about 21 s"


@pytest.mark.parametrize("field, value, message", [
    ("n", 3, "swe.n must be >= 4"),
    ("depth", 0.0, "swe.depth must be positive"),
    ("cfl", 0.0, "swe.cfl must be in"),
    ("bump_width", 3.0e5, "too wide for the basin"),
    ("bump_height", -150.0, "depth H \\+ eta negative"),
    ("backend", "fortran", "unknown swe.backend 'fortran'; choose one of numpy, numba, cupy, cuda_host"),
])
def test_invalid_config_is_named(field, value, message):
    with pytest.raises(ConfigError, match=message):
        model(**{field: value})

"""Kolmogorov-flow solver: analytic solutions, time order, backends, protocol and errors.

Run with ``python -m pytest tests/test_kolmogorov.py -s`` to see the printed spectrum slope.
"""
import math

import numpy as np
import pytest

from ldensf_hpc import cases
from ldensf_hpc.backend import cupy_available, to_numpy
from ldensf_hpc.cases import load_config
from ldensf_hpc.errors import ConfigError, SolverError
from ldensf_hpc.models import trajectory
from ldensf_hpc.models.kolmogorov import FFT_BACKENDS, Kolmogorov, KolmogorovConfig, energy_spectrum


def model(**overrides):
    return Kolmogorov(KolmogorovConfig(**{"n": 32, "dt": 0.01, **overrides}))


def grid(n):
    x = 2 * math.pi * np.arange(n) / n
    return x[None, :], x[:, None]  # fields are indexed [iy, ix]


def random_state(m, re, seed=0):
    params = np.asarray(re, float).reshape(-1, 1)
    return m.initial_state(params, np.random.default_rng(seed)), params


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("drag", [0.0, 0.1])
def test_taylor_green_decays_exactly(drag):
    """u = cos kx sin ky, v = -sin kx cos ky (omega = -2k cos kx cos ky): advection vanishes,
    so v(t) = exp(-(2 nu k^2 + drag) t) v(0); the integrating factor makes this exact."""
    n, k, dt, steps = 32, 3, 0.05, 40
    m = model(n=n, dt=dt, forcing_wavenumber=0, drag=drag)
    x, y = grid(n)
    tg = np.stack([np.cos(k * x) * np.sin(k * y), -np.sin(k * x) * np.cos(k * y)])
    re = np.array([[50.0], [200.0]])
    state = m.from_fields(np.stack([tg, tg]))
    out = m.to_fields(m.step(state, re, steps))
    for member, (nu,) in enumerate(1.0 / re):
        decay = math.exp(-(2 * nu * k**2 + drag) * dt * steps)
        assert rel_err(out[member], decay * tg) < 1e-6 * decay


def test_tendency_matches_analytic_advection_and_forcing():
    """psi = sin x cos 2y + 0.5 cos(3x + y): N = -(u omega_x + v omega_y) - k_f cos(k_f y), all modes resolved."""
    n, kf = 32, 4
    m = model(n=n, forcing_wavenumber=kf)
    x, y = grid(n)
    s1, c1 = np.sin(x) * np.cos(2 * y), np.cos(3 * x + y)
    omega = 5 * s1 + 5 * c1  # -lap psi
    u = -2 * np.sin(x) * np.sin(2 * y) - 0.5 * np.sin(3 * x + y)  # d psi / dy
    v = -np.cos(x) * np.cos(2 * y) + 1.5 * np.sin(3 * x + y)  # -d psi / dx
    omega_x = 5 * np.cos(x) * np.cos(2 * y) - 15 * np.sin(3 * x + y)
    omega_y = -10 * np.sin(x) * np.sin(2 * y) - 5 * np.sin(3 * x + y)
    expected = -(u * omega_x + v * omega_y) - kf * np.cos(kf * y)
    state = m.from_fields(np.stack([u, v])[None])
    assert rel_err(m.to_fields(state)[0], np.stack([u, v])) < 1e-13
    assert rel_err(np.fft.irfft2(state[0], s=(n, n)), omega) < 1e-13  # from_fields takes the curl
    got = np.fft.irfft2(m.tendency(state)[0], s=(n, n))
    assert rel_err(got, expected) < 1e-12


def test_inviscid_unforced_run_conserves_energy_and_enstrophy():
    """The 2/3-dealiased Galerkin system conserves both quadratic invariants; IF-RK4 drifts by O(dt^4)."""
    m = model(n=32, dt=0.01, drag=0.0, forcing_wavenumber=0)
    state, params = random_state(m, [1e15], seed=5)

    def invariants(w):
        fields = m.to_fields(w)
        omega = np.fft.irfft2(w, s=(32, 32))
        return np.mean(np.sum(fields**2, axis=1)), np.mean(omega**2)

    before = invariants(state)
    after = invariants(m.step(state, params, 200))
    assert after == pytest.approx(before, rel=1e-6)  # observed ~2e-9 (energy), ~7e-8 (enstrophy)


def test_converges_to_laminar_kolmogorov_flow():
    """At Re = 5 any start decays to u = sin(k y) / (nu k^2 + drag), v = 0 (curl: omega = -k cos(ky) / (...)).

    The IF-RK4 fixed point with constant forcing differs from it by ~(L dt)^4 / 2880 ~ 4e-10
    (Simpson's rule for the forcing integral); the slowest transient (k = 1) decays as exp(-0.3 t).
    """
    re, drag, kf, n = 5.0, 0.1, 4, 32
    m = model(n=n, drag=drag, forcing_wavenumber=kf)
    state, params = random_state(m, [re])
    fields = m.to_fields(m.step(state, params, 8000))  # t = 80
    x, y = grid(n)
    laminar_u = np.sin(kf * y) / (kf**2 / re + drag) * np.ones_like(x)
    assert rel_err(fields[0, 0], laminar_u) < 1e-8
    assert np.abs(fields[0, 1]).max() < 1e-8 * np.abs(laminar_u).max()


def test_time_step_error_is_fourth_order():
    """Smooth nonlinear forced run (Re = 100, t = 1) at dt, dt/2, dt/4 against dt/16: IF-RK4 is 4th order."""

    def run(dt):
        m = model(n=32, dt=dt)
        state, params = random_state(m, [100.0], seed=3)
        return m.to_fields(m.step(state, params, round(1.0 / dt)))

    dt = 0.04
    reference = run(dt / 16)
    errors = np.array([rel_err(run(dt / 2**j), reference) for j in range(3)])
    orders = np.log2(errors[:-1] / errors[1:])
    print(f"\nKolmogorov IF-RK4 errors {errors} -> observed orders {orders}")
    assert np.all(np.abs(orders - 4.0) < 0.3), orders


def test_turbulent_energy_spectrum_slope():
    """Re = 1000 on 64^2 for t = 30: print the inertial-range slope of E(k) (2-D enstrophy cascade: ~ -3,
    steeper with linear drag); assert only that the run stayed finite and Parseval holds."""
    n, dt = 64, 0.01
    m = model(n=n, dt=dt)
    state, params = random_state(m, [1000.0])
    state = m.step(state, params, 1500)
    spectra = []
    for _ in range(10):
        state = m.step(state, params, 150)
        fields = m.to_fields(state)
        k, E = energy_spectrum(fields)
        spectra.append(E[0])
    assert np.all(np.isfinite(fields))
    assert E[0].sum() == pytest.approx(0.5 * np.mean(np.sum(fields[0] ** 2, axis=0)), rel=1e-12)
    E = np.mean(spectra, axis=0)
    inertial = (k >= 6) & (k <= n // 4)
    slope = np.polyfit(np.log(k[inertial]), np.log(E[inertial]), 1)[0]
    print(f"\nKolmogorov Re=1000 {n}^2, t=15..30: E(k) ~ k^{slope:.2f} for 6 <= k <= {n // 4}")


def test_energy_spectrum_of_a_single_mode():
    """u = A cos(3x + 4y) has all its energy A^2 / 4 in the shell |k| = 5."""
    n, A = 32, 0.7
    x, y = grid(n)
    fields = np.stack([A * np.cos(3 * x + 4 * y), np.zeros((n, n))])[None]
    k, E = energy_spectrum(fields)
    assert E[0, 5] == pytest.approx(A**2 / 4, rel=1e-12)
    assert np.abs(np.delete(E[0], 5)).max() < 1e-14


@pytest.mark.parametrize("backend", ["scipy", "ducc0"])
def test_fused_backends_agree_with_the_numpy_reference(backend):
    """The fused CPU step (Numba passes, scipy's or ducc0's FFTs into buffers) is the reference step to round-off,
    and leaves the caller's state unchanged."""
    if backend == "ducc0":
        pytest.importorskip("ducc0")
    m_np, m_fast = model(backend="numpy"), model(backend=backend, workers=2)
    state, params = random_state(m_np, [300.0, 900.0, 1500.0])
    before = state.copy()
    out_np = m_np.to_fields(m_np.step(state, params, 50))
    out_fast = m_fast.to_fields(m_fast.step(state, params, 50))
    assert rel_err(out_fast, out_np) < 1e-12
    np.testing.assert_array_equal(state, before)
    with pytest.raises(SolverError, match="CFL number"):
        m_fast.step(state * 200.0, params, 1)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA GPU")
def test_cupy_backend_matches_numpy():
    m_np, m_cp = model(backend="numpy"), model(backend="cupy")
    state, params = random_state(m_np, [300.0, 900.0])
    out_np = m_np.to_fields(m_np.step(state, params, 50))
    out_cp = to_numpy(m_cp.to_fields(m_cp.step(m_cp.fft.xp.asarray(state), params, 50)))
    assert rel_err(out_cp, out_np) < 1e-12


def test_members_are_independent_of_the_batch():
    m = model()
    state, params = random_state(m, [200.0, 700.0, 1400.0])
    batch = m.step(state, params, 30)
    alone = m.step(state[1:2], params[1:2], 30)
    assert rel_err(batch[1:2], alone) < 1e-12


def test_fields_round_trip_and_initial_state():
    m = model()
    state, params = random_state(m, [500.0, 1000.0], seed=7)
    again, _ = random_state(m, [500.0, 1000.0], seed=7)
    np.testing.assert_array_equal(state, again)  # deterministic given the generator
    state = m.step(state, params, 20)
    fields = m.to_fields(state)
    assert fields.shape == (2, 2, 32, 32)
    assert rel_err(m.from_fields(fields), state) < 1e-12
    assert np.abs(fields.mean(axis=(2, 3))).max() < 1e-12  # no mean flow
    assert np.sqrt(np.mean(np.sum(m.to_fields(again) ** 2, axis=1), axis=(1, 2))) == pytest.approx(1.0)


def test_from_fields_drops_divergence_and_mean_flow():
    """A gradient flow (u, v) = grad cos(x + 2y) plus a constant has zero curl."""
    n = 32
    x, y = grid(n)
    potential_flow = np.stack([-np.sin(x + 2 * y) + 0.3, -2 * np.sin(x + 2 * y) - 0.1])[None]
    assert np.abs(Kolmogorov(KolmogorovConfig(n=n)).from_fields(potential_flow)).max() < 1e-11


def test_protocol_with_trajectory_and_tiny_preset():
    cfg = load_config("tiny", case="kolmogorov")
    m = cases.get("kolmogorov").model(cfg)
    params = m.sample_params(np.random.default_rng(0), 2)
    assert params.shape == (2, 1) and np.all((params >= 500.0) & (params <= 1500.0))
    frames = trajectory(m, m.initial_state(params, np.random.default_rng(1)), params, 3, cfg.model.steps_per_frame)
    assert frames.shape == (2, 4, 2, 32, 32) and np.all(np.isfinite(frames))
    assert m.field_names == ("u", "v") and m.param_names == ("Re",) and m.dt == cfg.model.dt
    assert m.grid["n"] == 32 and m.grid["length"] == pytest.approx(2 * math.pi)


def test_cfl_violation_raises():
    m = model(dt=1.0)
    state, params = random_state(m, [1000.0])
    with pytest.raises(SolverError, match="CFL"):
        m.step(state, params, 1)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_nan_is_reported_with_member_and_step():
    m = model()
    state, params = random_state(m, [1000.0, 1000.0])
    state[1, 2, 3] = np.nan
    with pytest.raises(SolverError, match=r"member\(s\) \[1\].*NaN"):
        m.step(state, params, 1)
    # |v| ~ 1e200 passes the CFL check at dt = 1e-202, but v * omega overflows during step 0
    m = model(dt=1e-202)
    state, params = random_state(m, [1000.0, 1000.0])
    state[1] *= 1e200
    with pytest.raises(SolverError, match=r"member\(s\) \[1\] became NaN/Inf in step 0"):
        m.step(state, params, 3)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"n": 4}, "n must be"),
        ({"dt": 0.0}, "dt must be positive"),
        ({"re_min": 100.0, "re_max": 50.0}, "re_min <= re_max"),
        ({"drag": -1.0}, "drag"),
        ({"forcing_wavenumber": 11}, "forcing_wavenumber"),
        ({"workers": 0}, "workers"),
        ({"backend": "fftw"}, "unknown FFT backend 'fftw'"),
    ],
)
def test_invalid_config_raises(bad, match):
    with pytest.raises(ConfigError, match=match):
        model(**bad)


def test_bad_params_and_state_shapes_raise():
    m = model()
    state, params = random_state(m, [500.0, 600.0])
    with pytest.raises(SolverError, match="shape"):
        m.step(state, params[:1], 1)
    with pytest.raises(SolverError, match="positive"):
        m.step(state, -params, 1)
    with pytest.raises(SolverError, match="vorticity spectrum"):
        m.step(state[:, :, :5], params, 1)
    with pytest.raises(SolverError, match="fields must have shape"):
        m.from_fields(np.zeros((2, 3, 32, 32)))


def test_backend_registry_lists_all_four():
    assert set(FFT_BACKENDS) == {"numpy", "scipy", "ducc0", "cupy"}

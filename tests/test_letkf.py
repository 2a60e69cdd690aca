"""LETKF (Kalman posterior, localisation, inflation, Lorenz-96), the filter interface and the driver."""

import numpy as np
import pytest
import scipy.linalg
from problems import K_LARGE, linear_gaussian, twin

from ldensf_hpc import geometry
from ldensf_hpc.cases import load_config
from ldensf_hpc.errors import ConfigError, InputError
from ldensf_hpc.filters import METHODS, make_method
from ldensf_hpc.filters.base import Observation
from ldensf_hpc.filters.cycle import cycle
from ldensf_hpc.filters.ensf import EnSF
from ldensf_hpc.filters.letkf import (NEWTON_SCHULZ_MAX_ITERATIONS, LETKF, gaspari_cohn, inverse_sqrt,
                                      newton_schulz_iterations)
from ldensf_hpc.models import trajectory
from ldensf_hpc.models.lorenz96 import Lorenz96, Lorenz96Config
from ldensf_hpc.observe import ObservationOperator, full_operator, grid_operator, moving_points


def test_gaspari_cohn_taper_and_periodic_distance():
    r = np.linspace(0.0, 3.0, 301)
    rho = gaspari_cohn(r)
    assert rho[0] == 1.0 and np.all(rho[r >= 2.0] == 0.0) and np.all(np.diff(rho) <= 1e-15)
    assert gaspari_cohn(1.0 - 1e-12) == pytest.approx(gaspari_cohn(1.0 + 1e-12), abs=1e-10)  # continuous at 1
    assert gaspari_cohn(1.0) == pytest.approx(5.0 / 24.0)
    plane = geometry.get("plane")
    np.testing.assert_allclose(plane.distances([[0.0]], [[39.0], [20.0]], (40,), period=[40.0]), [[1.0, 20.0]])


def test_global_etkf_is_the_kalman_update_of_the_ensemble_statistics():
    """Exact property: ETKF mean and covariance = Kalman with the sample mean and covariance."""
    forecast, obs, *_ = linear_gaussian(0.5, K=50)
    analysis = LETKF(radius=None).analyse(forecast, obs)
    P = np.cov(forecast.T)
    H = np.eye(4)[:2]
    gain = P @ H.T @ np.linalg.inv(H @ P @ H.T + np.diag(obs.std**2))
    np.testing.assert_allclose(analysis.mean(axis=0), forecast.mean(axis=0) + gain @ (obs.y - H @ forecast.mean(axis=0)),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.cov(analysis.T), (np.eye(4) - gain @ H) @ P, rtol=1e-9, atol=1e-12)


def test_global_etkf_matches_the_exact_kalman_posterior():
    forecast, obs, post_mean, post_cov = linear_gaussian(0.5)
    analysis = LETKF(radius=None, inflation=1.0).analyse(forecast, obs)
    standard_error = np.sqrt(np.diag(post_cov) / K_LARGE)
    assert np.all(np.abs(analysis.mean(axis=0) - post_mean) < 3 * standard_error)
    cov = np.cov(analysis.T)
    assert np.linalg.norm(cov - post_cov) < 0.10 * np.linalg.norm(post_cov)
    np.testing.assert_allclose(np.diag(cov), np.diag(post_cov), rtol=0.10)


def _lorenz96_case(K=12, stride=3, seed=0):
    rng = np.random.default_rng(seed)
    forecast = 3.0 * rng.standard_normal((K, 40)) + np.sin(np.arange(40))
    op = grid_operator((40,), stride=stride, periodic=True)
    obs = Observation(op, rng.standard_normal(op.m), np.full(op.m, 0.7))
    return forecast, obs


@pytest.mark.parametrize("spread", [0.3, 3.0, 100.0])
def test_inverse_square_root_of_the_ensemble_space_matrices(spread):
    """Newton-Schulz (well-conditioned stacks) and eigh (beyond its step budget) both give A^-1/2:
    Z A Z = I and Z symmetric to round-off, for condition numbers ~2, ~50 and ~1e4."""
    rng = np.random.default_rng(1)
    Y = spread * rng.standard_normal((6, 20, 40))
    lowest = 19.0 / 1.02
    A = np.einsum("lkm,ljm->lkj", Y, Y) + lowest * np.eye(20)
    Z = inverse_sqrt(A, lowest)
    np.testing.assert_allclose(Z @ A @ Z, np.broadcast_to(np.eye(20), A.shape), atol=1e-12)
    np.testing.assert_allclose(Z, Z.transpose(0, 2, 1), atol=1e-13)
    ratio = lowest / (0.5 * (lowest + np.abs(A).sum(axis=-1).max()))
    assert (newton_schulz_iterations(ratio) > NEWTON_SCHULZ_MAX_ITERATIONS) == (spread == 100.0)


def test_huge_radius_reduces_to_the_global_etkf():
    forecast, obs = _lorenz96_case()
    local = LETKF(radius=1e9, inflation=1.1).analyse(forecast, obs)
    global_ = LETKF(radius=None, inflation=1.1).analyse(forecast, obs)
    np.testing.assert_allclose(local, global_, rtol=1e-10, atol=1e-10)


def test_vectorised_letkf_matches_a_per_location_loop():
    """Hunt et al. (2007) steps 3-8 written out one location at a time, with dense inverses."""
    forecast, obs = _lorenz96_case()
    filt = LETKF(radius=3.0, inflation=1.05)
    K = len(forecast)
    mean = forecast.mean(axis=0)
    X = (forecast - mean).T  # (d, K) as in the paper
    Yf = obs.operator.apply(forecast)
    Y = (Yf - Yf.mean(axis=0)).T  # (m, K)
    rho = filt.localisation(obs.operator)
    expected = np.empty_like(forecast)
    for loc in range(40):
        C = Y.T * (rho[loc] / obs.std**2)  # Y^T R_loc^-1
        Pa = np.linalg.inv((K - 1) / filt.inflation * np.eye(K) + C @ Y)
        Wa = np.real(scipy.linalg.sqrtm((K - 1) * Pa))
        wbar = Pa @ C @ (obs.y - Yf.mean(axis=0))
        expected[:, loc] = mean[loc] + X[loc] @ (Wa + wbar[:, None])
    np.testing.assert_allclose(filt.analyse(forecast, obs), expected, rtol=1e-9, atol=1e-9)
    tiny_blocks = LETKF(radius=3.0, inflation=1.05, block_entries=3 * K * K)
    np.testing.assert_allclose(tiny_blocks.analyse(forecast, obs), expected, rtol=1e-9, atol=1e-9)


def test_locations_beyond_the_taper_are_only_inflated():
    forecast = np.random.default_rng(1).standard_normal((10, 40))
    op = ObservationOperator("points", (40,), np.array([0]), periodic=True)
    obs = Observation(op, np.array([5.0]), np.array([0.1]))
    analysis = LETKF(radius=2.0, inflation=1.21).analyse(forecast, obs)
    far = np.abs(((np.arange(40) + 20) % 40) - 20) >= 4  # periodic distance >= 2 c
    mean = forecast.mean(axis=0)
    np.testing.assert_allclose(analysis[:, far], mean[far] + 1.1 * (forecast - mean)[:, far], rtol=1e-12)
    assert abs(analysis[:, 0].mean() - 5.0) < abs(mean[0] - 5.0)  # the observed point moves


def _lorenz96_twin(n_cycles, K=20, seed=0):
    model = Lorenz96(Lorenz96Config(d=40, forcing=8.0, dt=0.01))
    rng = np.random.default_rng(seed)
    x0 = model.step(model.initial_state(np.zeros((1, 0)), rng), None, 2000)  # onto the attractor
    truth = trajectory(model, x0, None, n_cycles, 5)[0]  # obs every 0.05 = 5 RK4 steps
    ensemble = x0 + rng.standard_normal((K, 40))
    return model, truth, ensemble, full_operator((40,), periodic=True)


def test_lorenz96_letkf_accuracy_and_ensf_on_the_same_setup():
    """Every variable observed with unit noise every 0.05; K = 20; 300 cycles, first 100 spin-up."""
    model, truth, ensemble, op = _lorenz96_twin(300)
    letkf = twin(model, LETKF(radius=8.0, inflation=1.02), ensemble, truth, op, np.ones(40), 5)
    ensf = twin(model, EnSF(), ensemble, truth, op, np.ones(40), 5)
    letkf_rmse = letkf.analysis_rmse[100:].mean()
    ensf_rmse = ensf.analysis_rmse[100:].mean()
    print(f"Lorenz-96 time-averaged analysis RMSE: LETKF {letkf_rmse:.3f} (T_f {letkf.cycles.T_f:.2f} s), "
          f"EnSF {ensf_rmse:.3f} (T_f {ensf.cycles.T_f:.2f} s)")
    assert letkf_rmse <= 0.22
    assert np.all(np.isfinite(ensf.analysis_rmse))


def test_driver_records_every_cycle_and_is_reproducible():
    model, truth, ensemble, op = _lorenz96_twin(12, K=8)
    truth = truth[:4]
    steps = [5, 3, 7]  # irregular observation times
    filt = LETKF(radius=5.0, inflation=1.02)
    a = twin(model, filt, ensemble, truth, op, np.ones(40), steps, seed=3)
    b = twin(model, filt, ensemble, truth, op, np.ones(40), steps, seed=3)
    np.testing.assert_array_equal(a.analysis_mean, b.analysis_mean)
    assert a.forecast_mean.shape == a.cycles.analysis.std.shape == (3, 40)
    assert a.cycles.T_d > 0 and a.cycles.T_f > 0
    # the final state is the last analysis, run forward by the given steps
    np.testing.assert_allclose(a.cycles.state.mean(axis=0), a.analysis_mean[-1])
    # given observations replace the drawn ones
    zeros = [np.zeros(40)] * 3
    c = twin(model, filt, ensemble, truth, op, np.ones(40), steps, observations=zeros)
    assert not np.allclose(c.analysis_mean, a.analysis_mean)
    # the forecast of cycle 0 is the model run from the initial ensemble
    np.testing.assert_allclose(a.forecast_mean[0], model.step(ensemble, None, 5).mean(axis=0))
    np.testing.assert_allclose(a.forecast_rmse[0],
                               np.sqrt(np.mean((a.forecast_mean[0] - truth[1]) ** 2)))


class ShiftModel:
    """Two periodic 8 x 8 fields advected by one grid point per step (exact, linear)."""

    name, field_names, param_names, dt = "shift", ("a", "b"), (), 1.0

    def step(self, state, params=None, n_steps=1):
        return np.roll(state, n_steps, axis=-1)

    def to_fields(self, state):
        return state

    def from_fields(self, fields):
        return fields


def _smooth_fields(rng, n):
    """``n`` draws of two 8 x 8 fields from the 5 lowest periodic modes each (a rank-10 prior)."""
    i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    k = 2 * np.pi / 8
    modes = np.stack([np.ones((8, 8)), np.cos(k * i), np.sin(k * i), np.cos(k * j), np.sin(k * j)])
    return np.einsum("nfb,bij->nfij", rng.standard_normal((n, 2, 5)), modes)


def test_driver_takes_moving_sensors_and_keeps_members():
    """20 of 40 Lorenz-96 variables observed, a different half every cycle (moving sensors)."""
    model, truth, ensemble, _ = _lorenz96_twin(60)
    ops = moving_points((40,), 20, 60, np.random.default_rng(4), periodic=True)
    stds = [np.ones(op.m) for op in ops]
    res = twin(model, LETKF(radius=6.0, inflation=1.05), ensemble, truth, ops, stds, 5, keep_members=True)
    free = twin(model, LETKF(), ensemble, truth, ops, [1e6 * s for s in stds], 5)  # no weight on the data
    assert res.analysis_rmse[20:].mean() < 0.5 * free.analysis_rmse[20:].mean()
    members = res.cycles.analysis.members
    assert members.shape == (60, len(ensemble), 40)
    np.testing.assert_allclose(members.mean(axis=1), res.analysis_mean, atol=1e-6)


def test_driver_runs_a_multi_field_model_through_the_protocol():
    """(K, F, ny, nx) states: LETKF on a sparse grid pulls an ensemble of smooth fields onto the truth."""
    rng = np.random.default_rng(4)
    model = ShiftModel()
    x0 = _smooth_fields(rng, 1)[0]
    truth = np.stack([np.roll(x0, c, axis=-1) for c in range(9)])
    ensemble = _smooth_fields(rng, 16)
    op = grid_operator((2, 8, 8), stride=2, periodic=True)
    result = twin(model, LETKF(radius=4.0, inflation=1.0), ensemble, truth, op, np.full(op.m, 0.1), 1)
    assert result.cycles.state.shape == (16, 2, 8, 8)
    assert np.all(result.analysis_rmse < result.forecast_rmse)
    assert result.analysis_rmse[-1] < 0.2 * result.forecast_rmse[0]


def _sequential_filters():
    """Registered methods with the one-time ``analyse`` of the sequential driver (smoothers work on windows)."""
    return [name for name in METHODS if hasattr(METHODS[name], "analyse")]


@pytest.mark.parametrize("name", _sequential_filters())
def test_filters_reject_bad_input(name):
    filt = make_method(name, load_config("tiny"))
    forecast, obs = _lorenz96_case(K=6)
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="components"):
        filt.analyse(forecast[:, :39], obs, rng)
    with pytest.raises(InputError, match="at least 2 members"):
        filt.analyse(forecast[:1], obs, rng)
    with pytest.raises(InputError, match=r"\(K, d\)"):
        filt.analyse(forecast[0], obs, rng)
    bad = forecast.copy()
    bad[2, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        filt.analyse(bad, obs, rng)


def test_observation_and_driver_validation():
    op = grid_operator((40,), stride=3)
    with pytest.raises(InputError, match="NaN"):
        Observation(op, np.full(op.m, np.nan), np.ones(op.m))
    with pytest.raises(InputError, match="shape"):
        Observation(op, np.zeros(op.m + 1), np.ones(op.m))
    with pytest.raises(InputError, match="> 0"):
        Observation(op, np.zeros(op.m), np.zeros(op.m))
    with pytest.raises(ConfigError, match="unknown method 'enkf'; choose one of free, ensf"):
        make_method("enkf")
    with pytest.raises(ConfigError, match="radius"):
        LETKF(radius=0.0)
    model, truth, ensemble, full = _lorenz96_twin(3, K=4)
    obs = [Observation(full, truth[c + 1], np.ones(40)) for c in range(3)]
    with pytest.raises(InputError, match="operator is for members of shape"):
        cycle(model, LETKF(), ensemble[:, :30], obs, [5, 5, 5])
    with pytest.raises(InputError, match="positive step count"):
        cycle(model, LETKF(), ensemble, obs, [5, 0, 5])
    with pytest.raises(InputError, match="positive step count"):
        cycle(model, LETKF(), ensemble, obs[:2], [5, 5, 5])
    with pytest.raises(InputError, match="at least 2"):
        cycle(model, LETKF(), ensemble[:1], obs, [5, 5, 5])

"""4DEnVar: the linear-Gaussian smoother (batch posterior of x0 given every window
observation), sliding windows, joint parameter estimation, one-observation windows of a
static model (= the Kalman update, = the ETKF's cycles) and Lorenz-96."""
import numpy as np
import pytest
from problems import StaticModel, linear_gaussian, twin

from ldensf_hpc.cases import load_config
from ldensf_hpc.errors import ConfigError, InputError
from ldensf_hpc.filters import make_method
from ldensf_hpc.filters.base import Observation
from ldensf_hpc.filters.envar4d import EnVar4D
from ldensf_hpc.filters.letkf import LETKF
from ldensf_hpc.models import trajectory
from ldensf_hpc.models.lorenz96 import Lorenz96, Lorenz96Config
from ldensf_hpc.observe import ObservationOperator, full_operator, grid_operator


class LinearModel:
    """``x <- A x + B u`` per step: state ``(K, d)``, parameters ``u (K, p)``."""

    name, field_names, param_names, dt = "linear", ("x",), ("u",), 1.0

    def __init__(self, A, B):
        self.A, self.B = A, B

    def step(self, state, params, n_steps=1):
        for _ in range(n_steps):
            state = state @ self.A.T + params @ self.B.T
        return state

    def to_fields(self, state):
        return state

    def from_fields(self, fields):
        return fields


def linear_problem(seed=0, K=12, d=4):
    """A stable rotating linear model with a forcing parameter, an ensemble and 6 observation times.

    Each observation time sees other components (moving sensors) and the gaps are irregular.
    """
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    A, B = 0.95 * Q, rng.standard_normal((d, 1))
    Phi = np.block([[A, B], [np.zeros((1, d)), np.eye(1)]])  # augmented z = (x, u) propagator
    C = rng.standard_normal((d + 1, d + 1))
    z_ens = rng.multivariate_normal(rng.standard_normal(d + 1), C @ C.T / (d + 1) + 0.3 * np.eye(d + 1), size=K)
    picks = [[0, 2], [1, 3], [0], [2, 3], [1], [0, 1, 3]]
    gaps = [1, 2, 1, 3, 1, 2]
    z_true = rng.multivariate_normal(z_ens.mean(axis=0), np.eye(d + 1))
    observations, G, z = [], [], z_true
    M = np.eye(d + 1)
    for pick, gap in zip(picks, gaps):
        M = np.linalg.matrix_power(Phi, gap) @ M
        z = np.linalg.matrix_power(Phi, gap) @ z
        std = 0.3 + 0.1 * np.arange(len(pick))
        y = z[pick] + std * rng.standard_normal(len(pick))
        observations.append(Observation(ObservationOperator("points", (d,), np.array(pick)), y, std))
        G.append(M[pick])  # H_i Phi^{t_i}: maps z0 to the observed components
    return LinearModel(A, B), z_ens, observations, gaps, G, Phi


def batch_posterior(prior_mean, prior_cov, observations, G):
    """Gaussian posterior of z0 given all observations y_i = G_i z0 + noise (closed form)."""
    precision = np.linalg.inv(prior_cov)
    info = precision @ prior_mean
    for obs, g in zip(observations, G):
        precision = precision + g.T @ np.diag(obs.inv_var) @ g
        info = info + g.T @ (obs.inv_var * obs.y)
    cov = np.linalg.inv(precision)
    return cov @ info, cov


@pytest.mark.parametrize("window", [3, 6])
def test_linear_gaussian_smoother_is_exact(window):
    """K > dim z: the smoothed initial mean and covariance equal the batch posterior given the
    ensemble mean and covariance as prior; sliding windows (window 3 = two windows) give the
    posterior propagated to the second window's start. Parameters u are estimated jointly."""
    model, z_ens, observations, gaps, G, Phi = linear_problem()
    d = z_ens.shape[1] - 1
    res = EnVar4D(window=window).run(model, z_ens[:, :d], observations, gaps, params=z_ens[:, d:])
    mean, cov = batch_posterior(z_ens.mean(axis=0), np.cov(z_ens.T), observations, G)
    to_start = np.linalg.matrix_power(Phi, sum(gaps[:3]) if window == 3 else 0)  # z0 -> last window start
    np.testing.assert_allclose(res.analysis_mean[-1], to_start @ mean, atol=1e-10)
    np.testing.assert_allclose(res.analysis_std[-1] ** 2, np.diag(to_start @ cov @ to_start.T), rtol=1e-9)
    # the final ensemble is the smoother's posterior at the end of the last window (= the filter's)
    end = np.linalg.matrix_power(Phi, sum(gaps))
    final = np.concatenate([res.ensemble, res.params], axis=1)
    np.testing.assert_allclose(final.mean(axis=0), end @ mean, atol=1e-10)
    np.testing.assert_allclose(np.cov(final.T), end @ cov @ end.T, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(res.trajectory_mean[-1], end @ mean, atol=1e-10)
    np.testing.assert_array_equal(res.times, np.cumsum(gaps))
    assert res.starts.tolist() == ([0, 4] if window == 3 else [0])
    # background trajectory: the model run from the background mean
    np.testing.assert_allclose(res.background_trajectory[0], Phi @ z_ens.mean(axis=0), atol=1e-12)
    assert np.all(res.cost_analysis < res.cost_background)


def test_outer_loops_change_nothing_for_a_linear_model():
    """For a linear model a Gauss-Newton re-linearisation changes nothing."""
    model, z_ens, observations, gaps, _, _ = linear_problem(seed=1)
    d = z_ens.shape[1] - 1
    one = EnVar4D(window=6).run(model, z_ens[:, :d], observations, gaps, params=z_ens[:, d:])
    three = EnVar4D(window=6, outer_loops=3).run(model, z_ens[:, :d], observations, gaps, params=z_ens[:, d:])
    np.testing.assert_allclose(three.analysis_mean, one.analysis_mean, atol=1e-10)
    np.testing.assert_allclose(three.analysis_std, one.analysis_std, rtol=1e-8)


def test_inflation_scales_the_prior_covariance():
    model, z_ens, observations, gaps, G, _ = linear_problem(seed=2)
    d = z_ens.shape[1] - 1
    res = EnVar4D(window=6, inflation=1.5).run(model, z_ens[:, :d], observations, gaps, params=z_ens[:, d:])
    mean, cov = batch_posterior(z_ens.mean(axis=0), 1.5**2 * np.cov(z_ens.T), observations, G)
    np.testing.assert_allclose(res.analysis_mean[0], mean, atol=1e-10)
    np.testing.assert_allclose(res.analysis_std[0] ** 2, np.diag(cov), rtol=1e-9)


def test_one_observation_of_a_static_model_is_the_kalman_update_of_the_ensemble_statistics():
    forecast, obs, *_ = linear_gaussian(0.5, K=30)
    analysis = EnVar4D(window=1, inflation=1.2).run(StaticModel(), forecast, [obs], 1, keep_members=True)
    analysis = analysis.trajectory_members[0]
    P = 1.2**2 * np.cov(forecast.T)
    H = np.eye(4)[:2]
    gain = P @ H.T @ np.linalg.inv(H @ P @ H.T + np.diag(obs.std**2))
    mean = forecast.mean(axis=0)
    np.testing.assert_allclose(analysis.mean(axis=0), mean + gain @ (obs.y - H @ mean), atol=1e-12)
    np.testing.assert_allclose(np.cov(analysis.T), (np.eye(4) - gain @ H) @ P, rtol=1e-9, atol=1e-12)


def _lorenz96(n_obs, K, seed=0):
    model = Lorenz96(Lorenz96Config(d=10, dt=0.05))
    rng = np.random.default_rng(seed)
    x0 = model.step(model.initial_state(np.zeros((1, 0)), rng), None, 200)
    truth = trajectory(model, x0, None, n_obs, 2)[0]  # (n_obs + 1, d), obs every 2 steps (0.1 time)
    ensemble = truth[0] + rng.standard_normal((K, 10))
    op = grid_operator((10,), stride=2, periodic=True)
    std = np.full(op.m, 0.5)
    obs = [Observation(op, op.apply(truth[t][None])[0] + std * rng.standard_normal(op.m), std)
           for t in range(1, n_obs + 1)]
    return model, truth, ensemble, obs


def test_lorenz96_window_smoother_tracks_the_truth():
    """d = 10, every other component observed, K = 15: the analysis stays near the truth, far
    below the climatological spread, with and without outer loops."""
    model, truth, ensemble, obs = _lorenz96(24, 15)
    errors = {}
    for loops in (1, 2):
        res = EnVar4D(window=3, inflation=1.05, outer_loops=loops).run(model, ensemble, obs, 2)
        err = np.sqrt(((res.trajectory_mean - truth[1:]) ** 2).mean(axis=1))
        errors[loops] = err[-12:].mean()
        assert errors[loops] < 0.4, errors  # obs std 0.5; climatological std of Lorenz-96 ~ 3.6
        assert res.analysis_mean.shape == (8, 10) and res.ensemble.shape == (15, 10) and res.params is None
    free = trajectory(model, ensemble, None, 24, 2).mean(axis=0)[1:]
    assert np.sqrt(((free - truth[1:]) ** 2).mean(axis=1))[-12:].mean() > 5 * errors[1]


def test_one_observation_windows_of_a_static_model_are_the_global_etkf_cycles():
    """Anomaly inflation rho is the LETKF's covariance inflation rho^2: identical cycles."""
    _, truth, ensemble, obs = _lorenz96(12, 15, seed=1)
    filt = make_method("envar4d", load_config("tiny", overrides=["envar4d.inflation=1.05", "envar4d.window=1"]))
    assert filt.inflation == 1.05 and filt.window == 1
    res = filt.run(StaticModel(), ensemble, obs, 2)
    op, std, y = obs[0].operator, obs[0].std, [o.y for o in obs]
    ref = twin(StaticModel(), LETKF(radius=None, inflation=1.05**2), ensemble, truth, op, std, 2, observations=y)
    np.testing.assert_allclose(res.trajectory_mean, ref.analysis_mean, atol=1e-9)
    np.testing.assert_allclose(res.trajectory_std, ref.cycles.analysis.std, atol=1e-9)


def test_bad_input_raises_clear_errors():
    model, z_ens, observations, gaps, _, _ = linear_problem()
    x, u = z_ens[:, :4], z_ens[:, 4:]
    with pytest.raises(ConfigError, match="window"):
        EnVar4D(window=0)
    with pytest.raises(ConfigError, match="inflation"):
        EnVar4D(inflation=0.9)
    with pytest.raises(ConfigError, match="outer_loops"):
        EnVar4D(outer_loops=0)
    with pytest.raises(InputError, match="at least 2 members"):
        EnVar4D().run(model, x[:1], observations, gaps, params=u[:1])
    with pytest.raises(InputError, match="steps"):
        EnVar4D().run(model, x, observations, gaps[:-1], params=u)
    with pytest.raises(InputError, match="params"):
        EnVar4D().run(model, x, observations, gaps, params=u[:3])
    with pytest.raises(InputError, match="components"):
        EnVar4D().run(model, x, [Observation(full_operator((5,)), np.zeros(5), 1.0)], 1, params=u)
    with pytest.raises(InputError, match="at least one observation"):
        EnVar4D().run(model, x, [], 1, params=u)

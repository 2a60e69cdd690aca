"""LEVDA on tiny random LDNets used both as truth generator and as model (twin experiments):
the autograd gradient of J against finite differences, error reduction with fixed and
moving sensors and irregular times, joint parameter estimation, eq. 17, the grid
observation conversion and input validation."""
import math

import numpy as np
import pytest
import torch

from ldensf_hpc.cases import load_config
from ldensf_hpc.config import LDNetConfig
from ldensf_hpc.data.dataset import Normalization
from ldensf_hpc.errors import ConfigError, InputError
from ldensf_hpc.filters import make_method
from ldensf_hpc.filters.levda import (
    LEVDA,
    LatentWindow,
    PointObservation,
    interpolate_latent,
    point_observations,
)
from ldensf_hpc.observe import grid_operator
from ldensf_hpc.surrogate.ldnet import LDNet

U_TRUE, OBS_STD, N_STEPS, WINDOW = 0.6, 0.05, 20, 4


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_ldnet(dtype=torch.float64, n_fields=1, norm=None, seed=0):
    """A random (untrained) smooth LDNet: latent 3, one parameter."""
    torch.manual_seed(seed)
    cfg = LDNetConfig(latent=3, dyn_depth=2, dyn_width=16, rec_depth=2, rec_width=32, fourier_features=4,
                      fourier_scale=1.0, activation="tanh", dt_hat=0.2)
    norm = norm or Normalization((0.0,) * n_fields, (1.0,) * n_fields, (-1.0,), (1.0,), (-1.0, -1.0), (1.0, 1.0))
    return LDNet(cfg, 1, n_fields, norm).to(dtype).eval()


def rollout(net, z, n):
    """``(n, B, D)`` states ``z`` at latent steps ``0 ... n - 1``."""
    out = [torch.as_tensor(z, dtype=next(net.parameters()).dtype)]
    with torch.no_grad():
        for _ in range(n - 1):
            s, u = out[-1][:, :net.latent], out[-1][:, net.latent:]
            out.append(torch.cat([net.step(s, u), u], dim=1))
    return torch.stack(out).double().numpy()


def twin(net, K=10, times=None, moving=False, seed=0):
    """Truth from ``s_{-1} = 0`` at u = 0.6, prior u ~ N(0, 0.5^2) with a perturbed s_0, noisy observations
    of 16 points at ``times`` (default every latent step), fixed or redrawn per time (moving sensors)."""
    rng = np.random.default_rng(seed)
    dtype = next(net.parameters()).dtype
    with torch.no_grad():
        s0 = net.step(torch.zeros(1, net.latent, dtype=dtype), torch.tensor([[U_TRUE]], dtype=dtype))
        u = torch.as_tensor(0.5 * rng.standard_normal((K, 1)), dtype=dtype)
        s0_prior = net.step(torch.zeros(K, net.latent, dtype=dtype), u)
    truth = rollout(net, torch.cat([s0, torch.tensor([[U_TRUE]], dtype=dtype)], dim=1), N_STEPS + 1)[:, 0]
    prior = np.concatenate([s0_prior.double().numpy() + 0.05 * rng.standard_normal((K, net.latent)),
                            u.double().numpy()], axis=1)
    times = np.arange(N_STEPS, dtype=float) if times is None else times
    xi = rng.uniform(-1, 1, (16, 2))
    observations = []
    for t in times:
        xi = rng.uniform(-1, 1, (16, 2)) if moving else xi
        k, a = int(t), t - int(t)
        s = torch.as_tensor(truth[k:k + 1, :net.latent], dtype=dtype)
        u_true = torch.tensor([[U_TRUE]], dtype=dtype)
        with torch.no_grad():
            clean = net.reconstruct(interpolate_latent(net, s, u_true, a), torch.as_tensor(xi, dtype=dtype))
        values = clean[0, :, 0].double().numpy() + OBS_STD * rng.standard_normal(16)
        observations.append(PointObservation(t, xi, values, OBS_STD))
    return truth[:N_STEPS], prior, observations


def errors(result, truth, free):
    """Per-step error of the analysis trajectory mean and of the free run, norm over z."""
    analysis = np.linalg.norm(result.trajectory_mean - truth, axis=1)
    return analysis, np.linalg.norm(free.mean(axis=1) - truth, axis=1)


def test_gradient_of_the_cost_matches_central_differences():
    """float64, two fields, irregular times, inflation, additive noise and the RML terms: rel. error < 1e-6."""
    net = tiny_ldnet(n_fields=2)
    rng = np.random.default_rng(1)
    background = torch.as_tensor(rollout(net, rng.standard_normal((6, 4)) * [0.3, 0.3, 0.3, 0.5], 1)[0])
    obs = [PointObservation(t, rng.uniform(-1, 1, (5, 2)), rng.standard_normal(5), 0.1 + 0.1 * rng.random(5),
                            rng.integers(0, 2, 5)) for t in (0.0, 1.5, 2.0, 3.25)]
    window = LatentWindow(net, background, obs, 0.0, inflation=1.3, noise=0.1 * torch.randn(6, 4, dtype=torch.float64))
    centres = torch.as_tensor(rng.standard_normal((2, 6)))
    perturbations = [p[:2] for p in window.observation_perturbations(6, rng)]
    alpha = torch.as_tensor(rng.standard_normal((2, 6)), dtype=torch.float64).requires_grad_(True)
    for args in ((), (centres, perturbations)):
        grad = torch.autograd.grad(window.cost(alpha, *args).sum(), alpha)[0]
        fd = torch.zeros_like(grad)
        h = 1e-5
        with torch.no_grad():
            for idx in np.ndindex(*alpha.shape):
                step = torch.zeros_like(alpha)
                step[idx] = h
                fd[idx] = (window.cost(alpha + step, *args).sum() - window.cost(alpha - step, *args).sum()) / (2 * h)
        assert (torch.linalg.norm(grad - fd) / torch.linalg.norm(grad)).item() < 1e-6


def test_warm_starts_recover_the_trajectory_and_the_parameter():
    """Paper §3.2 (common cost, warm starts), float32 as trained LDNets are: the analysis trajectory
    error is far below the no-assimilation error and u is recovered; J decreases in every window;
    the members converge to J's (here unique) minimiser, so the spread collapses."""
    net = tiny_ldnet(dtype=torch.float32)
    truth, prior, obs = twin(net)
    res = LEVDA(window=WINDOW, max_iter=30, additive=0.02).run(net, prior, obs)
    analysis, free = errors(res, truth, rollout(net, prior, N_STEPS))
    assert res.trajectory_mean.shape == (N_STEPS, 4) and res.analysis_mean.shape == (N_STEPS // WINDOW, 4)
    assert np.all(analysis < 0.15 * free) and analysis[-WINDOW:].mean() < 0.05 * free[-WINDOW:].mean()
    assert abs(res.analysis_mean[-1, -1] - U_TRUE) < 0.1 * abs(prior[:, -1].mean() - U_TRUE)
    assert np.all(res.cost_analysis < res.cost_background)
    assert res.cost_analysis[0] < 0.2 * res.cost_background[0]
    assert (np.linalg.norm(res.trajectory_std, axis=1) / analysis).mean() < 1e-2  # measured 2e-3
    assert res.ensemble.shape == (10, 4) and res.ensemble.dtype == np.float32


def test_perturbed_observations_keep_a_calibrated_spread():
    """Randomised maximum likelihood members: same accuracy, spread of the size of the error."""
    net = tiny_ldnet()
    truth, prior, obs = twin(net)
    res = LEVDA(window=WINDOW, max_iter=30, perturb_obs=True).run(net, prior, obs, seed=3)
    analysis, free = errors(res, truth, rollout(net, prior, N_STEPS))
    spread = np.linalg.norm(res.trajectory_std, axis=1)
    assert np.all(analysis < 0.15 * free) and analysis[-WINDOW:].mean() < 0.05 * free[-WINDOW:].mean()
    assert abs(res.analysis_mean[-1, -1] - U_TRUE) < 0.1 * abs(prior[:, -1].mean() - U_TRUE)
    assert 0.5 < (spread / analysis).mean() < 4.0
    again = LEVDA(window=WINDOW, max_iter=30, perturb_obs=True).run(net, prior, obs, seed=3)
    np.testing.assert_array_equal(again.trajectory_mean, res.trajectory_mean)  # seeded


@pytest.mark.parametrize("scenario", ["moving", "irregular"])
def test_moving_sensors_and_irregular_times_still_reduce_the_error(scenario):
    """Sensors redrawn at every time (H_i per time), or 14 random non-integer observation times."""
    net = tiny_ldnet()
    times = np.sort(np.random.default_rng(5).uniform(0, N_STEPS - 1, 14)) if scenario == "irregular" else None
    truth, prior, obs = twin(net, times=times, moving=scenario == "moving", seed=2)
    assert scenario == "moving" or all(0 < ob.time % 1 for ob in obs)
    assert scenario != "moving" or not np.array_equal(obs[0].xi, obs[1].xi)
    res = LEVDA(window=WINDOW, max_iter=30, additive=0.02).run(net, prior, obs, n_windows=N_STEPS // WINDOW)
    analysis, free = errors(res, truth, rollout(net, prior, N_STEPS))
    assert analysis[-WINDOW:].mean() < 0.1 * free[-WINDOW:].mean()
    assert abs(res.analysis_mean[-1, -1] - U_TRUE) < 0.2 * abs(prior[:, -1].mean() - U_TRUE)


def test_off_step_times_use_the_linearised_latent_state():
    """Eq. 17: s(t_k + a dt) = s(t_k) + a dt F(s(t_k), u); at a = 0 it is s(t_k) itself."""
    net = tiny_ldnet()
    z = torch.as_tensor(rollout(net, np.array([[0.1, -0.2, 0.3, 0.4], [0.0, 0.5, -0.1, -0.6]]), 4))  # (4, 2, 4)
    s2, u = z[2, :, :3], z[2, :, 3:]
    with torch.no_grad():
        expected = s2 + 0.25 * net.cfg.dt_hat * net.dynamics(s2, u)
        torch.testing.assert_close(interpolate_latent(net, s2, u, 0.25), expected, rtol=0, atol=0)
        torch.testing.assert_close(interpolate_latent(net, s2, u, 0.0), s2, rtol=0, atol=0)
        xi = torch.as_tensor(np.random.default_rng(0).uniform(-1, 1, (6, 2)))
        for t, s_t in ((2.25, expected), (2.0, s2)):
            # the cost sees exactly this state: observations of R(s_t) leave no misfit from the true z_0
            values = net.reconstruct(s_t[:1], xi)[0, :, 0].numpy()
            window = LatentWindow(net, z[0], [PointObservation(t, xi.numpy(), values, 0.1)], 0.0)
            assert window.misfit(z[0, :1]).item() < 1e-25
            other = net.reconstruct(z[3, :1, :3], xi)[0, :, 0].numpy()  # s_3 instead: a clear misfit
            assert LatentWindow(net, z[0], [PointObservation(t, xi.numpy(), other, 0.1)], 0.0).misfit(
                z[0, :1]).item() > 1e-4


def test_grid_observations_convert_to_the_ldnet_units():
    """Physical (F, ny, nx) fields observed on a grid -> standardised values at scaled (x, y) points:
    the observations of R's own fields give zero misfit at the generating state."""
    norm = Normalization((1.0, -2.0), (2.0, 0.5), (-1.0,), (1.0,), (0.0, 0.0), (10.0, 5.0))
    net = tiny_ldnet(n_fields=2, norm=norm)
    x, y = np.linspace(0.0, 10.0, 7), np.linspace(0.0, 5.0, 5)
    z = torch.as_tensor(rollout(net, np.array([[0.2, 0.1, -0.3, 0.5]]), 3))  # (3, 1, 4)
    fields = np.stack([net.fields_on_grid(z[t, :, :3], x, y)[0].numpy() for t in range(3)])  # (3, 2, 5, 7)
    op = grid_operator((2, 5, 7), stride=2)
    values = np.stack([op.apply(f[None])[0] for f in fields])
    obs = point_observations(net, op, x, y, values, np.full(op.m, 0.2), [0.0, 1.0, 2.0])
    np.testing.assert_allclose(obs[0].std, 0.2 / np.array([2.0, 0.5])[op.field])
    window = LatentWindow(net, torch.cat([z[0], z[0] + 0.1]), obs, 0.0)
    with torch.no_grad():
        assert window.misfit(z[0]).item() < 1e-20
        assert window.misfit(z[0] + 0.01).item() > 1e-3


def test_misfit_shares_points_and_times_exactly():
    """R runs once per distinct point and once for the times observed at the same points: the misfit
    equals eq. 19's sum over every observed value, here two fields at one sensor set, an off-step
    time, and a second sensor set."""
    net = tiny_ldnet(n_fields=2)
    rng = np.random.default_rng(3)
    z = torch.as_tensor(rng.standard_normal((3, 4)))
    grid, other = rng.uniform(-1, 1, (5, 2)), rng.uniform(-1, 1, (4, 2))
    both = np.concatenate([grid, grid])  # each point twice: fields 0 and 1
    obs = [PointObservation(t, xi, rng.standard_normal(len(xi)), rng.uniform(0.1, 0.3, len(xi)), fields)
           for t, xi, fields in ((0.0, both, np.repeat([0, 1], 5)), (1.5, both, np.repeat([1, 0], 5)),
                                 (2.0, other, np.array([0, 1, 1, 0])), (3.0, both, np.repeat([0, 1], 5)))]
    with torch.no_grad():
        states = rollout(net, z.numpy(), 4)
        expected = torch.zeros(3, dtype=torch.float64)
        for ob in obs:
            k, a = int(ob.time), ob.time - int(ob.time)
            s, u = torch.as_tensor(states[k, :, :3]), torch.as_tensor(states[k, :, 3:])
            s_t = interpolate_latent(net, s, u, a)
            for m in range(len(ob.values)):
                predicted = net.reconstruct(s_t, torch.as_tensor(ob.xi[m:m + 1]))[:, 0, ob.fields[m]]
                expected += 0.5 * ((ob.values[m] - predicted) / ob.std[m]) ** 2
        window = LatentWindow(net, z, obs, 0.0)
        assert len(window.sites) == 2 and [len(numbers) for _, numbers in window.sites] == [3, 1]
        torch.testing.assert_close(window.misfit(z), expected, rtol=1e-12, atol=0)


def test_model_error_adds_to_the_noise_variance():
    """``model_error`` m is R_i = diag(std_i^2 + m^2): the same analysis as observations of std hypot(std_i, m),
    and a larger m weighs the data less (the analysis moves less from the background)."""
    net = tiny_ldnet()
    truth, prior, obs = twin(net)
    res = LEVDA(window=WINDOW, max_iter=10, model_error=0.3).run(net, prior, obs)
    widened = [PointObservation(o.time, o.xi, o.values, np.hypot(o.std, 0.3)) for o in obs]
    same = LEVDA(window=WINDOW, max_iter=10).run(net, prior, widened)
    np.testing.assert_array_equal(res.trajectory_mean, same.trajectory_mean)
    plain = LEVDA(window=WINDOW, max_iter=10).run(net, prior, obs)
    assert np.all(res.cost_analysis < plain.cost_analysis)  # J's data term divided by (std^2 + m^2) / std^2


def test_config_registry_and_bad_input():
    cfg = load_config("tiny", overrides=["levda.window=3", "levda.max_iter=7", "levda.perturb_obs=true",
                                         "levda.model_error=0.05", "levda.tempering=3"])
    filt = make_method("levda", cfg)
    assert (filt.window, filt.max_iter, filt.perturb_obs, filt.model_error) == (3, 7, True, 0.05)
    assert filt.weights() == [0.01, 0.1, 1.0] and LEVDA().weights() == [1.0]
    net = tiny_ldnet()
    _, prior, obs = twin(net)
    with pytest.raises(ConfigError, match="window"):
        LEVDA(window=0).run(net, prior, obs)
    for bad in ({"inflation": 0.5}, {"additive": -1.0}, {"max_iter": 0}, {"model_error": -0.1},
                {"model_error": math.inf}, {"tempering": 0}, {"tempering": 1.5}):
        with pytest.raises(ConfigError):
            LEVDA(**bad)
    with pytest.raises(InputError, match="at least 2 members"):
        LEVDA(window=4).run(net, prior[:1], obs)
    with pytest.raises(InputError, match=r"latent \+ p = 4"):
        LEVDA(window=4).run(net, prior[:, :3], obs)
    with pytest.raises(InputError, match="NaN"):
        LEVDA(window=4).run(net, np.where(np.eye(10, 4) > 0, np.nan, prior), obs)
    with pytest.raises(InputError, match="after the last window"):
        LEVDA(window=4).run(net, prior, obs, n_windows=2)
    with pytest.raises(InputError, match="field 1"):
        LEVDA(window=4).run(net, prior, [(0.0, np.zeros((2, 2)), np.zeros(2), 0.1, np.array([0, 1]))])
    with pytest.raises(InputError, match="additive"):
        LEVDA(window=4, additive=(0.1, 0.1)).run(net, prior, obs)
    with pytest.raises(InputError, match="PointObservation"):
        LEVDA(window=4).run(net, prior, [(0.0, np.zeros((2, 2)))])
    with pytest.raises(InputError, match=r"\(2,\) for 2 points"):
        PointObservation(0.0, np.zeros((2, 2)), np.zeros(3), 0.1)
    with pytest.raises(InputError, match=r"\(M >= 1, dim >= 2\)"):
        PointObservation(0.0, np.zeros((2, 1)), np.zeros(2), 0.1)
    with pytest.raises(InputError, match="plane takes 2"):
        LEVDA(window=4).run(net, prior, [(0.0, np.zeros((2, 3)), np.zeros(2), 0.1)])
    with pytest.raises(InputError, match="std"):
        PointObservation(0.0, np.zeros((2, 2)), np.zeros(2), [0.1, 0.0])
    with pytest.raises(InputError, match="time"):
        PointObservation(-1.0, np.zeros((2, 2)), np.zeros(2), 0.1)
    assert math.isclose(PointObservation(1.5, np.zeros((1, 2)), [2.0], 0.1).time, 1.5)

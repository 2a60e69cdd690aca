"""Latent-EnSF with a trained tiny coupled VAE: informative observations correct a wrong forecast,
an uninformative one keeps the prior, latent observation errors, input and operator checks."""
from dataclasses import replace

import numpy as np
import pytest
from test_vae import standardized_frames, trained_vae

from ldensf_hpc.backend import rng_for
from ldensf_hpc.data.dataset import TrajectoryStore, load_normalization, split_indices
from ldensf_hpc.errors import BackendError, ConfigError, InputError
from ldensf_hpc.filters.base import Observation
from ldensf_hpc.filters.latent_ensf import LatentEnSF, decode_states, encode_states, latent_obs_std
from ldensf_hpc.observe import grid_operator, points_operator
from ldensf_hpc.surrogate import load_checkpoint
from ldensf_hpc.surrogate.training import observation_operator
from ldensf_hpc.surrogate.vae import CoupledVAE

NOISE = 0.1  # observation noise std, standardised units (10 %)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def noisy(operator, frames, std, rng):
    """Observations ``H x + std z`` of standardised frames ``(N, F, ny, nx)``."""
    return operator.apply(frames) + std * rng.standard_normal((len(frames), operator.m))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The trained VAE, its operator, the latent observation std, and a frame getter (standardised)."""
    root, cfg, _ = trained_vae(tmp_path_factory)
    vae = CoupledVAE.from_checkpoint(load_checkpoint(root / "out" / "vae.pt")).eval()
    store = TrajectoryStore(root / "data")
    norm = load_normalization(store, cfg.data.split, cfg.data.seed)
    operator, _ = observation_operator(cfg, store)
    splits = split_indices(store.n_trajectories, cfg.data.split, cfg.data.seed)
    val, _ = standardized_frames(root, cfg, "val")
    latent_std = np.maximum(latent_obs_std(vae, val, noisy(operator, val, NOISE, rng_for(0, 1))), 0.1)

    def frames(trajectories, t):
        return np.stack([norm.standardize(store.frames(j)[t], axis=0) for j in trajectories]).astype(np.float64)

    return cfg, vae, operator, splits, latent_std, frames


def test_informative_observations_correct_a_wrong_forecast(setup):
    """Truth: a held-out trajectory; forecast: the same time of the 18 training trajectories
    (bumps elsewhere). The analysis mean must be much closer to the truth."""
    cfg, vae, operator, splits, latent_std, frames = setup
    filt = replace(LatentEnSF.from_config(cfg), vae=vae, latent_std=latent_std)
    ratios = []
    for j in splits["test"]:
        for t in (4, 10):
            truth = frames([j], t).reshape(-1)
            forecast = frames(splits["train"], t).reshape(len(splits["train"]), -1)
            y = operator.apply(truth[None])[0] + NOISE * rng_for(1, int(j), t).standard_normal(operator.m)
            analysis = filt.analyse(forecast, Observation(operator, y, NOISE), rng_for(2, int(j), t))
            assert analysis.shape == forecast.shape and analysis.dtype == forecast.dtype
            ratios.append(np.linalg.norm(analysis.mean(0) - truth) / np.linalg.norm(forecast.mean(0) - truth))
    assert max(ratios) < 0.8 and np.mean(ratios) < 0.6, np.round(ratios, 3)


def test_uninformative_observation_keeps_the_prior(setup):
    """Huge latent std: member-paired, sample k ends at decoded member k (up to the last step's
    noise); with the mixture score every sample ends at some decoded member."""
    _, vae, operator, splits, _, frames = setup
    K = len(splits["train"])
    forecast = frames(splits["train"], 6).reshape(K, -1).astype(np.float32)
    obs = Observation(operator, operator.apply(frames(splits["test"][:1], 6))[0], NOISE)
    prior = decode_states(vae, encode_states(vae, forecast)).reshape(K, -1)
    size = np.linalg.norm(prior, axis=1)

    paired = LatentEnSF(vae=vae, latent_std=1e6, mixture=False).analyse(forecast, obs, rng_for(3))
    assert paired.dtype == np.float32
    assert np.linalg.norm(paired.mean(0) - prior.mean(0)) < 0.12 * np.linalg.norm(prior.mean(0))
    assert np.all(np.linalg.norm(paired - prior, axis=1) < 0.3 * size)

    mixture = LatentEnSF(vae=vae, latent_std=1e6).analyse(forecast, obs, rng_for(3))
    dist = np.linalg.norm(mixture[:, None] - prior[None], axis=2)
    nearest = dist.argmin(axis=1)
    assert np.all(dist.min(axis=1) < 0.3 * size[nearest])
    apart = np.linalg.norm(prior[:, None] - prior[None], axis=2)[~np.eye(K, dtype=bool)]
    assert np.median(apart) > 1.0 * size.mean()  # the members are far apart compared with that


def test_latent_obs_std_grows_with_the_noise(setup):
    _, vae, operator, splits, _, frames = setup
    x = frames(splits["val"], 6)
    exact = latent_obs_std(vae, x, noisy(operator, x, 0.0, rng_for(4)))
    rough = latent_obs_std(vae, x, noisy(operator, x, 1.0, rng_for(4)))
    assert exact.shape == rough.shape == (vae.latent,)
    assert np.all(exact > 0) and np.mean(rough) > 1.5 * np.mean(exact)
    with pytest.raises(InputError, match="frames must be"):
        latent_obs_std(vae, x[:, :2], noisy(operator, x, 0.1, rng_for(4)))
    with pytest.raises(InputError, match="observations must be"):
        latent_obs_std(vae, x, np.ones((len(x), 3)))


def test_shape_and_operator_mismatches_are_clear_errors(setup):
    cfg, vae, operator, splits, latent_std, frames = setup
    forecast = frames(splits["train"][:4], 6).reshape(4, -1)
    y = operator.apply(forecast[:1])[0]
    filt = LatentEnSF(vae=vae, latent_std=latent_std)
    with pytest.raises(ConfigError, match=f"takes {operator.m} observations"):
        other = grid_operator(vae.state_shape, 3)
        filt.analyse(forecast, Observation(other, other.apply(forecast[:1])[0], NOISE), rng_for(5))
    moved = points_operator(vae.state_shape, operator.m // vae.n_fields, rng_for(6))
    assert moved.m == operator.m
    with pytest.raises(ConfigError, match="other components"):
        filt.analyse(forecast, Observation(moved, moved.apply(forecast[:1])[0], NOISE), rng_for(5))
    small = grid_operator((3, 8, 8), 2)
    with pytest.raises(ConfigError, match="states of shape"):
        filt.analyse(forecast[:, :small.d], Observation(small, small.apply(forecast[:1, :small.d])[0], NOISE),
                     rng_for(5))
    with pytest.raises(InputError, match="components"):
        filt.analyse(forecast[:, :-1], Observation(operator, y, NOISE), rng_for(5))
    with pytest.raises(InputError, match="latent_std"):
        LatentEnSF(vae=vae, latent_std=np.ones(vae.latent + 1))
    with pytest.raises(InputError, match="latent_std"):
        LatentEnSF(vae=vae, latent_std=0.0)
    with pytest.raises(BackendError, match="unknown EnSF kernel backend 'fortran'"):
        LatentEnSF(vae=vae, latent_std=1.0, kernel="fortran")
    f = LatentEnSF.from_config(cfg)
    assert (f.n_steps, f.eps_alpha, f.mixture, f.kernel, f.name) == (cfg.ensf.n_steps, cfg.ensf.eps_alpha,
                                                                      cfg.ensf.mixture, cfg.ensf.kernel, "latent_ensf")

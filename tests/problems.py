"""Small shared test problems with known answers."""
import numpy as np

from ldensf_hpc.filters.base import Observation
from ldensf_hpc.observe import ObservationOperator

K_LARGE = 2000


def linear_gaussian(obs_std, seed=0, K=K_LARGE):
    """d = 4 Gaussian prior sample, components 0 and 1 observed, and the exact Kalman posterior."""
    rng = np.random.default_rng(seed)
    d = 4
    A = rng.standard_normal((d, d))
    P = A @ A.T / d + 0.5 * np.eye(d)
    mu = rng.standard_normal(d)
    forecast = rng.multivariate_normal(mu, P, size=K)
    op = ObservationOperator("grid", (d,), np.array([0, 1]))
    H, R = np.eye(d)[:2], obs_std**2 * np.eye(2)
    y = H @ rng.multivariate_normal(mu, P) + obs_std * rng.standard_normal(2)
    gain = P @ H.T @ np.linalg.inv(H @ P @ H.T + R)
    post_mean, post_cov = mu + gain @ (y - H @ mu), (np.eye(d) - gain @ H) @ P
    return forecast, Observation(op, y, np.full(2, obs_std)), post_mean, post_cov

"""Metrics against hand-computed values, brute-force sums and a Gaussian CRPS closed form."""
import math

import numpy as np
import pytest

from ldensf_hpc import metrics
from ldensf_hpc.errors import InputError

# two members, two components: mean (2, 4), truth (2, 3)
ENSEMBLE = np.array([[1.0, 2.0], [3.0, 6.0]])
TRUTH = np.array([2.0, 3.0])


def test_hand_computed_values():
    assert metrics.rmse(ENSEMBLE, TRUTH) == pytest.approx(math.sqrt(0.5))
    assert metrics.rel_rmse(ENSEMBLE, TRUTH) == pytest.approx(1.0 / math.sqrt(13.0))
    assert metrics.spread(ENSEMBLE) == pytest.approx(math.sqrt(5.0))  # variances 2 and 8
    assert metrics.spread_error_ratio(ENSEMBLE, TRUTH) == pytest.approx(math.sqrt(10.0))
    # component 0: 1 - 4 / 8; component 1: 2 - 8 / 8
    assert metrics.crps(ENSEMBLE, TRUTH) == pytest.approx(0.75)
    expected_es = (math.sqrt(2.0) + math.sqrt(10.0)) / 2.0 - 2.0 * math.sqrt(20.0) / 8.0
    assert metrics.energy_score(ENSEMBLE, TRUTH) == pytest.approx(expected_es)
    assert metrics.param_error(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([2.0, 2.0])) == pytest.approx(
        1.0 / math.sqrt(8.0))


def test_fields_are_flattened_after_the_member_axis():
    ens = ENSEMBLE.reshape(2, 1, 1, 2)
    assert metrics.rmse(ens, TRUTH.reshape(1, 1, 2)) == pytest.approx(math.sqrt(0.5))


def test_crps_and_energy_score_match_brute_force_pair_sums():
    rng = np.random.default_rng(0)
    ens, truth = rng.standard_normal((7, 5)), rng.standard_normal(5)
    K = len(ens)
    pair = np.abs(ens[:, None, :] - ens[None, :, :]).sum(axis=(0, 1))
    crps = np.mean(np.abs(ens - truth).mean(axis=0) - pair / (2 * K * K))
    dist = np.linalg.norm(ens[:, None, :] - ens[None, :, :], axis=-1).sum()
    es = np.linalg.norm(ens - truth, axis=1).mean() - dist / (2 * K * K)
    assert metrics.crps(ens, truth) == pytest.approx(crps, rel=1e-12)
    assert metrics.energy_score(ens, truth) == pytest.approx(es, rel=1e-10)
    # in one dimension the energy score is the CRPS
    assert metrics.energy_score(ens[:, :1], truth[:1]) == pytest.approx(metrics.crps(ens[:, :1], truth[:1]))


def test_crps_of_a_large_gaussian_ensemble_matches_the_closed_form():
    """CRPS(N(0, s^2), 0) = s (2 phi(0) - 1 / sqrt(pi)) (Gneiting & Raftery 2007)."""
    s = 2.0
    ens = s * np.random.default_rng(1).standard_normal((20000, 3))
    exact = s * (2.0 / math.sqrt(2.0 * math.pi) - 1.0 / math.sqrt(math.pi))
    assert metrics.crps(ens, np.zeros(3)) == pytest.approx(exact, rel=0.02)


def test_bad_input():
    with pytest.raises(InputError, match="components"):
        metrics.rmse(ENSEMBLE, np.zeros(3))
    with pytest.raises(InputError, match="at least 2"):
        metrics.spread(ENSEMBLE[:1])
    with pytest.raises(InputError, match="member axis"):
        metrics.crps(np.zeros(3), np.zeros(3))

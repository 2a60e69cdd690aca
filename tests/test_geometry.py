"""Domain geometries: every registered one, and the sphere's seam, poles, great circles and cell areas."""
import math

import numpy as np
import pytest
import torch

from ldensf_hpc import geometry
from ldensf_hpc.cases import CASES, get
from ldensf_hpc.filters.letkf import LETKF
from ldensf_hpc.observe import grid_operator

SHAPE = (16, 32)


@pytest.mark.parametrize("name", list(geometry.GEOMETRIES))
def test_every_geometry_is_a_metric_with_unit_mean_weights(name):
    g = geometry.get(name)
    rng = np.random.default_rng(0)
    rows = np.stack([rng.integers(0, SHAPE[0], 20), rng.integers(0, SHAPE[1], 20)], axis=1).astype(float)
    d = g.distances(rows, rows, SHAPE)
    np.testing.assert_allclose(np.diag(d), 0.0, atol=1e-6)
    np.testing.assert_allclose(d, d.T, atol=1e-9)
    assert np.all(d[:, :, None] <= d[:, None, :] + d.T[None, :, :] + 1e-9)  # triangle inequality
    w = g.cell_weights(SHAPE)
    assert w.shape == SHAPE and np.all(w > 0) and w.mean() == pytest.approx(1.0)
    points = np.stack([rng.uniform(0, 350, 7), rng.uniform(-80, 80, 7)], axis=1)
    features = g.features(points, (0.0, -80.0), (350.0, 80.0))
    assert features.shape == (7, g.dim)
    np.testing.assert_allclose(g.features(torch.as_tensor(points), (0.0, -80.0), (350.0, 80.0)).numpy(), features)


def test_every_case_names_a_registered_geometry():
    for name in CASES:
        assert get(name).geometry in geometry.GEOMETRIES


def test_sphere_is_seamless_in_longitude_and_regular_at_the_poles():
    sphere = geometry.get("sphere")
    lat = np.linspace(-90, 90, 7)
    np.testing.assert_allclose(sphere.features(np.stack([np.zeros(7), lat], 1)),
                               sphere.features(np.stack([np.full(7, 360.0), lat], 1)), atol=1e-15)
    pole = sphere.features(np.stack([np.linspace(0, 360, 9), np.full(9, 90.0)], 1))
    np.testing.assert_allclose(pole, np.broadcast_to([0.0, 0.0, 1.0], pole.shape), atol=1e-15)


def test_sphere_distances_are_great_circles_in_equatorial_grid_spacings():
    sphere, (ny, nx) = geometry.get("sphere"), SHAPE
    lat = geometry.gauss_latitudes(ny)
    equator = ny // 2  # the row just south of the equator
    d = sphere.distances([[equator, 0.0]], [[equator, nx / 2], [equator, nx - 1], [0, 0]], SHAPE)[0]
    cos_lat = math.cos(lat[equator])
    assert d[0] == pytest.approx((math.pi - 2 * abs(lat[equator])) / (2 * math.pi / nx))  # antipodal longitudes
    assert d[1] == pytest.approx(math.acos(cos_lat**2 * math.cos(2 * math.pi / nx) + math.sin(lat[equator]) ** 2)
                                 / (2 * math.pi / nx))  # across the seam: one column apart
    assert d[2] == pytest.approx(abs(lat[0] - lat[equator]) / (2 * math.pi / nx))  # along a meridian


def test_sphere_cell_weights_are_the_gauss_weights_and_follow_cos_latitude():
    w = geometry.get("sphere").cell_weights((64, 128))[:, 0]
    lat = geometry.gauss_latitudes(64)
    assert w.sum() * 128 / (64 * 128) == pytest.approx(1.0)
    np.testing.assert_allclose(w / w.max(), np.cos(lat) / np.cos(lat).max(), atol=2e-3)


def test_letkf_localises_across_the_date_line_on_the_sphere():
    """A state point in the last column is near the sensors of column 0 on the sphere, far on a plane."""
    shape = (1, *SHAPE)
    sphere, plane = (grid_operator(shape, 4, geometry=g) for g in ("sphere", "plane"))
    point = np.ravel_multi_index((8, SHAPE[1] - 1), SHAPE)
    taper = LETKF(radius=2.0)
    near_seam = sphere.coords[:, 1] == 0
    assert taper.localisation(sphere, slice(point, point + 1))[0, near_seam].max() > 0.3
    assert taper.localisation(plane, slice(point, point + 1))[0, near_seam].max() == 0.0

"""Observation operators: adjoint = transpose, the picked points, the noise model."""
import numpy as np
import pytest

from ldensf_hpc.errors import ConfigError, InputError
from ldensf_hpc.observe import (
    OPERATORS,
    ObservationOperator,
    grid_operator,
    make_operator,
    moving_points,
    noise_std,
    observe,
)

FIELD_SHAPE = (3, 12, 10)
OPTIONS = {"grid": {"stride": 3}, "points": {"n_points": 7, "rng": np.random.default_rng(0)}, "full": {}}


@pytest.mark.parametrize("name", sorted(OPERATORS))
@pytest.mark.parametrize("shape", [FIELD_SHAPE, (40,)])
def test_adjoint_is_the_transpose(name, shape):
    op = make_operator(name, shape, **OPTIONS[name])
    rng = np.random.default_rng(1)
    x, r = rng.standard_normal((4, op.d)), rng.standard_normal((4, op.m))
    lhs = (op.apply(x) * r).sum(axis=1)
    rhs = (x * op.adjoint(r)).sum(axis=1)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)
    # (K, F, ny, nx) members are flattened the same way
    np.testing.assert_array_equal(op.apply(x.reshape(4, *shape)), op.apply(x))
    assert op.coords.shape == (op.m, len(op.spatial))
    assert np.all(np.abs(op.xi) <= 1.0)


def test_grid_stride_picks_every_stride_th_point():
    shape = (2, 150, 150)
    f, i, j = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    state = (1e6 * f + 1e3 * i + j)[None]  # each value encodes its own position
    op = grid_operator(shape, stride=15)
    assert op.m == 2 * 10 * 10
    y = op.apply(state)[0]
    rows = np.repeat(np.arange(0, 150, 15), 10)
    cols = np.tile(np.arange(0, 150, 15), 10)
    expected = np.concatenate([1e6 * k + 1e3 * rows + cols for k in range(2)])
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(op.coords[:100], np.stack([rows, cols], axis=1))
    np.testing.assert_array_equal(op.field, np.repeat([0, 1], 100))
    only_second = grid_operator(shape, stride=15, fields=[1])
    np.testing.assert_array_equal(only_second.apply(state)[0], expected[100:])


def test_lorenz96_grid_points_and_full_identity():
    op = grid_operator((40,), stride=4, periodic=True)
    np.testing.assert_array_equal(op.index, np.arange(0, 40, 4))
    np.testing.assert_array_equal(op.period, [40.0])
    x = np.random.default_rng(2).standard_normal((3, 40))
    np.testing.assert_array_equal(make_operator("full", (40,)).apply(x), x)


def test_random_points_are_distinct_fixed_and_seeded():
    a = make_operator("points", FIELD_SHAPE, n_points=20, rng=np.random.default_rng(5))
    b = make_operator("points", FIELD_SHAPE, n_points=20, rng=np.random.default_rng(5))
    c = make_operator("points", FIELD_SHAPE, n_points=20, rng=np.random.default_rng(6))
    assert a.m == 3 * 20 and np.unique(a.index).size == a.m
    np.testing.assert_array_equal(a.index, b.index)
    assert not np.array_equal(a.index, c.index)


def test_noise_std_is_level_times_field_std_over_the_truth_run():
    rng = np.random.default_rng(3)
    truth = rng.standard_normal((50, 2, 8, 8))
    truth[:, 1] *= 4.0
    op = grid_operator((2, 8, 8), stride=2)
    std = noise_std(op, truth, 0.1)
    np.testing.assert_allclose(std[op.field == 0], 0.1 * truth[:, 0].std())
    np.testing.assert_allclose(std[op.field == 1], 0.1 * truth[:, 1].std())


def test_observe_adds_the_seeded_noise_to_h_x():
    op = grid_operator((40,), stride=2)
    x = np.arange(40.0)
    std = np.full(op.m, 0.3)
    y = observe(op, x, std, np.random.default_rng(7))
    np.testing.assert_allclose(y, x[::2] + 0.3 * np.random.default_rng(7).standard_normal(op.m))


def test_bad_input():
    with pytest.raises(ConfigError, match="unknown observation operator"):
        make_operator("sensors", FIELD_SHAPE)
    with pytest.raises(InputError, match="stride"):
        grid_operator(FIELD_SHAPE, stride=0)
    with pytest.raises(InputError, match="fields"):
        grid_operator(FIELD_SHAPE, stride=2, fields=[3])
    with pytest.raises(InputError, match="points"):
        make_operator("points", FIELD_SHAPE, n_points=121, rng=np.random.default_rng(0))
    with pytest.raises(InputError, match="repeats"):
        ObservationOperator("grid", (10,), np.array([1, 1]))
    op = grid_operator((40,), stride=2)
    with pytest.raises(InputError, match="components"):
        op.apply(np.zeros((2, 39)))
    with pytest.raises(InputError, match="adjoint"):
        op.adjoint(np.zeros((2, 3)))
    with pytest.raises(InputError, match="noise level"):
        noise_std(op, np.zeros((5, 40)), -0.1)


def test_moving_sensors_change_position_every_time_with_the_same_count():
    ops = moving_points((3, 8, 8), 5, 4, np.random.default_rng(1), fields=[0])
    assert [op.m for op in ops] == [5] * 4
    layouts = {tuple(op.index) for op in ops}
    assert len(layouts) == 4  # 4 draws of 5 of 64 points: a repeat is possible but not for this seed
    assert all(op.field.max() == 0 for op in ops)
    with pytest.raises(InputError, match="at least one observation time"):
        moving_points((3, 8, 8), 5, 0, np.random.default_rng(1))

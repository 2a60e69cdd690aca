"""The HDF5 trajectory store as training data: split, normalisation, standardised frames, resume-safe stats.

``write_gaussian_dataset`` (also used by test_ldnet.py and test_encoder.py) writes a real
store (shards, manifest, virtual dataset.h5) of an analytic travelling Gaussian whose
centre is the parameter, so every sampled value can be checked against the formula.
"""
import json

import numpy as np
import pytest

from ldensf_hpc.backend import rng_for
from ldensf_hpc.data import store
from ldensf_hpc.data.dataset import (
    NORM_FILE,
    TrajectoryStore,
    load_normalization,
    observation_sequences,
    split_indices,
    standardized_frames,
)
from ldensf_hpc.errors import DataError
from ldensf_hpc.observe import make_operator

WIDTH, SPEED = 0.5, 0.04  # bump width and drift per frame (domain [0, 1]^2)


def gaussian_fields(params, n_frames, x, y):
    """``(N, T, 2, ny, nx)``: a Gaussian bump centred at ``(cx + SPEED t, cy)`` and its square."""
    t = np.arange(n_frames)[None, :, None, None]
    cx = params[:, 0, None, None, None] + SPEED * t
    cy = params[:, 1, None, None, None] if params.shape[1] > 1 else 0.5
    dx, dy = x[None, None, None, :] - cx, y[None, None, :, None] - cy
    bump = np.exp(-(dx**2 + dy**2) / (2 * WIDTH**2))
    return np.stack([bump, bump**2], axis=2).astype(np.float32)


def write_gaussian_dataset(root, n_trajectories=10, n_frames=9, n=16, n_params=2, seed=0, shard_size=4):
    """Write the analytic dataset with the store's own writers; return (fields, params, x, y).

    Parameters are the bump's start ``(cx, cy)`` (``n_params=1``: ``cx`` only, ``cy = 0.5``).
    """
    rng = rng_for(seed, 99)
    params = rng.uniform(0.3, 0.6, size=(n_trajectories, n_params))
    x = y = np.linspace(0.0, 1.0, n)
    fields = gaussian_fields(params, n_frames, x, y)
    (root / store.SHARDS).mkdir(parents=True, exist_ok=True)
    config = {"case": "gaussian", "seed": seed}
    manifest = store.new_manifest("gaussian", config, n_trajectories, shard_size, fields.shape[1:], n_params)
    for entry in manifest["shards"]:
        a, b = entry["start"], entry["stop"]
        entry["sha256"] = store.write_shard(root / store.SHARDS / entry["name"], entry["shard"], a,
                                            fields[a:b], params[a:b], config)
    store.write_manifest(root, manifest)
    attrs = {"config": config, "case": "gaussian", "field_names": ["h", "q"], "param_names": ["cx", "cy"][:n_params],
             "units": {"h": "1", "q": "1"}, "grid": {"n": n}, "dt": 1.0, "seed": seed, "version": "test"}
    store.write_dataset(root, manifest, attrs, np.arange(n_frames, dtype=float), x, y)
    return fields, params, x, y


@pytest.fixture(scope="module")
def gaussian(tmp_path_factory):
    root = tmp_path_factory.mktemp("gaussian")
    return (root, *write_gaussian_dataset(root))


def test_split_is_60_20_20_by_trajectory_and_deterministic():
    splits = split_indices(200, (0.6, 0.2, 0.2), seed=3)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [120, 40, 40]
    assert np.array_equal(np.sort(np.concatenate(list(splits.values()))), np.arange(200))
    again = split_indices(200, (0.6, 0.2, 0.2), seed=3)
    assert all(np.array_equal(splits[k], again[k]) for k in splits)
    other = split_indices(200, (0.6, 0.2, 0.2), seed=4)
    assert not np.array_equal(splits["train"], other["train"])
    assert [len(v) for v in split_indices(10).values()] == [6, 2, 2]
    with pytest.raises(DataError, match="non-empty"):
        split_indices(2)
    with pytest.raises(DataError, match="sum"):
        split_indices(10, (0.5, 0.2, 0.2))


def test_normalization_matches_numpy_on_train_split_and_is_reused(gaussian):
    root, fields, params = gaussian[:3]
    st = TrajectoryStore(root)
    assert (st.n_trajectories, st.n_frames, st.n_fields, st.ny, st.nx) == fields.shape
    assert st.field_names == ("h", "q") and st.param_names == ("cx", "cy")
    norm = load_normalization(st, (0.6, 0.2, 0.2), seed=0)
    train = split_indices(10, seed=0)["train"]
    f64 = fields[train].astype(np.float64)
    np.testing.assert_allclose(norm.field_mean, f64.mean(axis=(0, 1, 3, 4)), rtol=1e-12)
    np.testing.assert_allclose(norm.field_std, f64.std(axis=(0, 1, 3, 4)), rtol=1e-10)
    np.testing.assert_array_equal(norm.param_min, params[train].min(axis=0))
    np.testing.assert_array_equal(norm.param_max, params[train].max(axis=0))
    saved = json.loads((root / NORM_FILE).read_text())
    assert saved["key"]["train"] == train.tolist()
    # reused when present: a doctored file for the same split is read back as is
    saved["field_mean"] = [123.0, 456.0]
    (root / NORM_FILE).write_text(json.dumps(saved))
    assert load_normalization(st, (0.6, 0.2, 0.2), seed=0).field_mean == (123.0, 456.0)
    # another split recomputes (and overwrites) it
    other = load_normalization(st, (0.6, 0.2, 0.2), seed=1)
    assert other.field_mean != (123.0, 456.0)
    restored = load_normalization(st, (0.6, 0.2, 0.2), seed=0)  # recomputed: the key changed in between
    np.testing.assert_allclose(restored.field_mean, f64.mean(axis=(0, 1, 3, 4)), rtol=1e-12)


def test_standardized_frames_invert_to_the_analytic_field(gaussian):
    root, fields = gaussian[:2]
    st = TrajectoryStore(root)
    norm = load_normalization(st, (0.6, 0.2, 0.2), seed=0)
    val = split_indices(st.n_trajectories, (0.6, 0.2, 0.2), seed=0)["val"]
    frames = standardized_frames(st, val, norm, frame_every=3)
    assert frames.shape == (2, 3, 2, 16, 16) and frames.dtype == np.float32  # frames 0, 3, 6 of 9
    np.testing.assert_allclose(norm.unstandardize(frames.astype(np.float64), axis=2), fields[val][:, ::3], atol=2e-6)
    train = split_indices(st.n_trajectories, (0.6, 0.2, 0.2), seed=0)["train"]
    z = standardized_frames(st, train, norm)  # the train statistics standardise the train split exactly
    np.testing.assert_allclose(z.mean(axis=(0, 1, 3, 4)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 1, 3, 4)), 1.0, atol=1e-5)


def test_observation_sequences_use_the_grid_operator(gaussian):
    root, fields = gaussian[:2]
    st = TrajectoryStore(root)
    op = make_operator("grid", (2, 16, 16), stride=5)
    obs = observation_sequences(st, [0, 4], frame_every=4, observe=op.apply)
    assert obs.shape == (2, 3, op.m) and op.m == 2 * 4 * 4
    np.testing.assert_array_equal(obs[1, 2], fields[4, 8][:, ::5, ::5].ravel())


def test_bad_inputs_are_named(gaussian, tmp_path):
    with pytest.raises(DataError, match="no dataset"):
        TrajectoryStore(tmp_path)
    with pytest.raises(DataError, match="frame_every"):
        TrajectoryStore(gaussian[0]).kept_frames(0)

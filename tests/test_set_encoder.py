"""Set encoder for moving sensors: invariances, checkpoints, clear errors, and learning a tiny SWE problem.

The learning test trains the tiny LDNet, the fixed-grid LSTM encoder and the set encoder
on 20 tiny tsunami trajectories (32 x 32), then encodes held-out trajectories observed by
64 sensors (all three fields) that move at every observation time.
"""
import numpy as np
import pytest
import torch
from resume import assert_resume_is_exact

from ldensf_hpc.cases import load_config
from ldensf_hpc.config import SetEncoderConfig
from ldensf_hpc.data.dataset import Normalization, TrajectoryStore, split_indices
from ldensf_hpc.data.generate import generate
from ldensf_hpc.errors import ConfigError, DataError, InputError
from ldensf_hpc.observe import grid_operator, moving_points, points_operator
from ldensf_hpc.surrogate import load, load_checkpoint
from ldensf_hpc.surrogate.encoder import train_encoder
from ldensf_hpc.surrogate.ldnet import train_ldnet
from ldensf_hpc.surrogate.set_encoder import SetEncoder, encode_history, operator_inputs, train_set_encoder
from ldensf_hpc.surrogate.training import observation_operator, relative_error

SETTINGS = ["data.n_trajectories=20", "set_encoder.epochs=300", "train.patience=1000", "train.device=cpu"]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _model(n_fields=3, seed=0):
    torch.manual_seed(seed)
    norm = Normalization((0.5, 0.0, 1.0), (2.0, 1.0, 0.5), (0.0, 0.0), (1.0, 1.0), (0.0, 0.0), (1.0, 1.0))
    model = SetEncoder(SetEncoderConfig(width=16, point_layers=2, hidden=16), n_fields, latent=4, n_params=2,
                       norm=norm, frame_every=2)
    model.set_statistics(torch.randn(6), torch.rand(6) + 0.5)
    return model.eval()


def _sets(B, T, M, n_fields=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, T, M, 2, generator=g) * 2 - 1, torch.randn(B, T, M, generator=g),
            torch.randint(0, n_fields, (B, T, M), generator=g))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny SWE data, the tiny LDNet and LSTM encoder, and the set encoder trained on moving sensors."""
    root = tmp_path_factory.mktemp("set_encoder")
    cfg = load_config("tiny", case="swe", overrides=SETTINGS)
    generate(cfg, root / "data", backend="serial", progress=False)
    torch.set_num_threads(1)  # the solver's Numba kernels (OpenMP layer) resize the OpenMP pool torch shares
    with pytest.raises(DataError, match="no checkpoint"):
        train_set_encoder(cfg, root / "data", root / "out", progress=False)
    train_ldnet(cfg, root / "data", root / "out", progress=False)
    train_encoder(cfg, root / "data", root / "out", progress=False)
    summary = train_set_encoder(cfg, root / "data", root / "out", progress=False)
    return root, cfg, summary


def test_points_are_a_set_permutation_and_duplication_invariant():
    model = _model()
    xi, values, fields = _sets(2, 5, 11)
    with torch.no_grad():
        out, _ = model(xi, values, fields)
        perm = torch.randperm(11)
        shuffled = [a.clone() for a in (xi, values, fields)]
        for a, b in zip(shuffled, (xi, values, fields)):
            a[:, 3] = b[:, 3][:, perm]  # reorder the points of one time only
        torch.testing.assert_close(model(*shuffled)[0], out, rtol=1e-5, atol=1e-6)
        # a mean over the set: every point twice is the same set
        twice = model(*(torch.cat([a, a], dim=2) for a in (xi, values, fields)))[0]
        torch.testing.assert_close(twice, out, rtol=1e-5, atol=1e-6)
        # the values matter, and the output at t depends on times 0..t only
        changed = values.clone()
        changed[:, 3] += 1.0
        out2 = model(xi, changed, fields)[0]
        assert torch.equal(out2[:, :3], out[:, :3]) and not torch.allclose(out2[:, 3:], out[:, 3:])
    s_hat, u_hat = model.encode(xi, values, fields)
    assert out.shape == (2, 5, 6) and s_hat.shape == (2, 5, 4) and u_hat.shape == (2, 5, 2)


def test_any_number_of_points_and_changing_counts_in_one_history():
    model = _model()
    with torch.no_grad():
        for M in (1, 7, 40):
            assert model(*_sets(1, 3, M))[0].shape == (1, 3, 6)
    shape = (3, 10, 10)
    rng = np.random.default_rng(0)
    ops = [points_operator(shape, n, rng) for n in (4, 9, 2, 30)]
    truth = rng.standard_normal((4, 300))
    y = [op.apply(x[None])[0] for op, x in zip(ops, truth)]
    z = encode_history(model, ops, y)
    assert z.shape == (4, 6) and np.all(np.isfinite(z))
    # each time step alone as a history of one set: the first output agrees (causal), the later ones differ
    first = encode_history(model, ops[:1], y[:1])
    np.testing.assert_allclose(z[:1], first, rtol=1e-5, atol=1e-6)
    # sets of equal size stacked in a batch give what the numpy entry point gives
    same = moving_points(shape, 6, 4, rng)
    y = [op.apply(x[None])[0] for op, x in zip(same, truth)]
    with torch.no_grad():
        batched = model(*(torch.as_tensor(a)[None] for a in operator_inputs(same, y)))[0][0].numpy()
    np.testing.assert_allclose(encode_history(model, same, y), batched, rtol=1e-5, atol=1e-6)


def test_checkpoint_round_trip(tmp_path):
    model = _model(seed=3)
    torch.save(model.to_checkpoint(), tmp_path / "set.pt")
    again = SetEncoder.from_checkpoint(load_checkpoint(tmp_path / "set.pt")).eval()
    assert again.to_checkpoint().keys() == model.to_checkpoint().keys()
    assert (again.n_fields, again.latent, again.n_params, again.frame_every) == (3, 4, 2, 2)
    sets = _sets(2, 4, 9)
    with torch.no_grad():
        assert torch.equal(again(*sets)[0], model(*sets)[0])


def test_bad_inputs_raise_clear_errors():
    model = _model()
    xi, values, fields = _sets(1, 2, 5)
    with pytest.raises(InputError, match="positions"):
        model(xi[..., :1], values, fields)
    with pytest.raises(InputError, match="positions"):
        model(xi[:, :, :0], values[:, :, :0], fields[:, :, :0])
    with pytest.raises(InputError, match="must both be"):
        model(xi, values[:, :, :4], fields)
    with pytest.raises(InputError, match="int64"):
        model(xi, values, fields.float())
    with pytest.raises(InputError, match=r"field numbers must be in \[0, 3\)"):
        model(xi, values, fields + 3)
    op = grid_operator((3, 8, 8), 4)
    with pytest.raises(InputError, match="one observation per operator"):
        encode_history(model, [op, op], [np.zeros(op.m)])
    with pytest.raises(InputError, match=r"observation 0 has shape \(5,\)"):
        encode_history(model, [op], [np.zeros(5)])
    with pytest.raises(InputError, match="2 fields"):
        two = grid_operator((2, 8, 8), 4)
        encode_history(model, [two], [np.zeros(two.m)])
    with pytest.raises(InputError, match="different sizes"):
        operator_inputs([op, grid_operator((3, 8, 8), 2)], [np.zeros(op.m), np.zeros(48)])
    with pytest.raises(ConfigError, match="point_layers"):
        SetEncoder(SetEncoderConfig(point_layers=0), 3, 4, 2, model.norm)
    with pytest.raises(ConfigError, match="normalisation has 3 fields"):
        SetEncoder(SetEncoderConfig(), 2, 4, 2, model.norm)


def test_set_encoder_estimates_parameters_from_moving_sensors(trained):
    """Held-out trajectories, sensors moving at every time: parameters well below the training-mean
    error, and far better than the fixed-grid LSTM fed the same values."""
    root, cfg, summary = trained
    store = TrajectoryStore(root / "data")
    ldnet, lstm = load(root / "out" / "ldnet.pt"), load(root / "out" / "encoder.pt")
    encoder = SetEncoder.from_checkpoint(load_checkpoint(root / "out" / "set_encoder.pt")).eval()
    grid, _ = observation_operator(cfg, store)
    assert summary["config"]["sensors"] == encoder.cfg.sensors == 64 and lstm.n_obs == grid.m == 3 * 64
    splits = split_indices(store.n_trajectories, cfg.data.split, cfg.data.seed)
    train_mean = store.params[splits["train"]].mean(axis=0)
    L, fe = ldnet.latent, ldnet.cfg.frame_every

    def param_error(z, u):
        return relative_error(ldnet.norm.unscale_params(z[:, L:].astype(np.float64)), u[None], axis=1).mean()

    errors = {"set, moving": [], "lstm, moving": [], "set, grid": [], "training mean": []}
    for j in splits["test"]:
        frames = store.frames(j, fe).reshape(-1, grid.d)
        u = store.params[j]
        for draw in range(3):  # sensor layouts never seen in training
            ops = moving_points(grid.shape, 64, len(frames), np.random.default_rng([7, int(j), draw]))
            y = [op.apply(x[None])[0] for op, x in zip(ops, frames)]
            errors["set, moving"].append(param_error(encode_history(encoder, ops, y), u))
            errors["lstm, moving"].append(param_error(lstm.encode_history([grid] * len(y), y), u))  # as if on its grid
        errors["set, grid"].append(param_error(encode_history(encoder, [grid] * len(frames), grid.apply(frames)), u))
        errors["training mean"].append(relative_error(train_mean, u))
    err = {k: float(np.mean(v)) for k, v in errors.items()}
    assert err["set, moving"] < 0.4 * err["training mean"], err
    assert err["set, moving"] < 0.6 * err["lstm, moving"], err
    assert err["set, moving"] < 2.0 * err["set, grid"], err
    hist = summary["history"]["set_encoder"]
    assert min(h["val"] for h in hist) < 0.2 * hist[0]["val"]
    assert summary["test_rel_error_params_moving"] < 0.4 * err["training mean"], summary


def test_loaded_set_encoder_reproduces_the_reported_grid_errors(trained):
    root, cfg, summary = trained
    store = TrajectoryStore(root / "data")
    ldnet = load(root / "out" / "ldnet.pt")
    encoder = SetEncoder.from_checkpoint(load_checkpoint(root / "out" / "set_encoder.pt")).eval()
    grid, _ = observation_operator(cfg, store)
    test = split_indices(store.n_trajectories, cfg.data.split, cfg.data.seed)["test"]
    fe = ldnet.cfg.frame_every
    u = torch.as_tensor(ldnet.norm.scale_params(store.params[test]), dtype=torch.float32)
    with torch.no_grad():
        s = ldnet.rollout(u, store.kept_frames(fe)).numpy()
    s_hat = [encode_history(encoder, [grid] * s.shape[1], grid.apply(store.frames(j, fe)))[:, :ldnet.latent]
             for j in test]
    err = np.mean([relative_error(p, t) for p, t in zip(s_hat, s)])
    assert err == pytest.approx(summary["test_rel_error_latent_grid"], rel=1e-5)


def test_resume_matches_uninterrupted_and_settings_are_checked(trained, tmp_path):
    root = trained[0]
    short = load_config("tiny", case="swe", overrides=SETTINGS + ["set_encoder.epochs=3"])
    for d in "ab":
        (tmp_path / d).mkdir()
        (tmp_path / d / "ldnet.pt").write_bytes((root / "out" / "ldnet.pt").read_bytes())
    assert_resume_is_exact(train_set_encoder, short, root / "data", tmp_path / "a", tmp_path / "b", "set_encoder.pt")
    with pytest.raises(DataError, match="another configuration"):  # a coarser grid: fewer sensors per time
        train_set_encoder(load_config("tiny", case="swe", overrides=SETTINGS + ["set_encoder.epochs=3",
                                                                              "observe.stride=8"]),
                          root / "data", tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="sensors"):
        train_set_encoder(load_config("tiny", case="swe", overrides=SETTINGS + ["set_encoder.sensors=5000"]),
                          root / "data", tmp_path / "a", progress=False)

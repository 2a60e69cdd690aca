"""LSTM encoder: output layout, streaming = whole-history encoding, learning a tiny problem, checkpoints."""
import numpy as np
import pytest
import torch
from resume import assert_resume_is_exact
from test_dataset import write_gaussian_dataset
from test_ldnet import tiny_config

from ldensf_hpc.config import EncoderConfig
from ldensf_hpc.data.dataset import Normalization, TrajectoryStore, observation_sequences, split_indices
from ldensf_hpc.errors import DataError, InputError
from ldensf_hpc.surrogate import load
from ldensf_hpc.surrogate.encoder import LSTMEncoder, train_encoder
from ldensf_hpc.surrogate.ldnet import train_ldnet
from ldensf_hpc.surrogate.training import observation_operator, relative_error

TINY_ENCODER = ["observe.stride=4", "encoder.layers=1", "encoder.hidden=32", "encoder.batch_size=2",
                "encoder.lr=1.0e-2", "encoder.dropout=0.0"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A quickly trained LDNet (its latent trajectories are the targets) and an encoder on top."""
    root = tmp_path_factory.mktemp("encoder")
    write_gaussian_dataset(root / "data", n_trajectories=10, n_frames=5, n=12, n_params=1)
    cfg = tiny_config("ldnet.epochs=30", "ldnet.retrain_epochs=5", "encoder.epochs=200", *TINY_ENCODER)
    with pytest.raises(DataError, match="no checkpoint"):
        train_encoder(cfg, root / "data", root / "out", progress=False)

    def stop(phase, epoch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_ldnet(cfg, root / "data", root / "out", progress=False, callback=stop)
    with pytest.raises(DataError, match="not finished"):
        train_encoder(cfg, root / "data", root / "out", progress=False)
    train_ldnet(cfg, root / "data", root / "out", progress=False)
    summary = train_encoder(cfg, root / "data", root / "out", progress=False)
    return root, cfg, summary


def _model(layers=2, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    norm = Normalization((0.0,), (1.0,), (0.0, 0.0), (1.0, 1.0), (0.0, 0.0), (1.0, 1.0))
    return LSTMEncoder(EncoderConfig(layers=layers, hidden=16, dropout=dropout), n_obs=6, latent=5, n_params=2,
                       norm=norm, observe={"name": "grid", "options": {"stride": 3}}, frame_every=4)


def test_output_is_latent_plus_parameters_and_streaming_matches_history():
    model = _model().eval()
    model.set_statistics(torch.rand(6), torch.rand(6) + 0.5, torch.randn(7), torch.rand(7) + 0.5)
    y = torch.randn(3, 8, 6)
    with torch.no_grad():
        out, _ = model(y)
        s_hat, u_hat = model.encode(y)
        assert out.shape == (3, 8, 5 + 2) and s_hat.shape == (3, 8, 5) and u_hat.shape == (3, 8, 2)
        state, steps = None, []
        for t in range(8):  # one observation time at a time, as in the filter loop
            s_t, u_t, state = model.encode_step(y[:, t], state)
            steps.append(torch.cat([s_t, u_t], dim=-1))
    torch.testing.assert_close(torch.stack(steps, dim=1), out, rtol=1e-5, atol=1e-6)
    # the output at t depends on y_{0:t} only (causal)
    y2 = y.clone()
    y2[:, 5:] += 1.0
    with torch.no_grad():
        out2, _ = model(y2)
    assert torch.equal(out2[:, :5], out[:, :5]) and not torch.allclose(out2[:, 5:], out[:, 5:])
    with pytest.raises(InputError, match="6 observations"):
        model(torch.randn(1, 2, 5))


def test_encoder_learns_the_tiny_problem(trained):
    root, _, summary = trained
    hist = summary["history"]["encoder"]
    assert hist[-1]["val"] < 1e-2 * hist[0]["val"]
    assert summary["train_rel_error_latent"] < 0.02, summary
    assert summary["train_rel_error_params"] < 0.01, summary
    assert summary["val_rel_error_params"] < 0.03, summary
    encoder = load(root / "out" / "encoder.pt")
    ldnet = load(root / "out" / "ldnet.pt")
    assert encoder.n_obs == 2 * 3 * 3 and encoder.latent == ldnet.latent and encoder.n_params == 1
    assert encoder.observe == {"name": "grid", "options": {"stride": 4, "periodic": False}}


def test_loaded_encoder_reproduces_the_reported_errors(trained, tmp_path):
    """Round trip: the checkpoint alone rebuilds the trained encoder (and saving it again changes nothing)."""
    root, cfg, summary = trained
    encoder, ldnet = load(root / "out" / "encoder.pt"), load(root / "out" / "ldnet.pt")
    store = TrajectoryStore(root / "data")
    operator, _ = observation_operator(cfg, store)
    train = split_indices(10, cfg.data.split, cfg.data.seed)["train"]
    y = torch.as_tensor(observation_sequences(store, train, ldnet.cfg.frame_every, operator.apply))
    u = torch.as_tensor(ldnet.norm.scale_params(store.params[train]), dtype=torch.float32)
    with torch.no_grad():
        s = ldnet.rollout(u, y.shape[1]).numpy()
        s_hat = encoder.encode(y)[0].numpy()
    err = np.mean([relative_error(p, t) for p, t in zip(s_hat, s)])
    assert err == pytest.approx(summary["train_rel_error_latent"], rel=1e-6)
    torch.save(encoder.to_checkpoint(), tmp_path / "again.pt")
    again = load(tmp_path / "again.pt")
    with torch.no_grad():
        assert torch.equal(again(y)[0], encoder(y)[0])


def test_encoder_resume_with_dropout_matches_uninterrupted(trained, tmp_path):
    root = trained[0]
    cfg2 = tiny_config("ldnet.epochs=30", "ldnet.retrain_epochs=5", "encoder.epochs=4", *TINY_ENCODER,
                       "encoder.layers=2", "encoder.dropout=0.3")
    for d in "ab":
        (tmp_path / d).mkdir()
        (tmp_path / d / "ldnet.pt").write_bytes((root / "out" / "ldnet.pt").read_bytes())
    assert_resume_is_exact(train_encoder, cfg2, root / "data", tmp_path / "a", tmp_path / "b", "encoder.pt")

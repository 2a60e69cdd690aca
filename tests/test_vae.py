"""Coupled VAE of Latent-EnSF: shapes on any grid, checkpoints, input checks, training on tiny SWE data, resume.

``trained_vae`` (also used by test_latent_ensf.py) generates a 16 x 16 SWE dataset of 30
trajectories and trains the VAE under the session's base temp directory: the first
module that asks trains it (about 10 s on one core), later ones resume the finished
checkpoint without retraining.
"""
import copy
import json

import numpy as np
import pytest
import torch
from resume import assert_resume_is_exact

from ldensf_hpc.cases import load_config
from ldensf_hpc.config import VAEConfig
from ldensf_hpc.data.dataset import Normalization, TrajectoryStore, load_normalization, split_indices
from ldensf_hpc.data.generate import generate
from ldensf_hpc.errors import ConfigError, DataError, InputError
from ldensf_hpc.surrogate import load_checkpoint
from ldensf_hpc.surrogate.training import relative_error
from ldensf_hpc.surrogate.vae import CoupledVAE, train_vae

SWE16 = ["swe.n=16", "swe.backend=numpy", "data.n_trajectories=30", "data.shard_size=10", "train.device=cpu",
         "vae.epochs=40", "vae.batch_size=16", "vae.lr=1.0e-2"]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def vae_config(*extra):
    return load_config("tiny", case="swe", overrides=SWE16 + list(extra))


def trained_vae(tmp_path_factory):
    """``(root, cfg, summary)``: data in ``root/data``, the finished ``root/out/vae.pt``."""
    root = tmp_path_factory.getbasetemp() / "vae-swe16"
    cfg = vae_config()
    generate(cfg, root / "data", backend="serial", progress=False)
    return root, cfg, train_vae(cfg, root / "data", root / "out", progress=False)


def standardized_frames(root, cfg, split):
    """All frames ``(N, F, ny, nx)`` of a split, standardised, and the normalisation."""
    store = TrajectoryStore(root / "data")
    norm = load_normalization(store, cfg.data.split, cfg.data.seed)
    idx = split_indices(store.n_trajectories, cfg.data.split, cfg.data.seed)[split]
    return norm.standardize(np.concatenate([store.frames(j) for j in idx]), axis=1), norm


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_vae(tmp_path_factory)


def _model(ny=20, nx=28, blocks=3, n_obs=7, seed=0):
    torch.manual_seed(seed)
    norm = Normalization((0.0, 1.0), (1.0, 2.0), (0.0,), (1.0,), (0.0, 0.0), (1.0, 1.0))
    cfg = VAEConfig(latent=6, width=4, blocks=blocks, obs_hidden=16)
    return CoupledVAE(cfg, 2, ny, nx, n_obs, norm, {"name": "grid", "options": {"stride": 3, "periodic": False}})


@pytest.mark.parametrize("ny, nx, blocks", [(20, 28, 3), (15, 9, 2), (150, 150, 3), (1, 5, 1)])
def test_shapes_on_any_grid(ny, nx, blocks):
    model = _model(ny, nx, blocks)
    x, y = torch.randn(3, 2, ny, nx), torch.randn(3, 7)
    mu, logvar = model.encode_state(x)
    mu_y, logvar_y = model.encode_obs(y)
    assert mu.shape == logvar.shape == mu_y.shape == logvar_y.shape == (3, 6)
    assert model.decode(mu).shape == (3, 2, ny, nx)
    assert model.padded[0] % 2**blocks == 0 and model.padded[1] % 2**blocks == 0
    assert 0 <= model.padded[0] - ny < 2**blocks and 0 <= model.padded[1] - nx < 2**blocks
    loss = model.loss(x, y)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())  # every network is in the loss


def test_channels_last_convolutions_equal_the_plain_layout():
    """The networks run their convolutions channels-last (NHWC, the fast CPU path); the same weights
    applied by plain NCHW convolutions give the same encodings and fields to float32 round-off."""
    model = _model(150, 150).eval()
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    x, z = torch.randn(3, 2, 150, 150), torch.randn(3, 6)
    left, _, top, _ = model._pads()
    with torch.no_grad():
        assert model.decoder_net[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert not plain.decoder_net[0].weight.is_contiguous(memory_format=torch.channels_last)
        padded = torch.nn.functional.pad(x, model._pads(), mode="replicate")
        mu = plain.state_head(plain.state_net(padded))[:, :6]
        torch.testing.assert_close(model.encode_state(x)[0], mu, rtol=1e-5, atol=1e-5)
        fields = plain.decoder_net(plain.decoder_in(z).reshape(3, model._top_channels, *model.coarse))
        out = model.decode(z)
        assert out.is_contiguous()
        torch.testing.assert_close(out, fields[:, :, top:top + 150, left:left + 150], rtol=1e-5, atol=1e-5)


def test_loss_samples_in_training_and_uses_means_in_evaluation():
    model = _model()
    x, y = torch.randn(4, 2, 20, 28), torch.randn(4, 7)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model.loss(x, y), model.loss(x, y))
        model.train()
        assert not torch.equal(model.loss(x, y), model.loss(x, y))


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = _model().eval()
    torch.save(model.to_checkpoint(), tmp_path / "vae.pt")
    again = CoupledVAE.from_checkpoint(load_checkpoint(tmp_path / "vae.pt")).eval()
    other = _model(seed=1).eval()
    x, y, z = torch.randn(2, 2, 20, 28), torch.randn(2, 7), torch.randn(2, 6)
    with torch.no_grad():
        for method, arg in (("encode_state", x), ("encode_obs", y), ("decode", z)):
            a, b = getattr(model, method)(arg), getattr(again, method)(arg)
            for u, v in zip(*((a, b) if isinstance(a, tuple) else ((a,), (b,)))):
                assert torch.equal(u, v), method
        assert not torch.equal(model.decode(z), other.decode(z))
    assert again.norm == model.norm and again.observe == model.observe and again.kind == "vae"


def test_wrong_shapes_raise_input_error():
    model = _model()
    with pytest.raises(InputError, match=r"\(B, 2, 20, 28\)"):
        model.encode_state(torch.randn(2, 2, 20, 27))
    with pytest.raises(InputError, match="state encoder"):
        model.encode_state(torch.randn(2, 20, 28))
    with pytest.raises(InputError, match=r"\(B, 7\) observations"):
        model.encode_obs(torch.randn(2, 8))
    with pytest.raises(InputError, match=r"\(B, 6\) latents"):
        model.decode(torch.randn(6))
    with pytest.raises(ConfigError, match="vae.blocks"):
        CoupledVAE(VAEConfig(blocks=0), 2, 20, 28, 7, model.norm)


def test_training_beats_the_mean_field_by_a_wide_margin(trained):
    root, cfg, summary = trained
    hist = summary["history"]["vae"]
    assert min(h["val"] for h in hist) < 0.4 * hist[0]["val"], hist
    assert json.loads((root / "out" / "vae.json").read_text()) == summary
    assert summary["frames"] == {"train": 18 * 13, "val": 6 * 13, "test": 6 * 13}
    x_train, norm = standardized_frames(root, cfg, "train")
    for split in ("val", "test"):
        x, _ = standardized_frames(root, cfg, split)
        true = norm.unstandardize(x, axis=1)
        mean_field = norm.unstandardize(np.broadcast_to(x_train.mean(axis=0), x.shape), axis=1)
        baseline = np.mean([relative_error(p, t) for p, t in zip(mean_field, true)])
        assert baseline > 0.7  # the bump's position matters: the mean field is far off
        assert summary[f"{split}_rel_error"] < 0.45 * baseline, (split, summary[f"{split}_rel_error"], baseline)
        assert summary[f"{split}_rel_error_obs"] < 0.5 * baseline, (split, summary[f"{split}_rel_error_obs"])
    assert summary["train_rel_error"] < summary["test_rel_error"]


def test_loaded_vae_reproduces_the_reported_error(trained):
    root, cfg, summary = trained
    vae = CoupledVAE.from_checkpoint(load_checkpoint(root / "out" / "vae.pt")).eval()
    assert vae.observe == {"name": "grid", "options": {"stride": 4, "periodic": False}}
    x, norm = standardized_frames(root, cfg, "test")
    with torch.no_grad():
        pred = vae.decode(vae.encode_state(torch.from_numpy(x))[0]).numpy()
    err = np.mean([relative_error(p, t) for p, t in
                   zip(norm.unstandardize(pred, axis=1), norm.unstandardize(x, axis=1))])
    assert err == pytest.approx(summary["test_rel_error"], rel=1e-5)


def test_finished_checkpoint_is_not_retrained(trained):
    root, cfg, summary = trained
    before = load_checkpoint(root / "out" / "vae.pt")["state_dict"]

    def fail(phase, epoch):
        raise AssertionError(f"retrained {phase} epoch {epoch}")

    again = train_vae(cfg, root / "data", root / "out", progress=False, callback=fail)
    after = load_checkpoint(root / "out" / "vae.pt")["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert again == summary


def test_interrupted_training_resumes_to_the_same_weights(trained, tmp_path):
    """Noisy observations and batch order are keyed by (seed, phase, epoch): resume is exact."""
    root = trained[0]
    cfg = vae_config("vae.epochs=3", "vae.obs_noise=0.1")
    assert_resume_is_exact(train_vae, cfg, root / "data", tmp_path / "a", tmp_path / "b", "vae.pt")
    with pytest.raises(DataError, match="another configuration"):
        train_vae(vae_config("vae.epochs=3", "vae.latent=8"), root / "data", tmp_path / "a", progress=False)

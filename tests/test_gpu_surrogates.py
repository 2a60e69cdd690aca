"""The surrogates on a CUDA device: parity with the CPU, training, portable checkpoints.

Part of ``pytest -m gpu`` (``benchmarks/gpu_suite.sh``); skipped without torch CUDA.
"""
import copy

import numpy as np
import pytest
import torch
from test_dataset import write_gaussian_dataset
from test_encoder import TINY_ENCODER
from test_encoder import _model as encoder_model
from test_ldnet import _model as ldnet_model
from test_ldnet import tiny_config

from ldensf_hpc.surrogate import load
from ldensf_hpc.surrogate.encoder import train_encoder
from ldensf_hpc.surrogate.ldnet import train_ldnet

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs torch with a CUDA GPU")]


@pytest.fixture(autouse=True)
def full_float32():
    """Parity is checked in IEEE float32: TF32 matrix products off."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_ldnet_on_cuda_matches_cpu():
    model = ldnet_model(seed=1).eval()
    gpu = copy.deepcopy(model).to("cuda")
    u = torch.rand(6, 2)
    points = torch.rand(500, 2)
    with torch.no_grad():
        s = model.rollout(u, 7)
        s_gpu = gpu.rollout(u.cuda(), 7)
        torch.testing.assert_close(s_gpu.cpu(), s, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gpu.fields_at(s_gpu[:, -1], points).cpu(), model.fields_at(s[:, -1], points),
                                   rtol=1e-5, atol=1e-5)


def test_encoder_on_cuda_matches_cpu():
    model = encoder_model().eval()
    model.set_statistics(torch.rand(6), torch.rand(6) + 0.5, torch.randn(7), torch.rand(7) + 0.5)
    gpu = copy.deepcopy(model).to("cuda")
    y = torch.randn(3, 8, 6)
    with torch.no_grad():
        torch.testing.assert_close(gpu(y.cuda())[0].cpu(), model(y)[0], rtol=1e-5, atol=1e-5)


def test_training_on_cuda_reaches_the_cpu_accuracy_and_checkpoints_load_on_cpu(tmp_path):
    write_gaussian_dataset(tmp_path / "data", n_trajectories=10, n_frames=5, n=12, n_params=1)
    cfg = tiny_config("ldnet.epochs=150", "ldnet.retrain_epochs=50", "encoder.epochs=200", "train.device=cuda",
                      *TINY_ENCODER)
    ldnet = train_ldnet(cfg, tmp_path / "data", tmp_path / "out", progress=False)
    assert ldnet["train_rel_error"] < 0.01 and ldnet["val_rel_error"] < 0.02, ldnet  # the CPU test's bounds
    encoder = train_encoder(cfg, tmp_path / "data", tmp_path / "out", progress=False)
    assert encoder["train_rel_error_params"] < 0.01, encoder
    on_gpu, on_cpu = load(tmp_path / "out" / "ldnet.pt", "cuda"), load(tmp_path / "out" / "ldnet.pt", "cpu")
    u = torch.as_tensor(np.linspace(0.1, 0.9, 4)[:, None], dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(on_gpu.rollout(u.cuda(), 3).cpu(), on_cpu.rollout(u, 3), rtol=1e-5, atol=1e-6)

"""The package's CUDA C executed on the CPU (kernels/cuda/host/cuda_host.h), tested as on a GPU.

Each block's threads are host threads with real barriers, so tile edges, the shared-memory
tiling, idle threads of the last block, the member offset of ``rows`` and the in-kernel Philox
noise all run here as on a device.
"""
from __future__ import annotations

import numpy as np
import pytest

from ldensf_hpc import cuda_host
from ldensf_hpc.backend import cupy_available
from ldensf_hpc.kernels import cuda, ensf_update, reference

HOST = pytest.mark.skipif(cuda_host.compiler() is None, reason="needs a host C++20 compiler")
BACKENDS = [pytest.param("cuda_host", marks=HOST), pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not cupy_available(), reason="needs CuPy and a CUDA GPU")])]
"""The CUDA kernel on the CPU, and on a device where there is one: one test, two executions."""

N_STEPS = 25
SCHEDULE = {"eps_alpha": 0.5, "eps_beta": 0.5}
"""A schedule under which float32 itself is accurate to ~1e-6 at every K and d below (checked
in each test): at the default (eps 0.01, 0) and K = 1000, d = 32 the float32 and float64
references already differ by 5e-3 (near-ties of sharp softmax weights): no float32 backend meets 1e-5 there."""
CLIP = 5.0
LARGEST = cuda.STATE_WIDTHS[-1]


def close32(a, b) -> bool:
    return bool(np.all(np.abs(a - b) <= 1e-5 * (1.0 + np.abs(b))))


def problem(K, d, seed):
    rng = np.random.default_rng(seed)
    prior = (0.5 * rng.standard_normal((K, d)) + 0.5).astype(np.float32)
    obs = prior.mean(axis=0) + 0.3 * rng.standard_normal(d)
    noise = rng.standard_normal((N_STEPS + 1, K, d)).astype(np.float32)
    return prior, obs, 0.4, noise


def reference_of(prior, obs, std, **kwargs):
    """The float32 reference, after checking that float32 is accurate on this problem."""
    want = ensf_update(prior, obs, std, backend="reference", **SCHEDULE, n_steps=N_STEPS, **kwargs)
    exact = ensf_update(prior.astype(np.float64), obs, std, backend="reference", **SCHEDULE, n_steps=N_STEPS,
                        **{k: (v.astype(np.float64) if k == "noise" else v) for k, v in kwargs.items()})
    assert np.all(np.abs(want - exact) <= 2e-6 * (1.0 + np.abs(exact))), "the parity problem is not float32-conditioned"
    return want


@pytest.mark.parametrize("K", [2, 20, 100, 257, 1000])
@pytest.mark.parametrize("d", [1, 12, LARGEST])
@pytest.mark.parametrize("mixture", [True, False])
@pytest.mark.parametrize("clip", [None, CLIP])
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_kernel_matches_reference(backend, K, d, mixture, clip):
    prior, obs, std, noise = problem(K, d, seed=K + d)
    kwargs = {"mixture": mixture, "score_clip": clip, "noise": noise}
    got = ensf_update(prior, obs, std, backend=backend, **SCHEDULE, n_steps=N_STEPS, **kwargs)
    want = reference_of(prior, obs, std, **kwargs)
    assert got.dtype == np.float32 and got.shape == (K, d)
    assert close32(got, want), np.abs(got - want).max()


@pytest.mark.parametrize("K", [2, 20, 100, 257, 1000])
@pytest.mark.parametrize("d", [1, 12, LARGEST])
@pytest.mark.parametrize("backend", BACKENDS)
def test_in_kernel_philox_noise_is_the_reference_stream(backend, K, d):
    """Without a noise array the kernel draws reference.philox_normals(seed, step, K, d) itself."""
    prior, obs, std, _ = problem(K, d, seed=K * d)
    seed = 2**40 + 17 * K + d
    stream = np.stack([reference.philox_normals(seed, step, K, d) for step in range(N_STEPS + 1)])
    got = ensf_update(prior, obs, std, backend=backend, **SCHEDULE, n_steps=N_STEPS, seed=seed)
    assert close32(got, reference_of(prior, obs, std, noise=stream.astype(np.float32)))


@HOST
def test_clip_is_active_in_the_parity_problem():
    prior, obs, std, noise = problem(100, 12, seed=112)
    run = {"backend": "cuda_host", **SCHEDULE, "n_steps": N_STEPS, "noise": noise}
    clipped = ensf_update(prior, obs, std, score_clip=CLIP, **run)
    assert np.abs(clipped - ensf_update(prior, obs, std, **run)).max() > 1e-2


@pytest.mark.parametrize("rows", [slice(0, 1), slice(100, 257), slice(250, 257), slice(127, 129)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_offset_draws_exactly_those_samples(backend, rows):
    """A block of members (an MPI rank's) equals those rows of the whole analysis, to the bit."""
    prior, obs, std, _ = problem(257, 12, seed=3)
    run = {"backend": backend, **SCHEDULE, "n_steps": N_STEPS, "seed": 99}
    whole = ensf_update(prior, obs, std, **run)
    np.testing.assert_array_equal(ensf_update(prior, obs, std, rows=rows, **run), whole[rows])


@HOST
def test_repeated_launches_are_identical():
    """Host threads race where device threads would: a missing barrier would change the result."""
    prior, obs, std, _ = problem(300, 16, seed=4)
    run = {"backend": "cuda_host", **SCHEDULE, "n_steps": N_STEPS, "seed": 5}
    first = ensf_update(prior, obs, std, **run)
    for _ in range(2):
        np.testing.assert_array_equal(ensf_update(prior, obs, std, **run), first)


@HOST
def test_build_is_cached_by_content(tmp_path, monkeypatch):
    """A second process reuses the library; the digest names sources, compiler and flags."""
    monkeypatch.setenv("LDENSF_CUDA_HOST_BUILD", str(tmp_path))
    cuda_host.library.cache_clear()
    try:
        cuda_host.library("ensf_fused")
        built = sorted(p.name for p in tmp_path.iterdir())
        assert len(built) == 1 and built[0].startswith("ensf_fused-") and built[0].endswith(".so")
        cuda_host.library.cache_clear()
        cuda_host.library("ensf_fused")
        assert sorted(p.name for p in tmp_path.iterdir()) == built  # no rebuild, no leftovers
    finally:
        cuda_host.library.cache_clear()


def test_missing_compiler_is_refused_clearly(monkeypatch):
    from ldensf_hpc.errors import BackendError

    monkeypatch.setenv("CXX", "no-such-compiler")
    cuda_host.library.cache_clear()
    try:
        with pytest.raises(BackendError, match="needs a C\\+\\+20 compiler: install g\\+\\+ or set CXX"):
            ensf_update(*problem(4, 2, 0)[:3], backend="cuda_host", n_steps=3, seed=1)
    finally:
        cuda_host.library.cache_clear()

"""Fused latent EnSF kernels: backends against each other and against a plain NumPy version.

Parity tolerance between backends in float32: ``|a - b| <= 1e-5 (1 + |b|)`` member by member
with the same noise (``close32``). The CUDA C source is compiled here with nvcc (cmake build
to fatbin/PTX, and a host build of its __host__ __device__ helpers run on the CPU); running
the kernels on a GPU needs CuPy and is skipped without one.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ldensf_hpc.backend import BackendError, cupy_available
from ldensf_hpc.errors import InputError
from ldensf_hpc.kernels import BACKENDS, TABLE_COLUMNS, ensf_update, reference
from ldensf_hpc.kernels.philox import member_normals, normals
from ldensf_hpc.kernels.reference import philox4x32, philox_normals
from ldensf_hpc.sde import schedule

ROOT = Path(__file__).resolve().parents[1]
CUDA_SOURCE = ROOT / "kernels" / "cuda" / "ensf_fused.cu"
NVCC = shutil.which("nvcc")
GPU = cupy_available()

# Random123 known-answer vectors for Philox4x32-10: (counter, key) -> output.
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def close32(a, b) -> bool:
    return bool(np.all(np.abs(a - b) <= 1e-5 * (1.0 + np.abs(b))))


def problem(K, d, n_steps, seed=0, dtype=np.float32):
    """A forecast ensemble, an observation near it, noise std and pre-drawn noise."""
    rng = np.random.default_rng(seed)
    prior = (rng.standard_normal((K, d)) + 0.5).astype(dtype)
    obs = prior.mean(axis=0) + 0.3 * rng.standard_normal(d)
    obs_std = np.full(d, 0.4)
    noise = rng.standard_normal((n_steps + 1, K, d)).astype(dtype)
    return prior, obs, obs_std, noise


def plain_ensf(prior, obs, obs_std, noise, n_steps, mixture, clip, eps_alpha=0.01, eps_beta=0.0):
    """The equations written plainly in float64 (K x K x d broadcast; paper eqs. 6-12)."""
    s = schedule(n_steps, eps_alpha, eps_beta)
    x = noise[0].astype(np.float64)
    for i in range(n_steps):
        a, b2 = s.alpha[i], s.beta2[i]
        diff = x[:, None, :] - a * prior[None, :, :]  # (K queries, K members, d)
        if mixture:
            logw = -np.sum(diff**2, axis=2) / (2 * b2)
            w = np.exp(logw - logw.max(axis=1, keepdims=True))
            w /= w.sum(axis=1, keepdims=True)
            prior_score = -np.einsum("qk,qkd->qd", w, diff) / b2
        else:
            prior_score = -(x - a * prior) / b2
        score = prior_score + s.damping[i] * (obs - x) / obs_std**2
        if clip is not None:
            score = np.clip(score, -clip, clip)
        x = x - s.dt * (s.drift[i] * x - s.g2[i] * score) + np.sqrt(s.dt * s.g2[i]) * noise[i + 1]
    return x


@pytest.mark.parametrize("mixture", [True, False])
@pytest.mark.parametrize("clip", [None, 10.0])
@pytest.mark.parametrize("eps", [(0.01, 0.0), (0.5, 0.05)])
def test_reference_matches_plain_numpy(mixture, clip, eps):
    prior, obs, obs_std, noise = problem(9, 5, 30, dtype=np.float64)
    want = plain_ensf(prior, obs, obs_std, noise, 30, mixture, clip, *eps)
    kwargs = dict(n_steps=30, eps_alpha=eps[0], eps_beta=eps[1], mixture=mixture, score_clip=clip, noise=noise,
                  backend="reference")
    got = ensf_update(prior, obs, obs_std, **kwargs)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    got32 = ensf_update(prior.astype(np.float32), obs, obs_std, **kwargs)
    np.testing.assert_allclose(got32, want, rtol=2e-5, atol=2e-5)


def test_clip_is_active_in_the_parity_problems():
    prior, obs, obs_std, noise = problem(7, 12, 40)
    clipped = ensf_update(prior, obs, obs_std, n_steps=40, score_clip=10.0, noise=noise, backend="reference")
    free = ensf_update(prior, obs, obs_std, n_steps=40, noise=noise, backend="reference")
    assert np.abs(clipped - free).max() > 1e-2


def test_reference_query_chunks_do_not_change_the_result(monkeypatch):
    prior, obs, obs_std, noise = problem(64, 6, 20)
    whole = ensf_update(prior, obs, obs_std, n_steps=20, noise=noise, backend="reference")
    monkeypatch.setattr(reference, "LOGIT_BUDGET", 64 * 5)  # 5 query rows per product
    chunked = ensf_update(prior, obs, obs_std, n_steps=20, noise=noise, backend="reference")
    assert close32(chunked, whole)  # float32 matrix products summed in another order


@pytest.mark.parametrize("K", [2, 7, 64, 300])
@pytest.mark.parametrize("mixture", [True, False])
@pytest.mark.parametrize("clip", [None, 10.0])
def test_numba_matches_reference_float32(K, mixture, clip):
    prior, obs, obs_std, noise = problem(K, 12, 100, seed=K)
    ref = ensf_update(prior, obs, obs_std, mixture=mixture, score_clip=clip, noise=noise, backend="reference")
    got = ensf_update(prior, obs, obs_std, mixture=mixture, score_clip=clip, noise=noise, backend="numba")
    assert got.dtype == np.float32 and got.shape == (K, 12)
    assert close32(got, ref), np.abs(got - ref).max()


def test_numba_matches_reference_with_another_schedule():
    prior, obs, obs_std, noise = problem(64, 12, 60, seed=1)
    kwargs = dict(n_steps=60, eps_alpha=0.5, eps_beta=0.05, noise=noise)
    ref = ensf_update(prior, obs, obs_std, backend="reference", **kwargs)
    assert close32(ensf_update(prior, obs, obs_std, backend="numba", **kwargs), ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K, d", [(2, 5), (7, 13), (64, 600), (30, 4501)])
@pytest.mark.parametrize("mixture", [True, False])
def test_blas_matches_reference(dtype, K, d, mixture):
    """The full-space path (GEMMs + fused pass, tiles and parallel chunks of components: d = 4501
    spans three chunks, the last one ragged) against the torch reference with the same noise array."""
    prior, obs, obs_std, noise = problem(K, d, 30, seed=d, dtype=dtype)
    kwargs = dict(n_steps=30, mixture=mixture, score_clip=50.0, noise=noise)
    ref = ensf_update(prior, obs, obs_std, backend="reference", **kwargs)
    got = ensf_update(prior, obs, obs_std, backend="blas", **kwargs)
    assert got.dtype == dtype and got.shape == (K, d)
    if dtype == np.float64:
        np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-11)
    else:
        assert close32(got, ref), np.abs(got - ref).max()


def test_blas_does_not_depend_on_the_thread_count():
    """The chunks of components are fixed and their logits summed in chunk order: bitwise the same
    analysis on 1 and on 2 threads."""
    import numba

    prior, obs, obs_std, _ = problem(20, 5000, 10, seed=8)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = ensf_update(prior, obs, obs_std, n_steps=10, seed=4, backend="blas")
        numba.set_num_threads(max(2, threads) if numba.config.NUMBA_NUM_THREADS > 1 else 1)
        two = ensf_update(prior, obs, obs_std, n_steps=10, seed=4, backend="blas")
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one, two)


def test_philox_known_answers():
    for counter, key, want in PHILOX_KAT:
        assert tuple(philox4x32(np.array(counter, dtype=np.uint32), key)) == want


def test_numba_normals_are_the_philox_stream():
    seed, d, n = 2**40 + 12345, 10, 7
    want = np.stack([philox_normals(seed, s, 5, d)[3] for s in range(n)])
    got = np.empty((n, d))
    member_normals(got, np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32), 3)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)
    for d in (1, 2, 3, 5, 9):  # one noise index for a block of members (the full-space EnSF's draw)
        np.testing.assert_allclose(normals(seed, 4, 2, 6, d), philox_normals(seed, 4, 8, d)[2:], rtol=0, atol=1e-13)
    z = np.stack([philox_normals(seed, s, 500, 4) for s in range(4)]).ravel()
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_seeded_backends_draw_the_same_noise(dtype):
    K, d, n_steps, seed = 40, 11, 50, 987654321
    prior, obs, obs_std, _ = problem(K, d, n_steps, dtype=dtype)
    noise = np.stack([philox_normals(seed, s, K, d) for s in range(n_steps + 1)])
    ref = ensf_update(prior, obs, obs_std, n_steps=n_steps, noise=noise, backend="reference")
    for backend in ("reference", "blas", "numba"):  # numba last: the default backend, compared below
        got = ensf_update(prior, obs, obs_std, n_steps=n_steps, seed=seed, backend=backend)
        if dtype == np.float64:
            np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-11)
        else:
            assert close32(got, ref)
    again = ensf_update(prior, obs, obs_std, n_steps=n_steps, seed=seed)
    other = ensf_update(prior, obs, obs_std, n_steps=n_steps, seed=seed + 1)
    assert np.array_equal(again, got) and np.abs(other - got).max() > 0.1


@pytest.mark.parametrize("backend", ["reference", "numba", "blas"])
@pytest.mark.parametrize("mixture", [True, False])
def test_rows_draw_exactly_those_samples(backend, mixture):
    """A block of members' samples (an MPI rank's share) equals those rows of the whole analysis,
    seeded or with a noise array."""
    prior, obs, obs_std, noise = problem(23, 7, 30, seed=2)
    for kwargs in (dict(seed=77), dict(noise=noise)):
        whole = ensf_update(prior, obs, obs_std, n_steps=30, mixture=mixture, backend=backend, **kwargs)
        for rows in (slice(0, 1), slice(5, 17), slice(20, 23)):
            part = ensf_update(prior, obs, obs_std, n_steps=30, mixture=mixture, backend=backend, rows=rows, **kwargs)
            assert close32(part, whole[rows])


@pytest.mark.parametrize("backend", ["reference", "numba", "blas"])
def test_zero_inverse_variance_is_an_unobserved_component(backend):
    """inv_var = 0 (a selection operator's unobserved component): its observed value is ignored, and the
    other components see the same update as with their own std."""
    prior, obs, obs_std, _ = problem(16, 6, 40, seed=4)
    inv_var = 1.0 / obs_std**2
    inv_var[[1, 4]] = 0.0
    a = ensf_update(prior, obs, inv_var=inv_var, n_steps=40, seed=3, backend=backend)
    moved = obs.copy()
    moved[[1, 4]] += 100.0
    b = ensf_update(prior, moved, inv_var=inv_var, n_steps=40, seed=3, backend=backend)
    np.testing.assert_array_equal(a, b)
    c = ensf_update(prior, obs, inv_var=1.0 / obs_std**2, n_steps=40, seed=3, backend=backend)
    d = ensf_update(prior, obs, obs_std, n_steps=40, seed=3, backend=backend)
    assert close32(c, d) and np.abs(a - c).max() > 1e-3


def test_uninformative_observation_returns_the_prior():
    """With obs_std -> infinity the analysis is a sample of the forecast distribution."""
    K, d = 2000, 4
    rng = np.random.default_rng(3)
    mean = np.array([1.0, -2.0, 0.5, 3.0])
    chol = np.array([[1.0, 0, 0, 0], [0.6, 0.8, 0, 0], [-0.3, 0.2, 0.9, 0], [0.1, 0.4, -0.2, 0.5]])
    prior = (mean + rng.standard_normal((K, d)) @ chol.T).astype(np.float32)
    out = ensf_update(prior, np.zeros(d), 1e6, seed=11, backend="numba")
    cov = chol @ chol.T
    stderr = np.sqrt(np.diag(cov) / K)
    assert np.all(np.abs(out.mean(axis=0) - mean) < 4 * stderr)
    rel = np.abs(np.cov(out.T) - cov) / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    assert rel.max() < 0.12, rel.max()


def test_gaussian_observation_moves_towards_the_kalman_posterior():
    """EnSF (damped likelihood) is approximate, but must move most of the way to the Kalman
    posterior of a Gaussian prior ensemble and a linear-Gaussian observation and shrink it."""
    K, d, std = 500, 3, 1.0
    prior = (np.random.default_rng(0).standard_normal((K, d)) + 0.5).astype(np.float32)
    y = np.array([1.5, 1.0, 0.0])
    out = ensf_update(prior, y, std, seed=1)
    mu, cov = prior.mean(axis=0), np.cov(prior.T)
    gain = cov @ np.linalg.inv(cov + std**2 * np.eye(d))
    kalman_mean, kalman_cov = mu + gain @ (y - mu), cov - gain @ cov
    assert np.linalg.norm(out.mean(axis=0) - kalman_mean) < 0.4 * np.linalg.norm(mu - kalman_mean)
    assert np.all(np.var(out, axis=0) < 0.8 * np.diag(cov))
    assert np.all(np.var(out, axis=0) > 0.5 * np.diag(kalman_cov))


@pytest.mark.parametrize("kwargs, message", [
    (dict(prior=np.zeros(5)), "prior must be a"),
    (dict(prior=np.zeros((1, 3))), "at least 2 members"),
    (dict(obs=np.zeros(4)), "obs must have shape"),
    (dict(obs_std=np.ones(2)), "obs_std must be"),
    (dict(obs_std=0.0), "obs_std must be positive"),
    (dict(obs_std=None), "exactly one of obs_std and inv_var"),
    (dict(obs_std=None, inv_var=-np.ones(3)), "inv_var must be >= 0"),
    (dict(rows=slice(2, 5)), "rows must be a contiguous"),
    (dict(rows=slice(0, 3, 2)), "rows must be a contiguous"),
    (dict(prior=np.array([[0.0, np.nan, 1], [1, 2, 3]])), "prior contains NaN"),
    (dict(obs=np.array([0.0, np.inf, 1])), "obs contains NaN"),
    (dict(noise=np.zeros((5, 3, 3))), "noise must have shape"),
    (dict(score_clip=-1.0), "score_clip"),
    (dict(n_steps=0), "n_steps"),
    (dict(seed=-3), "seed"),
])
def test_bad_input_is_rejected_clearly(kwargs, message):
    args = dict(prior=np.ones((3, 3)) * np.arange(3)[:, None], obs=np.zeros(3), obs_std=1.0, n_steps=10)
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        ensf_update(**args)


def test_unknown_backend_is_rejected():
    with pytest.raises(BackendError, match="unknown EnSF kernel backend 'magma'.*reference, numba, blas, cuda, cuda_host"):
        ensf_update(np.ones((3, 2)), np.zeros(2), 1.0, backend="magma")
    assert set(BACKENDS) == {"reference", "numba", "blas", "cuda", "cuda_host"}


@pytest.mark.skipif(GPU, reason="checks the message on machines without a GPU")
def test_cuda_backend_without_gpu_says_so():
    with pytest.raises(BackendError, match="needs CuPy and a CUDA GPU"):
        ensf_update(np.ones((3, 2)) * np.arange(3)[:, None], np.zeros(2), 1.0, n_steps=5, backend="cuda")


def test_cuda_loader_matches_the_source():
    """Block size and compiled state widths in cuda.py are those of the .cu file."""
    from ldensf_hpc.kernels import cuda

    text = CUDA_SOURCE.read_text()
    assert int(re.search(r"#define ENSF_THREADS (\d+)", text).group(1)) == cuda.THREADS
    assert tuple(int(w) for w in re.findall(r"^ENSF_KERNEL\((\d+)\)", text, re.M)) == cuda.STATE_WIDTHS
    assert int(re.search(r"#define ENSF_TABLE_COLUMNS (\d+)", text).group(1)) == len(TABLE_COLUMNS)


def _pypi_cmake():
    try:
        import cmake
    except ImportError:
        return None
    path = Path(cmake.CMAKE_BIN_DIR) / "cmake"
    return str(path) if path.is_file() else None


CMAKE = _pypi_cmake()


@pytest.mark.skipif(NVCC is None or CMAKE is None, reason="needs nvcc and the PyPI cmake (pip install cmake)")
def test_cmake_builds_fatbin_and_ptx(tmp_path):
    build = tmp_path / "build"
    configure = [CMAKE, "-S", str(ROOT / "cmake"), "-B", str(build)]
    for args in (configure, [CMAKE, "--build", str(build), "--parallel", "2"]):
        run = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
    fatbin, ptx = (build / "ensf_fused.fatbin").read_bytes(), (build / "ensf_fused.ptx").read_text()
    for width in (4, 12, 32):
        assert f"ensf_fused_d{width}".encode() in fatbin
        assert f".entry ensf_fused_d{width}(" in ptx
    assert ".target sm_80" in ptx


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("K", [2, 7, 64, 300])
@pytest.mark.parametrize("mixture, clip", [(True, None), (False, None), (True, 10.0)])
def test_cuda_matches_reference(K, mixture, clip):
    prior, obs, obs_std, noise = problem(K, 12, 100, seed=K)
    ref = ensf_update(prior, obs, obs_std, mixture=mixture, score_clip=clip, noise=noise, backend="reference")
    got = ensf_update(prior, obs, obs_std, mixture=mixture, score_clip=clip, noise=noise, backend="cuda")
    assert close32(got, ref), np.abs(got - ref).max()
    seeded = ensf_update(prior, obs, obs_std, mixture=mixture, score_clip=clip, seed=5, backend="cuda")
    assert close32(seeded, ensf_update(prior, obs, obs_std, mixture=mixture, score_clip=clip, seed=5))


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CuPy and a CUDA GPU")
def test_cuda_nvrtc_path_and_device_arrays(monkeypatch, tmp_path):
    import cupy as cp

    from ldensf_hpc.kernels import cuda

    monkeypatch.setenv("LDENSF_CUDA_BUILD", str(tmp_path))  # no prebuilt module there
    cuda.load_module.cache_clear()
    try:
        assert cuda.load_module()[1] == "nvrtc"
        prior, obs, obs_std, noise = problem(500, 10, 100)
        got = ensf_update(cp.asarray(prior), cp.asarray(obs), obs_std, noise=cp.asarray(noise), backend="cuda")
        assert isinstance(got, cp.ndarray)
        ref = ensf_update(prior, obs, obs_std, noise=noise, backend="numba")
        assert close32(cp.asnumpy(got), ref)
    finally:
        cuda.load_module.cache_clear()

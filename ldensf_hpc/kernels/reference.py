"""Torch reference of the fused latent EnSF analysis (ground truth for the other backends).

The mixture prior score is dot-product attention: with queries x (K, d) and keys p (K, d),
``-|x - alpha p_k|^2 / (2 beta2) = (2 alpha x.p_k - alpha^2 |p_k|^2) / (2 beta2) + const(x)``,
so the logits come from one matrix product, the weights from a softmax over k and the
weighted mean from a second product (queries are processed in row chunks so that no more
than ``LOGIT_BUDGET`` logits exist at once; never a K x K x d array).

Also the NumPy Philox4x32-10 stream (:func:`philox_normals`), the definition of the normals
every backend draws when no noise array is given (:mod:`ldensf_hpc.kernels.philox` is its
compiled twin, tested equal).
"""
from __future__ import annotations

import numpy as np
import torch

from . import philox

LOGIT_BUDGET = 1 << 24
"""Largest number of logits (query rows x K) materialised at once."""

PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_MASK = np.uint64(0xFFFFFFFF)


def philox4x32(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32-10 (Salmon et al., SC'11) of ``counter`` (..., 4) uint32 under a 2-word key."""
    c0, c1, c2, c3 = (counter[..., i].astype(np.uint64) for i in range(4))
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    m0, m1 = np.uint64(PHILOX_M[0]), np.uint64(PHILOX_M[1])
    for _ in range(10):
        p0, p1 = m0 * c0, m1 * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _MASK, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _MASK
        k0, k1 = (k0 + np.uint64(PHILOX_W[0])) & _MASK, (k1 + np.uint64(PHILOX_W[1])) & _MASK
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def philox_normals(seed: int, step: int, K: int, d: int) -> np.ndarray:
    """Standard normals ``(K, d)`` of noise index ``step`` (0 = start) for all members.

    Member m, components 4b .. 4b+3 come from Philox counter ``(b, step, m, 0)`` and key
    ``(seed mod 2**32, seed // 2**32)``; each pair of words (u1, u2), ``u = (r + 0.5) 2**-32``,
    gives ``sqrt(-2 ln u1) (cos, sin)(2 pi u2)`` (Box-Muller) in float64.
    """
    blocks = -(-d // 4)
    counter = np.zeros((K, blocks, 4), dtype=np.uint32)
    counter[..., 0] = np.arange(blocks, dtype=np.uint32)
    counter[..., 1] = step
    counter[..., 2] = np.arange(K, dtype=np.uint32)[:, None]
    u = (philox4x32(counter, (seed & 0xFFFFFFFF, seed >> 32)).astype(np.float64) + 0.5) * 2.0**-32
    radius = np.sqrt(-2.0 * np.log(u[..., 0::2]))
    angle = 2.0 * np.pi * u[..., 1::2]
    z = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)  # (K, blocks, 2, 2)
    return z.reshape(K, 4 * blocks)[:, :d]


def analysis(prior, obs, inv_var, table, noise, seed, mixture, clip, rows, device=None):
    """Reference EnSF analysis (arguments as prepared by :func:`ldensf_hpc.kernels.ensf_update`).

    ``prior``, ``obs``, ``inv_var`` and ``noise`` may be NumPy or CuPy arrays or torch tensors;
    torch computes on ``device`` (default: where ``prior`` lives). Draws the samples of the
    members ``rows``; seeded normals come from :func:`ldensf_hpc.kernels.philox.normals`
    (the :func:`philox_normals` stream, compiled). Returns an array of the input's kind
    (CuPy for CuPy input, else NumPy).
    """
    p = torch.as_tensor(prior, device=device)
    K, d = p.shape
    first, J = rows.start, rows.stop - rows.start

    def draw(step):
        if noise is not None:
            return torch.as_tensor(noise[step, first:first + J], device=p.device, dtype=p.dtype)
        return torch.as_tensor(philox.normals(seed, step, first, J, d), device=p.device).to(p.dtype)

    y = torch.as_tensor(obs, device=p.device)
    iv = torch.as_tensor(inv_var, device=p.device)
    norms = (p * p).sum(dim=1)
    paired = p[first:first + J]
    chunk = max(1, LOGIT_BUDGET // K)
    x = draw(0).clone()  # updated in place; never the caller's noise array
    for i, (a, inv_b2, c, x_factor, score_factor, h, noise_scale) in enumerate(np.asarray(table).tolist()):
        if mixture:
            mean = torch.empty_like(x)
            for q in range(0, J, chunk):
                logits = torch.addmm(norms, x[q:q + chunk], p.T, beta=-a * a * c, alpha=2.0 * a * c)
                mean[q:q + chunk] = torch.softmax(logits, dim=1) @ p
        else:
            mean = paired
        score = torch.sub(y, x).mul_(h * iv)  # (a mean - x) / beta2 + h (y - x) inv_var, in place
        score.add_(mean, alpha=a * inv_b2).add_(x, alpha=-inv_b2)
        if clip is not None:
            score.clamp_(-clip, clip)
        x.mul_(x_factor).add_(score, alpha=score_factor).add_(draw(i + 1), alpha=noise_scale)
    if hasattr(prior, "__cuda_array_interface__") and not isinstance(prior, torch.Tensor):
        import cupy

        return cupy.from_dlpack(x)
    return x.cpu().numpy()

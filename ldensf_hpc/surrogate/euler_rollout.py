"""The LDNet's latent Euler rollout fused into one Numba call, with its hand-written adjoint (CPU).

``s_t = s_{t-1} + dt_hat F(s_{t-1}, u_{t-1})`` from ``s_{-1} = 0`` (LD-EnSF paper eqs. 13-14) for
all frames: the forward pass stores F's pre-activations, the backward pass runs the discrete adjoint
``g_{t-1} = g_t + dt_hat J_F(s_{t-1}, u_{t-1})^T g_t`` (plus the loss gradient at ``s_{t-1}``) from the
last frame back and accumulates F's weight gradients on the way. Through torch autograd the same
rollout is ~10 small operators per step and as many in the backward pass, each a fixed cost of
microseconds for tensors of a few hundred numbers: on the SWE small preset (4 trajectories, 51
frames, F 3 x 50; 2-core EPYC) the rollout's forward and backward took 18.6 of a training step's 47 ms
through autograd, 1.9 ms fused (the LDNet's training 441 s -> 373 s, benchmarks/ldnet_ablation.py).
The autograd rollout (:meth:`LDNet.rollout` on other devices) is the reference of the parity test.

:data:`FUSED_ROLLOUTS` maps a torch device type to its fused rollout; devices without one use autograd.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

from ..kernels.philox import JIT

ACTIVATION_CODES = {"relu": 0, "tanh": 1, "gelu": 2, "silu": 3}
"""F's activation (``ldnet.activation``) as the kernels' integer code."""

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


@njit(**JIT)
def _act(z, code):
    if code == 0:
        return max(z, 0.0)
    if code == 1:
        return math.tanh(z)
    if code == 2:
        return 0.5 * z * (1.0 + math.erf(z * _INV_SQRT2))  # exact (erf) GELU, as torch.nn.GELU()
    return z / (1.0 + math.exp(-z))


@njit(**JIT)
def _act_slope(z, code):
    if code == 0:
        return 1.0 if z > 0.0 else 0.0
    if code == 1:
        t = math.tanh(z)
        return 1.0 - t * t
    if code == 2:
        return 0.5 * (1.0 + math.erf(z * _INV_SQRT2)) + z * _INV_SQRT2PI * math.exp(-0.5 * z * z)
    sig = 1.0 / (1.0 + math.exp(-z))
    return sig * (1.0 + z * (1.0 - sig))


@njit(**JIT)
def _forward(u, w_in, b_in, w_hid, b_hid, w_out, b_out, dt, code, s_out, z_out):
    """``s_out (B, T, L)`` the latent states and ``z_out (B, T, D, H)`` F's pre-activations, for ``u (B, T, p)``."""
    n_traj, n_frames, n_params = u.shape
    width, latent, depth = w_in.shape[0], w_out.shape[0], w_hid.shape[0] + 1
    s = np.zeros(latent, dtype=u.dtype)
    a = np.empty(width, dtype=u.dtype)
    for b in range(n_traj):
        s[:] = 0.0
        for t in range(n_frames):
            z = z_out[b, t]
            for j in range(width):
                acc = b_in[j]
                for i in range(latent):
                    acc += w_in[j, i] * s[i]
                for i in range(n_params):
                    acc += w_in[j, latent + i] * u[b, t, i]
                z[0, j] = acc
            for k in range(1, depth):
                for j in range(width):
                    a[j] = _act(z[k - 1, j], code)
                for j in range(width):
                    acc = b_hid[k - 1, j]
                    for i in range(width):
                        acc += w_hid[k - 1, j, i] * a[i]
                    z[k, j] = acc
            for j in range(width):
                a[j] = _act(z[depth - 1, j], code)
            for i in range(latent):
                acc = b_out[i]
                for j in range(width):
                    acc += w_out[i, j] * a[j]
                s[i] += dt * acc
                s_out[b, t, i] = s[i]


@njit(**JIT)
def _backward(u, s_out, z_out, g_s, w_in, w_hid, w_out, dt, code,
              g_u, g_w_in, g_b_in, g_w_hid, g_b_hid, g_w_out, g_b_out):
    """Adjoint of :func:`_forward`: ``g_s (B, T, L)`` the loss gradient at the states; the gradients of
    ``u`` and of F's weights are written to (``g_u``) or accumulated into (``g_w_*``, ``g_b_*``) the outputs."""
    n_traj, n_frames, n_params = u.shape
    width, latent, depth = w_in.shape[0], w_out.shape[0], w_hid.shape[0] + 1
    g = np.zeros(latent, dtype=u.dtype)
    gf = np.empty(latent, dtype=u.dtype)
    a = np.empty(width, dtype=u.dtype)
    ga = np.empty(width, dtype=u.dtype)
    gz = np.empty(width, dtype=u.dtype)
    for b in range(n_traj):
        g[:] = 0.0
        for t in range(n_frames - 1, -1, -1):
            z = z_out[b, t]
            for i in range(latent):
                g[i] += g_s[b, t, i]
                gf[i] = dt * g[i]
                g_b_out[i] += gf[i]
            for j in range(width):
                a[j] = _act(z[depth - 1, j], code)
                ga[j] = 0.0
            for i in range(latent):
                for j in range(width):
                    g_w_out[i, j] += gf[i] * a[j]
                    ga[j] += w_out[i, j] * gf[i]
            for k in range(depth - 1, 0, -1):
                for j in range(width):
                    gz[j] = ga[j] * _act_slope(z[k, j], code)
                    a[j] = _act(z[k - 1, j], code)
                    ga[j] = 0.0
                for j in range(width):
                    g_b_hid[k - 1, j] += gz[j]
                    for i in range(width):
                        g_w_hid[k - 1, j, i] += gz[j] * a[i]
                        ga[i] += w_hid[k - 1, j, i] * gz[j]
            for j in range(width):
                gz[j] = ga[j] * _act_slope(z[0, j], code)
                g_b_in[j] += gz[j]
            for i in range(n_params):
                g_u[b, t, i] = 0.0
            for j in range(width):
                for i in range(n_params):
                    g_w_in[j, latent + i] += gz[j] * u[b, t, i]
                    g_u[b, t, i] += w_in[j, latent + i] * gz[j]
            if t > 0:  # s_{t-1}; s_{-1} = 0 contributes nothing to the weights and ends the adjoint
                for j in range(width):
                    for i in range(latent):
                        g_w_in[j, i] += gz[j] * s_out[b, t - 1, i]
                        g[i] += w_in[j, i] * gz[j]


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().numpy())


class _Rollout(torch.autograd.Function):
    """Differentiable in ``u (B, T, p)`` and F's weights (hidden layers stacked: ``w_hid (D-1, H, H)``).

    The inputs and the states are kept with ``save_for_backward``, so that an in-place change of either
    between the forward and the backward pass is refused by autograd rather than differentiated wrongly."""

    @staticmethod
    def forward(ctx, u, w_in, b_in, w_hid, b_hid, w_out, b_out, dt, code):
        arrays = [_numpy(x) for x in (u, w_in, b_in, w_hid, b_hid, w_out, b_out)]
        n_traj, n_frames = u.shape[:2]
        s = np.empty((n_traj, n_frames, w_out.shape[0]), dtype=arrays[0].dtype)
        z = np.empty((n_traj, n_frames, w_hid.shape[0] + 1, w_in.shape[0]), dtype=arrays[0].dtype)
        _forward(*arrays, dt, code, s, z)
        states = torch.from_numpy(s)
        ctx.save_for_backward(u, w_in, b_in, w_hid, b_hid, w_out, b_out, states)
        ctx.z, ctx.dt, ctx.code = z, dt, code
        return states

    @staticmethod
    def backward(ctx, g_s):
        *inputs, states = ctx.saved_tensors
        u, w_in, b_in, w_hid, b_hid, w_out, b_out = (_numpy(x) for x in inputs)
        grads = [np.zeros_like(x) for x in (u, w_in, b_in, w_hid, b_hid, w_out, b_out)]
        _backward(u, _numpy(states), ctx.z, _numpy(g_s), w_in, w_hid, w_out, ctx.dt, ctx.code, *grads)
        return (*(torch.from_numpy(g) for g in grads), None, None)


def numba_rollout(net, activation: str, dt_hat: float, u: torch.Tensor, n_frames: int) -> torch.Tensor:
    """States ``s_0 ... s_{n_frames-1}`` ``(B, T, latent)`` of the dynamics MLP ``net`` (non-residual) from
    ``s_{-1} = 0``; ``u (B, p)`` constant or ``(B, T, p)`` per step, in the dtype of F's weights."""
    assert not net.residual, "the fused rollout implements a plain MLP"
    if u.ndim == 2:
        u = u[:, None].expand(-1, n_frames, -1)
    width, hidden = net.inp.out_features, net.hidden
    w_hid = torch.stack([h.weight for h in hidden]) if len(hidden) else net.inp.weight.new_zeros(0, width, width)
    b_hid = torch.stack([h.bias for h in hidden]) if len(hidden) else net.inp.bias.new_zeros(0, width)
    return _Rollout.apply(u[:, :n_frames], net.inp.weight, net.inp.bias, w_hid, b_hid, net.out.weight, net.out.bias,
                          float(dt_hat), ACTIVATION_CODES[activation])


FUSED_ROLLOUTS = {"cpu": numba_rollout}
"""torch device type -> fused latent rollout (``(net, activation, dt_hat, u, n_frames) -> states``)."""

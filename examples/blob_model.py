"""A simulator of your own, outside the package: a tracer blob from an unknown source.

2-D advection-diffusion of a tracer ``c`` on the periodic unit square, with a steady
Gaussian source at an unknown point ``(x0, y0)`` (the parameters to estimate) and decay::

    dc/dt + a . grad c = kappa lap c + q exp(-|x - x0|^2 / (2 w^2)) - lambda c

The model follows the protocol of :mod:`ldensf_hpc.models` (batched over members on the
leading axis: state ``(K, 1, n, n)``), and :class:`Blob` makes it a case of the engine.
Nothing in ``ldensf_hpc`` is edited; the case is named by its import path::

    export PYTHONPATH=examples                     # where this module is importable
    ldensf run --case blob_model:Blob --preset tiny --methods free,ensf,ld_ensf --noise 0.1
    mpiexec -n 2 ldensf generate --case blob_model:Blob --preset tiny --out runs/blob/data --backend mpi
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ldensf_hpc import ModelCase
from ldensf_hpc.errors import InputError, SolverError


@dataclass
class BlobConfig:
    """The tracer model and its stored frames."""

    n: int = 24  # grid points per direction
    wind_x: float = 1.0  # advection velocity a
    wind_y: float = 0.5
    diffusivity: float = 2.0e-3  # kappa
    decay: float = 0.5  # lambda
    rate: float = 2.0  # source strength q
    width: float = 0.06  # source radius w
    courant: float = 0.4  # dt = courant * dx / max|a|
    n_frames: int = 16
    steps_per_frame: int = 4


class BlobAdvection:
    """Upwind advection, central diffusion, explicit Euler: all members in one vectorised step."""

    name = "blob"
    field_names = ("c",)
    param_names = ("source_x", "source_y")
    units = {"c": "kg/m^2", "source_x": "m", "source_y": "m", "x": "m", "y": "m", "time": "s"}

    def __init__(self, cfg: BlobConfig):
        if cfg.n < 4:
            raise ValueError(f"model.n must be >= 4, got {cfg.n}")
        self.cfg, self.dx = cfg, 1.0 / cfg.n
        self.dt = cfg.courant * self.dx / max(abs(cfg.wind_x), abs(cfg.wind_y), 1e-12)
        if cfg.diffusivity * self.dt / self.dx**2 > 0.25:
            raise ValueError(f"model.diffusivity {cfg.diffusivity} is unstable at dt {self.dt:.3g}; lower model.courant")
        self.grid = {"n": cfg.n, "dx": self.dx}
        self.x = (np.arange(cfg.n) + 0.5) * self.dx

    def sample_params(self, rng, n):
        return rng.uniform(0.2, 0.8, size=(n, 2))

    def source(self, params):
        """``q exp(-|x - x0|^2 / (2 w^2)) (K, 1, n, n)`` with periodic distances."""
        d = lambda grid, centre: (grid[None, :] - centre[:, None] + 0.5) % 1.0 - 0.5  # noqa: E731
        dx, dy = d(self.x, params[:, 0]), d(self.x, params[:, 1])
        r2 = dy[:, :, None] ** 2 + dx[:, None, :] ** 2
        return (self.cfg.rate * np.exp(-r2 / (2 * self.cfg.width**2)))[:, None]

    def initial_state(self, params, rng=None):
        params = np.asarray(params, np.float64)
        return 0.2 * self.source(params) / self.cfg.rate

    def step(self, state, params, n_steps=1):
        c, cfg, dt, dx = np.array(state, np.float64), self.cfg, self.dt, self.dx
        q = self.source(np.asarray(params, np.float64))
        ax, ay = cfg.wind_x, cfg.wind_y
        for k in range(int(n_steps)):
            back_x = np.roll(c, 1, -1) if ax > 0 else np.roll(c, -1, -1)
            back_y = np.roll(c, 1, -2) if ay > 0 else np.roll(c, -1, -2)
            lap = np.roll(c, 1, -1) + np.roll(c, -1, -1) + np.roll(c, 1, -2) + np.roll(c, -1, -2) - 4 * c
            c = c + dt * (-abs(ax) * (c - back_x) / dx - abs(ay) * (c - back_y) / dx
                          + cfg.diffusivity * lap / dx**2 + q - cfg.decay * c)
            if not np.isfinite(c).all():
                raise SolverError(f"blob: NaN or Inf after step {k + 1}")
        return c

    def to_fields(self, state):
        return state

    def from_fields(self, fields):
        if fields.shape[1:] != (1, self.cfg.n, self.cfg.n):
            raise InputError(f"blob fields must be (K, 1, {self.cfg.n}, {self.cfg.n}), got {fields.shape}")
        return fields


def trajectories(n_trajectories: int, n_frames: int, n: int = 16, seed: int = 0):
    """Tracer trajectories ``(N, n_frames, n, n)`` 4 steps apart, their sources ``(N, 2)`` and times ``(n_frames,)``
    (for examples that stand for data computed elsewhere)."""
    model = BlobAdvection(BlobConfig(n=n))
    params = model.sample_params(np.random.default_rng(seed), n_trajectories)
    state, frames = model.initial_state(params), []
    for _ in range(n_frames):
        frames.append(state[:, 0])
        state = model.step(state, params, 4)
    return np.stack(frames, 1), params, np.arange(n_frames) * 4 * model.dt


_SURROGATES = {
    "ldnet": {"latent": 4, "dyn_depth": 2, "dyn_width": 32, "rec_depth": 3, "rec_width": 64, "fourier_features": 8,
              "activation": "gelu", "frame_every": 1, "dt_hat": 0.2, "batch_size": 2, "lr": 3.0e-3,
              "retrain_lr": 3.0e-4, "epochs": 20, "retrain_epochs": 5},
    "encoder": {"layers": 1, "hidden": 32, "dropout": 0.0, "batch_size": 2, "lr": 1.0e-2, "epochs": 50},
}


class Blob(ModelCase):
    """The tracer-source case: where the blob comes from, from sparse noisy tracer readings."""

    label = "tracer blob from an unknown source"
    model_class = BlobAdvection
    config_class = BlobConfig
    periodic = True
    grid_offset = 0.5
    presets = {
        "tiny": {"model": {"n": 16, "n_frames": 9}, "observe": {"stride": 4, "every": 2},
                 "ld_ensf": {"eps_alpha": 0.5}, **_SURROGATES, "ldnet": {**_SURROGATES["ldnet"], "frame_every": 2}},
        "small": {"observe": {"stride": 4, "every": 1}, "ld_ensf": {"eps_alpha": 0.5}, **_SURROGATES},
    }


def main(argv=None) -> dict:
    """generate -> train -> LD-EnSF and EnSF on the blob case from Python; their time-mean rel-RMSE."""
    import argparse
    from pathlib import Path

    import ldensf_hpc as ld

    parser = argparse.ArgumentParser(description="the tracer-blob case of your own, end to end")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--workdir", type=Path, default=Path("runs") / "blob")
    args = parser.parse_args(argv)
    case = ld.Case.load(f"{__name__ if __name__ != '__main__' else 'blob_model'}:Blob", preset=args.preset)
    data = case.generate(args.workdir / "data")
    models = case.train(data, args.workdir / "models")
    errors = {m: ld.assimilate(case, m, data, models=models).record["summary"]["mean_full_rel_rmse"]
              for m in ("free", "ensf", "ld_ensf")}
    print("time-mean rel-RMSE: " + ", ".join(f"{m} {e:.3f}" for m, e in errors.items()))
    return errors


if __name__ == "__main__":
    main()

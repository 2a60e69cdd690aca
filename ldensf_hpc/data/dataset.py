"""Torch datasets over the HDF5 trajectory store (LD-EnSF paper §4.2).

The store is ``DIR/dataset.h5`` (:mod:`ldensf_hpc.data.store`, opened with its checks)
with ``fields`` float32 ``(N, T, F, ny, nx)``, ``params`` ``(N, p)``, ``x`` ``(nx,)``,
``y`` ``(ny,)`` and the attributes ``field_names`` and ``param_names``.

- Trajectories are split train/val/test (60/20/20) by a permutation fixed by the seed.
- Every ``frame_every``-th stored frame is kept (SWE: one latent step per 40 solver steps).
- Parameters ``u`` and coordinates ``xi = (x, y)`` are scaled to [-1, 1] and fields
  standardised with statistics of the train split (``DIR/normalization.json``, reused
  when present).

The HDF5 file is opened lazily in each process, so worker processes never share a handle.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from .. import geometry
from ..backend import rng_for
from ..errors import DataError
from .store import DATASET, MANIFEST, open_dataset, read_manifest, sha256_file, write_json

NORM_FILE = "normalization.json"
SPLITS = ("train", "val", "test")
_SPLIT_STREAM = 0  # rng_for(seed, _SPLIT_STREAM): the train/val/test permutation


def split_indices(n_trajectories: int, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> dict[str, np.ndarray]:
    """Trajectory indices of the train/val/test splits (a seeded permutation, sorted per split)."""
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or np.any(fractions <= 0) or not np.isclose(fractions.sum(), 1.0):
        raise DataError(f"split fractions must be three positive numbers summing to 1, got {tuple(fractions)}")
    order = rng_for(seed, _SPLIT_STREAM).permutation(n_trajectories)
    ends = np.rint(np.cumsum(fractions) * n_trajectories).astype(int)
    parts = np.split(order, ends[:2])
    if any(len(p) == 0 for p in parts):
        raise DataError(f"{n_trajectories} trajectories cannot be split {tuple(fractions)} with every split non-empty")
    return {name: np.sort(p) for name, p in zip(SPLITS, parts)}


@dataclass(frozen=True)
class Normalization:
    """Input scaling and output standardisation of the surrogates (train-split statistics)."""

    field_mean: tuple[float, ...]
    field_std: tuple[float, ...]
    param_min: tuple[float, ...]
    param_max: tuple[float, ...]
    xi_min: tuple[float, float]  # (x_min, y_min)
    xi_max: tuple[float, float]
    geometry: str = "plane"  # how a point is seen (ldensf_hpc.geometry): the dataset's

    def __post_init__(self):
        for name in self.__dataclass_fields__:  # plain floats: JSON and torch.load(weights_only) safe
            if name != "geometry":
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        geometry.get(self.geometry)

    def to_dict(self) -> dict:
        return {k: v if k == "geometry" else list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        """From :meth:`to_dict`; records from before geometries were named are of the plane."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @property
    def xi_dim(self) -> int:
        """Components of a scaled point (:meth:`scale_xi`)."""
        return geometry.get(self.geometry).dim

    def scale_params(self, u):
        """Physical parameters ``(..., p)`` -> [-1, 1]."""
        return geometry.affine(u, self.param_min, self.param_max, inverse=False)

    def unscale_params(self, u_scaled):
        return geometry.affine(u_scaled, self.param_min, self.param_max, inverse=True)

    def scale_xi(self, points):
        """Physical coordinates ``(..., 2)`` ordered (x, y) -> the geometry's features ``(..., xi_dim)``
        (the plane: [-1, 1]^2; the sphere: unit vectors of (lon, lat) in degrees)."""
        return geometry.get(self.geometry).features(points, self.xi_min, self.xi_max)

    def standardize(self, fields, axis: int = -1):
        """``(fields - mean) / std`` per field; ``axis`` is the field axis."""
        mean, std = _along(self.field_mean, fields, axis), _along(self.field_std, fields, axis)
        return (fields - mean) / std

    def unstandardize(self, fields, axis: int = -1):
        mean, std = _along(self.field_mean, fields, axis), _along(self.field_std, fields, axis)
        return fields * std + mean


def _along(values, like, axis: int):
    """``values`` (F,) shaped to broadcast along ``axis`` of ``like`` (NumPy or torch)."""
    shape = [1] * like.ndim
    shape[axis] = len(values)
    if isinstance(like, torch.Tensor):
        return torch.tensor(values, dtype=like.dtype, device=like.device).reshape(shape)
    return np.asarray(values, dtype=like.dtype).reshape(shape)


class TrajectoryStore:
    """Read access to ``DIR/dataset.h5``: metadata at once, frames on demand.

    The HDF5 handle is opened lazily and re-opened after a fork or unpickling, so a
    store (or a Dataset holding one) can be sent to DataLoader worker processes.
    """

    def __init__(self, data_dir, checksum: bool = True):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DATASET
        self._file = open_dataset(self.data_dir, checksum=checksum)  # checks shards against the manifest
        self._pid = os.getpid()
        manifest = read_manifest(self.data_dir) or {}
        self.case = manifest.get("config", {}).get("case")
        # What this dataset is (its case and the sha256 of its manifest, which holds every shard's):
        # recorded by everything derived from it and compared before such an artefact is reused.
        self.digest = {"case": self.case, "manifest_sha256": sha256_file(self.data_dir / MANIFEST)}
        f = self._file
        for name in ("fields", "params", "time", "x", "y"):
            if name not in f:
                raise DataError(f"{self.path} has no '{name}' dataset (not an ldensf dataset?)")
        if f["fields"].ndim != 5:
            raise DataError(f"{self.path}: 'fields' must be (N, T, F, ny, nx), got shape {f['fields'].shape}")
        self.n_trajectories, self.n_frames, self.n_fields, self.ny, self.nx = f["fields"].shape
        self.params = np.asarray(f["params"][...], dtype=np.float64).reshape(self.n_trajectories, -1)
        self.x = np.asarray(f["x"][...], dtype=np.float64)
        self.y = np.asarray(f["y"][...], dtype=np.float64)
        self.time = np.asarray(f["time"][...], dtype=np.float64)
        if self.x.shape != (self.nx,) or self.y.shape != (self.ny,):
            raise DataError(f"{self.path}: x {self.x.shape} / y {self.y.shape} do not match fields (ny, nx) = "
                            f"{(self.ny, self.nx)}")
        self.field_names = _names(f.attrs.get("field_names"), "field", self.n_fields)
        self.param_names = _names(f.attrs.get("param_names"), "param", self.params.shape[1])
        self.geometry = str(f.attrs.get("geometry", "plane"))  # datasets before geometries were named: planes

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise DataError(f"cannot open {self.path}: {exc}") from None
            self._pid = os.getpid()
        return self._file

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, None
        return state

    def frames(self, trajectory: int, frame_every: int = 1) -> np.ndarray:
        """Kept frames ``(T', F, ny, nx)`` float32 of one trajectory (every ``frame_every``-th)."""
        return np.asarray(self._h5()["fields"][int(trajectory), ::frame_every], dtype=np.float32)

    def kept_frames(self, frame_every: int) -> int:
        if frame_every < 1:
            raise DataError(f"frame_every must be >= 1, got {frame_every}")
        return len(range(0, self.n_frames, frame_every))

    def grid_points(self) -> np.ndarray:
        """Physical coordinates ``(ny * nx, 2)`` of the grid in row-major (y, x) order, columns (x, y)."""
        X, Y = np.meshgrid(self.x, self.y)
        return np.stack([X.ravel(), Y.ravel()], axis=1)


def _names(value, prefix: str, n: int) -> tuple[str, ...]:
    if value is None:
        return tuple(f"{prefix}{i}" for i in range(n))
    if isinstance(value, (str, bytes)):
        text = value.decode() if isinstance(value, bytes) else value
        value = json.loads(text) if text.startswith("[") else text.split(",")
    names = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in value)
    if len(names) != n:
        raise DataError(f"{len(names)} {prefix} names {names} for {n} {prefix}s")
    return names


def compute_normalization(store: TrajectoryStore, train: np.ndarray) -> Normalization:
    """Per-field mean/std over all stored frames of the ``train`` trajectories (float64,
    Chan's pairwise combination), parameter min/max over ``train``, and the grid extent."""
    n, mean, m2 = 0, np.zeros(store.n_fields), np.zeros(store.n_fields)
    for j in train:
        a = store.frames(j).astype(np.float64).swapaxes(0, 1).reshape(store.n_fields, -1)
        n_j, mean_j = a.shape[1], a.mean(axis=1)
        m2_j = ((a - mean_j[:, None]) ** 2).sum(axis=1)
        delta, total = mean_j - mean, n + n_j
        mean = mean + delta * n_j / total
        m2 = m2 + m2_j + delta**2 * n * n_j / total
        n = total
    std = np.sqrt(m2 / n)
    std = np.where(std > 0, std, 1.0)  # a constant field is only shifted
    u = store.params[train]
    return Normalization(
        field_mean=tuple(mean), field_std=tuple(std),
        param_min=tuple(u.min(axis=0)), param_max=tuple(u.max(axis=0)),
        xi_min=(float(store.x.min()), float(store.y.min())), xi_max=(float(store.x.max()), float(store.y.max())),
        geometry=store.geometry,
    )


def load_normalization(store: TrajectoryStore, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> Normalization:
    """Statistics of the train split, read from ``DIR/normalization.json`` when it was made
    for the same dataset (manifest digest) and split; otherwise computed and written there atomically."""
    train = split_indices(store.n_trajectories, fractions, seed)["train"]
    key = {"seed": int(seed), "split": [float(f) for f in fractions], "n_trajectories": int(store.n_trajectories),
           "train": train.tolist(), "data": store.digest}
    path = store.data_dir / NORM_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read {path}: {exc}; delete it to recompute") from None
        if saved.get("key") == key:
            return Normalization.from_dict(saved)
    norm = compute_normalization(store, train)
    record = {"key": key, "field_names": list(store.field_names), "param_names": list(store.param_names),
              **norm.to_dict()}
    write_json(path, record)
    return norm


def standardized_frames(store: TrajectoryStore, trajectories, norm: Normalization, frame_every: int = 1) -> np.ndarray:
    """Kept frames of ``trajectories`` standardised by the train statistics,
    ``(n, T', F, ny, nx)`` float32 (one copy, standardised in place)."""
    frames = np.stack([store.frames(int(j), frame_every) for j in trajectories])
    frames -= np.asarray(norm.field_mean, np.float32)[:, None, None]
    frames /= np.asarray(norm.field_std, np.float32)[:, None, None]
    return frames


def strided_observe(stride: int):
    """Sparse grid observation of every field: ``(T, F, ny, nx) -> (T, F * ceil(ny/s) * ceil(nx/s))``."""
    if stride < 1:
        raise DataError(f"observation stride must be >= 1, got {stride}")

    def observe(fields):
        return fields[..., ::stride, ::stride].reshape(fields.shape[0], -1)

    return observe


def observation_sequences(store: TrajectoryStore, trajectories, frame_every: int, observe) -> np.ndarray:
    """Noiseless observations ``(n, T', m)`` of the kept frames, ``observe(fields (T', F, ny, nx)) -> (T', m)``."""
    out = [np.asarray(observe(store.frames(j, frame_every)), dtype=np.float32) for j in trajectories]
    return np.stack(out)

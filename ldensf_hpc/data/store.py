"""The on-disk dataset: HDF5 shards, a JSON manifest and a virtual ``dataset.h5``.

Layout of an output directory ``DIR``::

    DIR/shards/shard-00000.h5   fields float32 (n, T, F, ny, nx), params float64 (n, p),
                                trajectory int64 (n,); attrs shard, start, stop,
                                config, complete (written last)
    DIR/manifest.json           case, n_trajectories, shard_size, config, frame shape
                                and, per shard, its trajectory range and sha256
    DIR/dataset.h5              virtual dataset ``fields`` (N, T, F, ny, nx) over all
                                shards; ``params`` (N, p), ``time`` (T,), ``x``, ``y``
                                and the attrs listed in :func:`write_dataset`

Every file is written under a temporary name, flushed, fsynced and renamed, so a
name without ``.tmp`` is always a finished file. HDF5 files carry no timestamps
(``track_times=False``), so the same data gives byte-identical files.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import h5py
import numpy as np

from ..errors import DataError

SHARDS = "shards"
MANIFEST = "manifest.json"
DATASET = "dataset.h5"
FORMAT = 1  # manifest format version
LIBVER = ("earliest", "v110")  # fixed HDF5 format bounds: same bytes across runs


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.h5"


def shard_ranges(n_trajectories: int, shard_size: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` trajectory ranges, ``shard_size`` per shard."""
    return [(a, min(a + shard_size, n_trajectories)) for a in range(0, n_trajectories, shard_size)]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _tmp_path(path: Path) -> Path:
    """A writer-unique temporary name beside ``path`` (two writers never clash)."""
    return path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _commit(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it to ``path`` and fsync the directory entry."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def canonical_json(value) -> str:
    """Sorted-key JSON (arrays as lists): equal configs give equal strings."""
    return json.dumps(value, sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))


# ---------------------------------------------------------------- shards


def write_shard(path: Path, shard: int, start: int, fields: np.ndarray, params: np.ndarray, config: dict) -> str:
    """Write one finished shard atomically; return the sha256 of the file."""
    n = len(fields)
    tmp = _tmp_path(path)
    try:
        with h5py.File(tmp, "w", libver=LIBVER) as f:
            # contiguous: a frame (i, t) is one contiguous block; no chunk cache, fixed layout
            f.create_dataset("fields", data=np.asarray(fields, np.float32), track_times=False)
            f.create_dataset("params", data=np.asarray(params, np.float64), track_times=False)
            f.create_dataset("trajectory", data=np.arange(start, start + n, dtype=np.int64), track_times=False)
            f.attrs["shard"] = shard
            f.attrs["start"] = start
            f.attrs["stop"] = start + n
            f.attrs["config"] = canonical_json(config)
            f.flush()
            f.attrs["complete"] = True
        checksum = sha256_file(tmp)
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return checksum


def verify_shard(path: Path, entry: dict, manifest: dict, checksum: bool = True) -> str | None:
    """Check a finished shard against its manifest ``entry``; return its sha256.

    Checks the checksum (when the entry has one), the ``complete`` attr, shapes,
    trajectory indices and the generation config. ``checksum=False`` skips hashing
    (fast structural check; returns None). Raises :class:`DataError` naming the file.
    """
    if not path.is_file():
        raise DataError(f"shard {path} is missing")
    digest = sha256_file(path) if checksum else None
    if digest is not None and entry["sha256"] is not None and digest != entry["sha256"]:
        raise DataError(f"shard {path} is corrupt: its sha256 does not match {MANIFEST}")
    start, stop = entry["start"], entry["stop"]
    n = stop - start
    expected = {"fields": (n, *manifest["frame_shape"]), "params": (n, manifest["n_params"]), "trajectory": (n,)}
    try:
        with h5py.File(path, "r") as f:
            if not f.attrs.get("complete", False):
                raise DataError(f"shard {path} is incomplete")
            for name, shape in expected.items():
                got = f[name].shape if name in f else "missing"
                if got != shape:
                    raise DataError(f"shard {path}: {name} has shape {got}, expected {shape}")
            indices = f["trajectory"][()]
            if f.attrs.get("shard") != entry["shard"] or not np.array_equal(indices, np.arange(start, stop)):
                raise DataError(f"shard {path} holds other trajectories than {start}..{stop - 1}")
            if f.attrs.get("config") != canonical_json(manifest["config"]):
                raise DataError(f"shard {path} was made with a different configuration")
    except OSError as exc:
        raise DataError(f"shard {path} is corrupt or unreadable ({exc})") from None
    return digest


# ---------------------------------------------------------------- manifest


def read_manifest(root: Path) -> dict | None:
    path = root / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"manifest {path} is unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"manifest {path} has an unknown format")
    return manifest


def made_with(root) -> dict | None:
    """The generation config recorded in the manifest of dataset directory ``root`` (None: no dataset there)."""
    manifest = read_manifest(Path(root)) if root is not None and Path(root).is_dir() else None
    return None if manifest is None else manifest["config"]


def write_json(path, record: dict, sort_keys: bool = False) -> None:
    """Write ``record`` to ``path`` (parents created) through a temporary file, fsync and rename:
    a reader sees the old file or the whole new one, never half of it."""
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record, indent=1, sort_keys=sort_keys) + "\n")
        _commit(tmp, path)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_manifest(root: Path, manifest: dict) -> None:
    write_json(root / MANIFEST, manifest, sort_keys=True)


def new_manifest(case: str, config: dict, n_trajectories: int, shard_size: int, frame_shape, n_params: int) -> dict:
    """A manifest with every planned shard and no checksum yet (``sha256`` None)."""
    shards = [{"shard": i, "name": shard_name(i), "start": a, "stop": b, "sha256": None}
              for i, (a, b) in enumerate(shard_ranges(n_trajectories, shard_size))]
    return {"format": FORMAT, "case": case, "config": config, "n_trajectories": n_trajectories,
            "shard_size": shard_size, "frame_shape": list(frame_shape), "n_params": n_params, "shards": shards}


# ---------------------------------------------------------------- dataset.h5


def write_dataset(root: Path, manifest: dict, attrs: dict, time: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """Write ``dataset.h5``: the virtual ``fields`` over all shards, ``params``, coordinates, attrs.

    ``attrs`` holds ``config``, ``case``, ``field_names``, ``param_names``, ``units``,
    ``grid``, ``dt``, ``seed``, ``version``; dicts/lists are stored as JSON and
    ``complete`` = True is added last. Shards must already be verified.
    """
    n, shape = manifest["n_trajectories"], tuple(manifest["frame_shape"])
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)  # h5py's VirtualLayout would stamp the creation time
    dcpl.set_fill_value(np.array([np.nan], np.float32))
    params = np.empty((n, manifest["n_params"]))
    for entry in manifest["shards"]:
        a, b = entry["start"], entry["stop"]
        source = f"{SHARDS}/{entry['name']}"  # relative: resolved beside dataset.h5
        rows = h5py.h5s.create_simple((n, *shape))
        rows.select_hyperslab((a,) + (0,) * len(shape), (b - a, *shape))
        dcpl.set_virtual(rows, source.encode(), b"fields", h5py.h5s.create_simple((b - a, *shape)))
        with h5py.File(root / source, "r") as f:
            params[a:b] = f["params"][()]
    path = root / DATASET
    tmp = _tmp_path(path)
    try:
        with h5py.File(tmp, "w", libver=LIBVER) as f:
            h5py.h5d.create(f.id, b"fields", h5py.h5t.IEEE_F32LE, h5py.h5s.create_simple((n, *shape)), dcpl=dcpl)
            for name, data in (("params", params), ("time", time), ("x", x), ("y", y)):
                f.create_dataset(name, data=np.asarray(data, dtype=np.float64), track_times=False)
            for key, value in attrs.items():
                f.attrs[key] = value if isinstance(value, (str, int, float, np.number)) else canonical_json(value)
            f.flush()
            f.attrs["complete"] = True
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def open_dataset(path: str | Path, checksum: bool = True) -> h5py.File:
    """Open a finished dataset read-only after checking every shard against the manifest.

    ``path`` is the output directory or its ``dataset.h5``; ``checksum=False`` skips
    the sha256 pass over all shard bytes (structure is still checked). Raises
    :class:`DataError` for a missing, incomplete or corrupt dataset, naming the file.
    """
    path = Path(path)
    root = path.parent if path.name == DATASET else path
    if not (root / DATASET).is_file():
        raise DataError(f"no dataset at {root} (run `ldensf generate --out {root}` first)")
    manifest = read_manifest(root)
    if manifest is None:
        raise DataError(f"dataset at {root} has no {MANIFEST}")
    for entry in manifest["shards"]:
        if entry["sha256"] is None:
            raise DataError(f"dataset at {root} is incomplete: {entry['name']} was never finished")
        verify_shard(root / SHARDS / entry["name"], entry, manifest, checksum)
    try:
        f = h5py.File(root / DATASET, "r")
    except OSError as exc:
        raise DataError(f"{root / DATASET} is corrupt or unreadable ({exc})") from None
    if not f.attrs.get("complete", False):
        f.close()
        raise DataError(f"{root / DATASET} is incomplete")
    return f

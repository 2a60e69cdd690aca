"""``ldensf assimilate``: one registered method on a held-out trajectory, on one process or MPI ranks.

Run::

    ldensf assimilate --case swe --preset small --data data/swe --out runs --filter ensf
    mpiexec -n 4 ldensf assimilate --case swe --preset small --data data/swe --out runs --backend mpi
    ldensf assimilate ... --filter ld_ensf --models runs/swe-small/models     # methods with surrogates

The truth is the first test trajectory of the dataset, observed on the ``observe.stride``
grid every ``observe.every`` stored frames with noise ``observe.noise`` times each field's
train-split std (:class:`~ldensf_hpc.experiment.Experiment`). With ``--backend mpi`` the
``ensf.ensemble_size`` members are sharded over the ranks (methods that declare
``member_sharding``); the numbers do not depend on the rank count. Writes
``OUT/assimilate_<method>.json`` on rank 0 and returns its record there (None elsewhere).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cases
from .data.store import write_json
from .errors import ConfigError, DataError
from .experiment import Experiment
from .filters import make_method
from .filters.base import MethodRun
from .parallel.mpi import Sharding, world

BACKENDS = {"serial": lambda: None, "mpi": world}


@dataclass
class Assimilation:
    """One method's run on a held-out trajectory: the scored ``record`` (what
    ``assimilate_<method>.json`` holds), the :class:`~ldensf_hpc.filters.base.MethodRun` and the truth."""

    record: dict
    run: MethodRun
    truth: np.ndarray  # (T, F, ny, nx) physical, at the observation times
    x: np.ndarray
    y: np.ndarray
    field_names: tuple[str, ...]
    param_names: tuple[str, ...]
    units: dict

    def to_xarray(self):
        """An ``xarray.Dataset``: per field the analysis mean, spread (member std) and truth over
        (time, y, x), the members when kept, the parameter estimates; CF-style coordinates and units."""
        import xarray as xr

        r, u = self.record, self.units
        dims = ("time", "y", "x")
        data = {}
        for i, name in enumerate(self.field_names):
            attrs = {"units": u.get(name, "1")}
            data[f"{name}_mean"] = (dims, self.run.mean[:, i], {**attrs, "long_name": f"analysis mean of {name}"})
            if self.run.std is not None:
                data[f"{name}_spread"] = (dims, self.run.std[:, i], {**attrs, "long_name": f"ensemble std of {name}"})
            data[f"{name}_truth"] = (dims, self.truth[:, i], {**attrs, "long_name": f"true {name}"})
            if self.run.members is not None:
                data[f"{name}_members"] = (("time", "member", "y", "x"), self.run.members[:, :, i], attrs)
        if self.run.params is not None:
            data["params"] = (("time", "member", "param"), self.run.params, {"long_name": "parameter estimates"})
            data["params_truth"] = (("param",), np.asarray(r["truth_params"]), {"long_name": "true parameters"})
        data["full_rel_rmse"] = (("time",), np.asarray(r["full_rel_rmse"]),
                                 {"units": "1", "long_name": "relative RMSE of the analysis mean, all fields"})
        coords = {"time": ("time", np.asarray(r["time"]), {"units": u.get("time", "1"), "standard_name": "time"}),
                  "x": ("x", self.x, {"units": u.get("x", "1"), "axis": "X"}),
                  "y": ("y", self.y, {"units": u.get("y", "1"), "axis": "Y"}),
                  "frame": ("time", np.asarray(r["frames"]), {"long_name": "stored frame index"})}
        if self.run.params is not None:
            coords["param"] = ("param", list(self.param_names))
        attrs = {"method": r["method"], "case": r["case"], "preset": r["preset"], "trajectory": r["trajectory"],
                 "noise": r["noise"], "noise_std": r["noise_std"], "members": r["members"],
                 "Conventions": "CF-1.10", "source": "ldensf_hpc"}
        return xr.Dataset(data, coords=coords, attrs=attrs)

    def to_json(self, out) -> Path:
        """The record as ``OUT/assimilate_<method>.json`` (written atomically; what ``ldensf assimilate`` writes)."""
        path = Path(out) / f"assimilate_{self.record['method']}.json"
        write_json(path, self.record)
        return path

    def to_netcdf(self, path) -> Path:
        """The :meth:`to_xarray` dataset as NetCDF-4 (h5netcdf engine), written atomically."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            self.to_xarray().to_netcdf(tmp, engine="h5netcdf")
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path


def assimilate(cfg, data, method: str = "ensf", backend: str = "serial", models=None, observations=None,
               trajectory=None) -> Assimilation | None:
    """Run ``method`` on trajectory ``trajectory`` (default: the first test one) of the dataset in ``data``
    (checkpoints in ``models``), observed synthetically (``cfg.observe``) or by the sensor log
    ``observations`` (:mod:`ldensf_hpc.sensor_log`); the result on rank 0, None elsewhere."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown assimilation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    filt = make_method(method, cfg)
    needed = filt.surrogates(cfg)
    missing = [name for name in needed if models is None or not (Path(models) / f"{name}.pt").is_file()]
    if missing:
        where = "--models DIR" if models is None else f"the checkpoints in {models}"
        raise DataError(f"{filt.label} needs the trained surrogate(s) {', '.join(needed)}; train them first "
                        f"(`ldensf train --model {missing[0]} --out DIR`) and pass {where}")
    comm = BACKENDS[backend]()
    shards = Sharding(cfg.ensf.ensemble_size, comm)
    if shards.size > 1 and not filt.capabilities.member_sharding:
        raise ConfigError(f"{filt.label} does not shard its members over MPI ranks; run it with --backend serial")
    experiment = shards.collective(lambda: Experiment(cfg, data, models, trajectory, sharding=shards,
                                                      fields="moments", sensor_log=observations))
    reason = experiment.unsupported(filt)
    if reason:
        raise ConfigError(f"{filt.label} {reason}; choose another method")
    obs = experiment.observations(cfg.observe.noise)
    seed = cfg.data.seed
    run = shards.collective(filt.assimilate, experiment.problem, obs, seed)
    if shards.rank != 0:
        return None
    scores = experiment.score(run)
    problem = experiment.problem
    record = {
        "case": cfg.case, "preset": cfg.preset, "method": filt.name, "backend": backend, "ranks": shards.size,
        "members": problem.K, "state_dim": filt.state_dim(problem), "observations": int(problem.operators[0].m),
        "trajectory": experiment.trajectory, "truth_params": experiment.u_true.tolist(),
        "noise": float(cfg.observe.noise), "noise_std": "observe.noise x each field's train-split std"
        if observations is None else "the log's std (else observe.noise x each field's train-split std)",
        "sensor_log": None if experiment.log is None else experiment.log.describe(),
        "frames": problem.frames.tolist(), "time": problem.times.tolist(), **scores,
        "summary": {"mean_full_rel_rmse": float(np.mean(scores["full_rel_rmse"][1:])),
                    "last_full_rel_rmse": scores["full_rel_rmse"][-1]},
        **run.timings, "T_init": experiment.T_init, "extra": run.extra, "config": cfg.to_dict(),
    }
    model = problem.model
    return Assimilation(record, run, experiment.truth, np.asarray(problem.x), np.asarray(problem.y),
                        tuple(model.field_names), tuple(model.param_names),
                        cases.get(cfg.case).units(model))


def summary_table(record: dict) -> str:
    """The per-time errors and the timings of an :class:`Assimilation` record written by :meth:`Assimilation.to_json`, as text."""
    lines = [(f"{record['method']} on {record['case']} trajectory {record['trajectory']}: K = {record['members']}, "
              f"d = {record['state_dim']}, m = {record['observations']}, {record['ranks']} rank(s)"),
             f"{'time':>10} {'forecast rel-RMSE':>18} {'analysis rel-RMSE':>18} {'spread/error':>13}"]
    blank = [None] * len(record["time"])
    columns = zip(record["time"], record.get("forecast_full_rel_rmse", blank), record["full_rel_rmse"],
                  record.get("spread_error_ratio", blank))
    for t, *values in columns:
        lines.append(f"{t:10.4g} " + " ".join(f"{'-' if v is None else f'{v:.4f}':>{w}}"
                                             for v, w in zip(values, (18, 18, 13))))
    s = record["summary"]
    lines.append(f"mean analysis rel-RMSE {s['mean_full_rel_rmse']:.4f} (times 1 ...); T_d {record['T_d']:.3f} s, "
                 f"T_f {record['T_f']:.3f} s -> {record['path']}")
    return "\n".join(lines)

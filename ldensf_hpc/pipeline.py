"""``ldensf run``: generate -> train -> compare the methods on a held-out trajectory -> report.

Each stage reuses what an earlier run left in the work directory (a verified
dataset, finished checkpoints), so a rerun only does what is missing; only the
surrogates the requested methods declare are trained. Every method runs on the same
trajectory, prior ensemble and observations at every noise level
(:mod:`ldensf_hpc.experiment`); the report holds per method and level the full-state
rel-RMSE over time (paper Fig. 5-6), spread-error ratio, CRPS, parameter error and
the timings T_d (dynamics), T_f (filter, incl. encoding), T_r (one reconstruction
with R / the decoder), plus the capability table of the methods and the config.
Plots and a Markdown summary are written beside ``report.json``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import __version__, cases, geometry, metrics, plots
from .data.generate import generate
from .data.store import MANIFEST, canonical_json, sha256_file, sha256_text, write_json
from .errors import ConfigError
from .experiment import Experiment, compare, noise_levels
from .filters import METHODS, make_method
from .filters.base import CAPABILITY_DOCS
from .machine import machine
from .surrogate import train

DEFAULT_METHODS = ("free", "ensf", "latent_ensf", "ld_ensf", "letkf", "levda")
DEFAULT_LEVELS = (0.0, 0.05, 0.1, 0.2)


def surrogates_needed(cfg, methods) -> list[str]:
    """The checkpoints the methods declare they need with ``cfg``."""
    return list(dict.fromkeys(name for m in methods for name in make_method(m, cfg).surrogates(cfg)))


def check_methods(methods) -> tuple[str, ...]:
    methods = tuple(dict.fromkeys(methods))
    if not methods:
        raise ConfigError(f"no method given; choose from {', '.join(METHODS)}")
    for name in methods:
        METHODS.check(name)
    return methods


def describe(method: str) -> dict:
    """The capability row of ``method``: what it declares."""
    cls = METHODS[method]
    return {"space": cls.space, "dynamics": cls.dynamics, **asdict(cls.capabilities)}


def assimilate_test_trajectory(cfg, data_dir, model_dir, *, methods=DEFAULT_METHODS, levels=None,
                               trajectory=None, progress: bool = True) -> dict:
    """Compare ``methods`` at every noise level on one held-out trajectory; return the report dictionary."""
    methods = check_methods(methods)
    levels = noise_levels(levels if levels is not None else [cfg.observe.noise])
    experiment = Experiment(cfg, data_dir, model_dir, trajectory)

    def show(name, level, result):
        if progress and "full_rel_rmse" in result:
            print(f"  noise {level:g}: {name:12s} rel-RMSE last {result['full_rel_rmse'][-1]:.4f}  "
                  f"wall {result['wall_s']:.2f} s", flush=True)

    results = {level: compare(experiment, methods, level, progress=show) for level in levels}
    main = cfg.observe.noise if cfg.observe.noise in levels else levels[0]
    problem = experiment.problem
    store, grid = experiment.store, experiment.grid_operator
    rows, cols = np.unique(grid.index % grid.n_points) // store.nx, np.unique(grid.index % grid.n_points) % store.nx
    return {"_truth": experiment.truth, "_coordinates": (store.x, store.y),
            "_sensors": np.stack([store.x[cols], store.y[rows]], axis=1), "case": cfg.case, "preset": cfg.preset, "trajectory": experiment.trajectory,
            "ensemble_size": problem.K, "weighting": geometry.get(experiment.store.geometry).weighting,
            "true_params": dict(zip(experiment.store.param_names, map(float, experiment.u_true))),
            "prior_param_rel_error": metrics.param_error(problem.prior_params, experiment.u_true),
            "times": problem.times.tolist(), "frames": problem.frames.tolist(),
            "observations": {"m": int(experiment.grid_operator.m), "stride": cfg.observe.stride,
                             "sensors": cfg.observe.sensors, "irregular": cfg.observe.irregular,
                             "every_frames": cfg.observe.every, "noise_levels": levels, "main_level": main,
                             "noise_floor": cfg.observe.noise_floor,
                             "noise": "level x each field's train-split std"},
            "capabilities": {m: describe(m) for m in methods},
            "levels": {f"{level:g}": res for level, res in results.items()},
            "methods": results[main]}


def write_plots(report: dict, truth: np.ndarray, out: Path) -> list[str]:
    """Fig. 3-style maps of the case's plotted field (truth with the sensors, each method, errors), Fig. 6-style
    error curves (main level; one panel per level) and the parameter estimates, for the truth ``(T, F, ny, nx)``."""
    shown = cases.get(report["case"]).plotting
    field_index = shown.field
    grid = {"coordinates": report["_coordinates"], "label": shown.label or f"field {field_index}"}
    times = np.asarray(report["times"])
    main = report["methods"]
    ran = {m: r for m, r in main.items() if "full_rel_rmse" in r}
    T = len(times)
    pick = sorted({0, T // 4, T // 2, (3 * T) // 4, T - 1})
    means = {METHODS[m].label: r["_mean_fields"][pick, field_index] for m, r in ran.items()}
    truth = truth[pick, field_index]
    level = report["observations"]["main_level"]
    written = [plots.field_panels({"truth": truth, **means}, times[pick], out / "fields.png",
                                  title=f"{report['case']}: {grid['label']}, noise {level:g}",
                                  sensors=report["_sensors"], **grid),
               plots.field_panels({f"{k} error": v - truth for k, v in means.items()}, times[pick],
                                  out / "fields_error.png", title=f"ensemble mean - truth: {grid['label']}", **grid)]
    written.append(plots.error_curves(times, {METHODS[m].label: r["full_rel_rmse"] for m, r in ran.items()},
                                      out / "rel_rmse.png", ylabel="relative RMSE of the full state"))
    panels = {f"noise {level}": {METHODS[m].label: r["full_rel_rmse"] for m, r in res.items() if "full_rel_rmse" in r}
              for level, res in report["levels"].items()}
    written.append(plots.error_panels(times, panels, out / "rel_rmse_levels.png",
                                      ylabel="relative RMSE of the full state"))
    estimates = {METHODS[m].label: (r["param_mean"], r["param_spread"]) for m, r in ran.items() if "param_mean" in r}
    if estimates:
        truth = np.asarray(list(report["true_params"].values()))
        written.append(plots.parameter_estimates(times, estimates, truth, list(report["true_params"]),
                                                 out / "parameters.png"))
    return [str(p) for p in written]


def public(tree):
    """``tree`` without the keys starting with ``_`` (arrays kept for plots only)."""
    if isinstance(tree, dict):
        return {k: public(v) for k, v in tree.items() if not str(k).startswith("_")}
    return tree


def _cell(value) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return str(value)


def capability_table(report: dict) -> str:
    """Markdown capability table generated from the methods' declared ``capabilities``."""
    keys = ["space", "dynamics", *CAPABILITY_DOCS]
    lines = ["| method | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for method, caps in report["capabilities"].items():
        lines.append(f"| {METHODS[method].label} | " + " | ".join(_cell(caps[k]) for k in keys) + " |")
    return "\n".join(lines)


def summary_table(report: dict) -> str:
    """Markdown: per noise level and method, errors, calibration and timings."""
    lines = [("| noise | method | rel-RMSE last | rel-RMSE mean | spread/error | CRPS | param err last | "
              "T_d [s] | T_f [s] | T_r [s] | wall [s] | state dim |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for level, results in report["levels"].items():
        for name, r in results.items():
            if "skipped" in r:
                lines.append(f"| {level} | {METHODS[name].label} | skipped: {r['skipped']} |" + " |" * 9)
                continue
            err = np.asarray(r["full_rel_rmse"])
            pe = f"{r['param_rel_error'][-1]:.4f}" if "param_rel_error" in r else "-"
            times = " | ".join(f"{r[k]:.4g}" if k in r else "-" for k in ("T_d", "T_f", "T_r", "wall_s"))
            crps = f"{np.mean(r['crps']):.4g}" if "crps" in r else "-"
            lines.append(f"| {level} | {METHODS[name].label} | {err[-1]:.4f} | {err.mean():.4f} | "
                         f"{np.mean(r['spread_error_ratio']):.3g} | {crps} | {pe} | {times} | "
                         f"{r['state_dim']} |")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    obs = report["observations"]
    return "\n\n".join([
        f"# ldensf run: {report['case']}, preset {report['preset']}",
        (f"Test trajectory {report['trajectory']}, K = {report['ensemble_size']}, {obs['m']} observations per time "
        f"({obs['sensors']} sensors, {'irregular' if obs['irregular'] else 'regular'} times), noise levels "
        f"{', '.join(f'{v:g}' for v in obs['noise_levels'])} of each field's std (filters assume at least "
        f"{obs['noise_floor']:g}). Means over time of the spread-error ratio and CRPS (standardised fields)."),
        summary_table(report), report["legend"], "## Capabilities", capability_table(report)]) + "\n"


LEGEND = ("rel-RMSE: ||ensemble mean - truth|| / ||truth|| of the full physical state (paper Fig. 5-6), at the "
          "last observation time and averaged over all of them; spread/error: ensemble spread over the error of its "
          "mean, about 1 when calibrated; CRPS: on standardised fields, lower is better; param err: ||parameter "
          "mean - true|| / ||true|| at the last time; T_d dynamics, T_f analyses (encoding included), T_r one "
          "reconstruction of the full fields, wall: the method's whole run [s]; state dim: the analysed state's size.")


def inputs_fingerprint(cfg, methods, levels, data_dir: Path, model_dir: Path, surrogates) -> dict:
    """What a report is derived from: the config, methods, levels, the dataset's manifest and the checkpoints."""
    return {"version": __version__, "config": cfg.to_dict(), "methods": list(methods), "levels": list(levels),
            "data_manifest_sha256": sha256_file(data_dir / MANIFEST),
            "surrogates_sha256": {name: sha256_file(model_dir / f"{name}.pt") for name in surrogates}}


def _previous_report(work: Path, inputs: dict) -> dict | None:
    """The report in ``work`` if it was made from ``inputs``; an older one is moved to ``previous/<digest>/``."""
    path = work / "report.json"
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        old = {}
    digest = old.get("inputs_sha256")
    if digest == sha256_text(canonical_json(inputs)):
        return old
    keep = work / "previous" / (digest or "unknown")[:12]
    keep.mkdir(parents=True, exist_ok=True)
    for name in ["report.json", "report.md", *(Path(p).name for p in old.get("plots", []))]:
        if (work / name).is_file():
            os.replace(work / name, keep / name)
    return None


def run(cfg, workdir=None, *, methods=DEFAULT_METHODS, levels=None, generate_backend: str = "dask",
        progress: bool = True, command: str | None = None, data=None) -> dict:
    """The whole pipeline; returns the report (also written to ``WORKDIR/report.json`` and ``report.md``).

    ``data``: an existing dataset directory (``ldensf import``, or generated elsewhere) used instead
    of generating ``WORKDIR/data``.

    A rerun with the same inputs (:func:`inputs_fingerprint`) reuses the report and says so
    (``report["reused"]``); a run with other inputs moves the older report and its plots to
    ``WORKDIR/previous/<its inputs digest>/`` first. The report names ``command`` (the
    ``ldensf`` command line; the Python call by default), the machine and every stage's wall time.
    """
    methods = check_methods(methods)
    levels = noise_levels(levels if levels is not None else [cfg.observe.noise])
    work = Path(workdir or Path("runs") / f"{cfg.case}-{cfg.preset}")
    data_dir, model_dir = (work / "data" if data is None else Path(data)), work / "models"
    stages = {}
    t0 = time.perf_counter()
    if data is None:
        generate(cfg, data_dir, backend=generate_backend, progress=progress)
    stages["generate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    needed = surrogates_needed(cfg, methods)
    summaries = train(cfg, data_dir, model_dir, needed, progress=progress)
    stages["train"] = time.perf_counter() - t0
    inputs = inputs_fingerprint(cfg, methods, levels, data_dir, model_dir, summaries)
    old = _previous_report(work, inputs)
    if old is not None:
        return {**old, "reused": True, "path": str(work / "report.json")}
    t0 = time.perf_counter()
    report = assimilate_test_trajectory(cfg, data_dir, model_dir, methods=methods, levels=levels,
                                        progress=progress)
    stages["assimilate"] = time.perf_counter() - t0
    report["stages_wall_s"] = stages
    report["surrogates"] = {name: {k: v for k, v in s.items() if "rel_error" in k or k in ("train_wall_s", "precision")}
                            for name, s in summaries.items()}
    report["plots"] = write_plots(report, report.pop("_truth"), work)
    report["config"] = cfg.to_dict()
    report["command"] = command or f"ldensf_hpc.pipeline.run(methods={list(methods)}, levels={levels})"
    report["machine"] = machine()
    report["inputs"], report["inputs_sha256"] = inputs, sha256_text(canonical_json(inputs))
    report["legend"] = f"{LEGEND} Grid points: {report['weighting']}."
    (work / "report.md").write_text(markdown(report))
    write_json(work / "report.json", public(report))  # last: a report.json is a finished run
    report["path"] = str(work / "report.json")
    return report

"""``ldensf run``: generate -> train -> compare the methods on a held-out trajectory -> report.

Each stage reuses what an earlier run left in the work directory (a verified
dataset, finished checkpoints), so a rerun only does what is missing; only the
surrogates the requested methods need are trained. Every method runs on the same
trajectory, prior ensemble and observations at every noise level
(:mod:`ldensf_hpc.compare`); the report holds per method and level the full-state
rel-RMSE over time (paper Fig. 5-6), spread-error ratio, CRPS, parameter error and
the timings T_d (dynamics), T_f (filter, incl. encoding), T_r (one reconstruction
with R / the decoder), plus the capability table of the methods and the config.
Plots and a Markdown summary are written beside ``report.json``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import plots
from .compare import LABELS, RUNNERS, TestCase, capabilities, compare, ld_encoder_name, report_levels
from .config import ConfigError
from .data.generate import generate
from .data.store import write_json
from .filters.base import CAPABILITIES
from .surrogate.train import train

DEFAULT_METHODS = ("free", "ensf", "latent_ensf", "ld_ensf", "letkf", "levda")
DEFAULT_LEVELS = (0.0, 0.05, 0.1, 0.2)


def surrogates_needed(cfg, methods) -> list[str]:
    """Checkpoints the methods need, in training order (the LDNet always: it holds the normalisation)."""
    needed = ["ldnet"]
    if "ld_ensf" in methods:
        needed.append("encoder" if ld_encoder_name(cfg) == "lstm" else "set_encoder")
    if "latent_ensf" in methods:
        needed.append("vae")
    return needed


def check_methods(methods) -> tuple[str, ...]:
    methods = tuple(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in RUNNERS]
    if unknown or not methods:
        raise ConfigError(f"unknown or no method(s) {unknown}; choose from {', '.join(RUNNERS)}")
    return methods


def assimilate_test_trajectory(cfg, data_dir, model_dir, *, methods=DEFAULT_METHODS, levels=None,
                               trajectory=None, progress: bool = True) -> dict:
    """Compare ``methods`` at every noise level on one held-out trajectory; return the report dictionary."""
    methods = check_methods(methods)
    levels = report_levels(levels if levels is not None else [cfg.observe.noise])
    case = TestCase(cfg, data_dir, model_dir, trajectory)

    def show(name, level, result):
        if progress and "full_rel_rmse" in result:
            print(f"  noise {level:g}: {name:12s} rel-RMSE last {result['full_rel_rmse'][-1]:.4f}  "
                  f"wall {result['wall_s']:.2f} s", flush=True)

    results = {level: compare(case, methods, level, progress=show) for level in levels}
    main = cfg.observe.noise if cfg.observe.noise in levels else levels[0]
    return {"_truth": case.truth, "case": cfg.case, "preset": cfg.preset, "trajectory": case.trajectory,
            "ensemble_size": case.K,
            "true_params": dict(zip(case.store.param_names, map(float, case.u_true))),
            "times": case.times.tolist(), "latent_times": case.latent_times.tolist(),
            "observations": {"m": int(case.grid_operator.m), "stride": cfg.observe.stride,
                             "sensors": cfg.observe.sensors, "irregular": cfg.observe.irregular,
                             "every_frames": case.fe, "noise_levels": levels, "main_level": main,
                             "noise_floor": cfg.observe.noise_floor},
            "capabilities": {m: capabilities(m) for m in methods},
            "levels": {f"{level:g}": res for level, res in results.items()},
            "methods": results[main]}


def write_plots(report: dict, truth: np.ndarray, out: Path, field_index: int = 0) -> list[str]:
    """Fig. 3-style fields and errors, Fig. 6-style error curves (main level; one panel per level) and the
    parameter estimates, for the truth ``(T, F, ny, nx)``."""
    times = np.asarray(report["times"])
    main = report["methods"]
    ran = {m: r for m, r in main.items() if "full_rel_rmse" in r}
    T = len(times)
    pick = sorted({0, T // 4, T // 2, (3 * T) // 4, T - 1})
    means = {LABELS[m]: r["_mean_fields"][pick, field_index] for m, r in ran.items()}
    truth = truth[pick, field_index]
    level = report["observations"]["main_level"]
    written = [plots.field_panels({"truth": truth, **means}, times[pick], out / "fields.png",
                                  title=f"{report['case']}: field {field_index}, noise {level:g}"),
               plots.field_panels({f"{k} error": v - truth for k, v in means.items()}, times[pick],
                                  out / "fields_error.png", title="ensemble mean - truth")]
    written.append(plots.error_curves(times, {LABELS[m]: r["full_rel_rmse"] for m, r in ran.items()},
                                      out / "rel_rmse.png", ylabel="relative RMSE of the full state"))
    panels = {f"noise {level}": {LABELS[m]: r["full_rel_rmse"] for m, r in res.items() if "full_rel_rmse" in r}
              for level, res in report["levels"].items()}
    written.append(plots.error_panels(times, panels, out / "rel_rmse_levels.png",
                                      ylabel="relative RMSE of the full state"))
    estimates = {LABELS[m]: (r["param_mean"], r["param_spread"]) for m, r in ran.items()
                 if "param_mean" in r and m != "free"}
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
    keys = list(CAPABILITIES)
    lines = ["| method | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for method, caps in report["capabilities"].items():
        lines.append(f"| {LABELS[method]} | " + " | ".join(_cell(caps[k]) for k in keys) + " |")
    return "\n".join(lines)


def summary_table(report: dict) -> str:
    """Markdown: per noise level and method, errors, calibration and timings."""
    lines = [("| noise | method | rel-RMSE last | rel-RMSE mean | spread/error | CRPS | param err last | "
              "T_d [s] | T_f [s] | T_r [s] | wall [s] | state dim |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for level, results in report["levels"].items():
        for name, r in results.items():
            if "skipped" in r:
                lines.append(f"| {level} | {LABELS[name]} | skipped: {r['skipped']} |" + " |" * 9)
                continue
            err = np.asarray(r["full_rel_rmse"])
            pe = f"{r['param_rel_error'][-1]:.4f}" if "param_rel_error" in r and name != "free" else "-"
            times = " | ".join(f"{r[k]:.4g}" if k in r else "-" for k in ("T_d", "T_f", "T_r", "wall_s"))
            lines.append(f"| {level} | {LABELS[name]} | {err[-1]:.4f} | {err.mean():.4f} | "
                         f"{np.mean(r['spread_error_ratio']):.3g} | {np.mean(r['crps']):.4g} | {pe} | {times} | "
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
        summary_table(report), "## Capabilities", capability_table(report)]) + "\n"


def run(cfg, workdir=None, *, methods=DEFAULT_METHODS, levels=None, generate_backend: str = "dask",
        progress: bool = True) -> dict:
    """The whole pipeline; returns the report (also written to ``WORKDIR/report.json`` and ``report.md``)."""
    methods = check_methods(methods)
    levels = report_levels(levels if levels is not None else [cfg.observe.noise])
    work = Path(workdir or Path("runs") / f"{cfg.case}-{cfg.preset}")
    data_dir, model_dir = work / "data", work / "models"
    stages = {}
    t0 = time.perf_counter()
    generate(cfg, data_dir, backend=generate_backend, progress=progress)
    stages["generate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    summaries = {}
    for name in surrogates_needed(cfg, methods):
        summaries.update(train(cfg, data_dir, model_dir, model=name, progress=progress))
    stages["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = assimilate_test_trajectory(cfg, data_dir, model_dir, methods=methods, levels=levels,
                                        progress=progress)
    stages["assimilate"] = time.perf_counter() - t0
    report["stages_wall_s"] = stages
    report["surrogates"] = {name: {k: v for k, v in s.items() if "rel_error" in k} for name, s in summaries.items()}
    report["plots"] = write_plots(report, report.pop("_truth"), work)
    report["config"] = cfg.to_dict()
    write_json(work / "report.json", public(report))
    (work / "report.md").write_text(markdown(report))
    report["path"] = str(work / "report.json")
    return report

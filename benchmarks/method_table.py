"""The README's method-comparison table, from the committed reports of fresh ``ldensf run`` jobs.

Reads ``results/run_<case>_small.json`` (a copy of ``WORKDIR/report.json``) for every case
present and prints, per case and noise level, each method's time-mean full-state rel-RMSE,
then the paper's ranking check (LD-EnSF < Latent-EnSF < EnSF at the main level), LD-EnSF's
parameter-error drop over the trajectory, and each report's command, machine and stage times.

    python benchmarks/method_table.py            # paste its Markdown into README.md
"""
from __future__ import annotations

import json

import numpy as np
from common import RESULTS, markdown_table
from comparison import ranking


def time_mean(result: dict) -> float | None:
    return float(np.mean(result["full_rel_rmse"])) if "full_rel_rmse" in result else None


def main() -> str:
    reports, stale = {}, []
    for path in sorted(RESULTS.glob("run_*_small.json")):
        report = json.loads(path.read_text())
        if "levels" in report and "machine" in report:
            reports[path.stem.removeprefix("run_").removesuffix("_small")] = report
        else:  # written before reports named their levels, command and machine
            stale.append(f"- {path.name}: an older report format; rerun `ldensf run --case ...` "
                         "and copy its report.json")
    methods = list(dict.fromkeys(m for r in reports.values() for m in r["methods"]))
    labels = {"free": "free", "ensf": "EnSF", "latent_ensf": "Latent-EnSF", "ld_ensf": "LD-EnSF", "letkf": "LETKF",
              "levda": "LEVDA", "envar4d": "4DEnVar"}
    rows, notes = [], []
    for case, report in reports.items():
        for level, results in report["levels"].items():
            means = [time_mean(results.get(m, {})) for m in methods]
            rows.append([f"{case} {float(level) * 100:g} %", *("-" if v is None else f"{v:.3f}" for v in means)])
        main_level = report["methods"]
        holds = ranking(main_level)["paper_order_holds"]
        p = main_level.get("ld_ensf", {}).get("param_rel_error")
        drop = f"{p[0] / p[-1]:.1f}x ({p[0]:.3f} -> {p[-1]:.3f})" if p else "-"
        fits = ", ".join(f"{name} {s['train_wall_s']:.0f} s" for name, s in report.get("surrogates", {}).items()
                         if "train_wall_s" in s)
        stages = ", ".join(f"{k} {v:.0f} s" + (f" ({fits})" if k == "train" and fits else "")
                           for k, v in report["stages_wall_s"].items())
        notes.append(f"- {case}: paper order LD-EnSF < Latent-EnSF < EnSF at "
                     f"{report['observations']['main_level'] * 100:g} % noise: "
                     f"{'holds' if holds else 'does NOT hold'}; "
                     f"LD-EnSF parameter error first -> last analysis {drop}; `{report['command']}` on "
                     f"{report['machine']['cpu']} ({report['machine']['cores']} cores): {stages} "
                     f"(total {sum(report['stages_wall_s'].values()):.0f} s)")
    text = markdown_table(["noise", *(labels.get(m, m) for m in methods)], rows) + "\n\n" + "\n".join(notes + stale)
    print(text)
    return text


if __name__ == "__main__":
    main()

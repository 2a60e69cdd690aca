"""The method comparison (LD-EnSF paper Fig. 6; LEVDA paper §4): every method, every noise level.

Runs ``ldensf run`` (generate, train what is missing, compare) for a case and preset,
then LEVDA alone over ensemble sizes (its stability in K), and writes
``results/comparison_<case>_<preset>.json`` (the run report, the ranking of the
full-state error at the main noise level, the K sweep) with the report's Markdown
and plots beside it.

    python benchmarks/comparison.py --case swe --preset small --set observe.stride=7   # 10 x 10 sensors
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from common import RESULTS, describe, machine, markdown_table, write_json

from ldensf_hpc.cases import load_config
from ldensf_hpc.filters import METHODS
from ldensf_hpc.pipeline import DEFAULT_LEVELS, DEFAULT_METHODS, assimilate_test_trajectory, public, run

RANKED = ("ld_ensf", "latent_ensf", "ensf")  # the paper's claim: LD-EnSF < Latent-EnSF < EnSF


def ranking(results: dict) -> dict:
    """Methods ordered by their time-mean full-state rel-RMSE, and whether the paper's order holds."""
    mean = {m: float(np.mean(r["full_rel_rmse"])) for m, r in results.items() if "full_rel_rmse" in r}
    order = sorted(mean, key=mean.get)
    present = [m for m in order if m in RANKED]
    return {"mean_full_rel_rmse": mean, "order": order,
            "paper_order_holds": present == [m for m in RANKED if m in mean] if len(present) > 1 else None}


def levda_k_sweep(cfg, work: Path, sizes, level: float) -> list[dict]:
    """LEVDA's time-mean analysis and background errors for each ensemble size."""
    rows = []
    for K in sizes:
        cfg.ensf.ensemble_size = K
        report = assimilate_test_trajectory(cfg, work / "data", work / "models", methods=("levda",), levels=[level],
                                            progress=False)
        r = report["methods"]["levda"]
        rows.append({"K": K, "analysis_rel_rmse": float(np.mean(r["full_rel_rmse"])),
                     "background_rel_rmse": float(np.mean(r["background_full_rel_rmse"])),
                     "last_rel_rmse": r["full_rel_rmse"][-1], "finite": bool(np.all(np.isfinite(r["full_rel_rmse"]))),
                     "wall_s": r["wall_s"]})
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="swe", choices=("swe", "kolmogorov"))
    parser.add_argument("--preset", default="small")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--noise", default=",".join(map(str, DEFAULT_LEVELS)))
    parser.add_argument("--sizes", default="5,10,20,40", help="ensemble sizes of the LEVDA sweep")
    parser.add_argument("--workdir", default=None, help="default: runs/comparison-CASE-PRESET")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    cfg = load_config(args.preset, case=args.case, overrides=args.overrides)
    work = Path(args.workdir or f"runs/comparison-{args.case}-{args.preset}")
    levels = [float(v) for v in args.noise.split(",")]
    report = run(cfg, work, methods=args.methods.split(","), levels=levels, generate_backend="serial",
                 progress=not args.quiet)
    main_results = report["methods"]
    rank = ranking(main_results)
    sweep = levda_k_sweep(cfg, work, [int(k) for k in args.sizes.split(",")], report["observations"]["main_level"])

    out = Path(args.out)
    name = f"comparison_{args.case}_{args.preset}"
    record = {"machine": machine(), "case": args.case, "preset": args.preset, "overrides": args.overrides,
              "ranking_at_main_level": rank, "levda_k_sweep": sweep,
              "report": public({k: v for k, v in report.items() if k not in ("path", "plots")})}
    write_json(out / f"{name}.json", record)
    shutil.copy(work / "report.md", out / f"{name}.md")
    for png in report["plots"]:
        shutil.copy(png, out / f"{name}_{Path(png).name}")

    print(f"\n{describe(record['machine'])}\n")
    print((work / "report.md").read_text())
    order = " < ".join(f"{METHODS[m].label} {rank['mean_full_rel_rmse'][m]:.3f}" for m in rank["order"])
    print(f"time-mean full-state rel-RMSE at noise {report['observations']['main_level']:g}: {order}")
    print(f"paper order LD-EnSF < Latent-EnSF < EnSF holds: {rank['paper_order_holds']}\n")
    print(markdown_table(["K", "LEVDA analysis rel-RMSE", "background", "last", "finite", "wall [s]"],
                         [[r["K"], r["analysis_rel_rmse"], r["background_rel_rmse"], r["last_rel_rmse"], r["finite"],
                           r["wall_s"]] for r in sweep]))
    return record


if __name__ == "__main__":
    main()

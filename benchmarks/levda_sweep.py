"""LEVDA's sensitivity to its minimiser: model-error weight, tempering stages and iterations.

LEVDA (LEVDA paper, Eq. 10-12) minimises a 4D-Var cost in the LDNet latent space; with a
surrogate that is not exact the minimum it finds depends on how far the background is trusted
(``levda.model_error``) and how the minimisation is staged (``tempering`` x ``max_iter``).
Over a finished ``ldensf run`` (its dataset and checkpoints, reused, not retrained), this
reruns LEVDA alone for every setting at the four noise levels and tabulates the time-mean
full-state rel-RMSE; the preset's choice is the setting whose error grows with the noise.

    python benchmarks/levda_sweep.py --from runs/swe-small    # writes results/levda_sweep_swe_small.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import RESULTS, describe, machine, markdown_table, write_json
from method_table import time_mean

import ldensf_hpc as ld
from ldensf_hpc.errors import ConfigError

SETTINGS = "0.03:3:20,0.03:1:50,0.05:3:20,0.02:3:20,0.03:4:20"
"""``model_error:tempering:max_iter`` triples."""


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, help="the work directory of a finished run")
    parser.add_argument("--case", default="swe")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--settings", default=SETTINGS, help="model_error:tempering:max_iter,... (default: "
                        "%(default)s)")
    parser.add_argument("--noise", default="0,0.05,0.1,0.2")
    parser.add_argument("--out", default=None, help="JSON path (default: results/levda_sweep_CASE_PRESET.json)")
    args = parser.parse_args(argv)
    source = Path(args.source)
    if not (source / "data").is_dir() or not (source / "models").is_dir():
        parser.error(f"--from {source}: no data/ and models/ there; run `ldensf run --workdir {source}` first")
    try:
        levels = [float(v) for v in args.noise.split(",")]
        settings = [(float(e), int(t), int(i)) for e, t, i in (s.split(":") for s in args.settings.split(","))]
    except ValueError:
        parser.error(f"--noise {args.noise} --settings {args.settings}: give levels as 0,0.1 and settings as "
                     "model_error:tempering:max_iter triples, e.g. 0.02:3:20,0.03:1:50")
    overrides = [[f"levda.model_error={e}", f"levda.tempering={t}", f"levda.max_iter={i}"] for e, t, i in settings]
    try:  # every setting's config before any work
        cases = [ld.Case.load(args.case, args.preset, overrides=o) for o in overrides]
    except ConfigError as exc:
        parser.error(str(exc))
    work = source.parent / f"{source.name}-levda-sweep"
    work.mkdir(exist_ok=True)
    if not (work / "models").exists():
        (work / "models").symlink_to((source / "models").resolve())
    info = machine()
    print(f"Machine: {describe(info)}", flush=True)
    rows, results = [], []
    for (model_error, tempering, max_iter), case, sets in zip(settings, cases, overrides):
        report = case.run(work, methods=["levda"], levels=levels, data=source / "data",
                          command=f"ldensf run --case {args.case} --methods levda --set " + " --set ".join(sets))
        errors = {level: time_mean(r["levda"]) for level, r in report["levels"].items()}
        results.append({"model_error": model_error, "tempering": tempering, "max_iter": max_iter,
                        "time_mean_full_rel_rmse": errors,
                        "wall_s": {level: r["levda"]["wall_s"] for level, r in report["levels"].items()}})
        rows.append([model_error, tempering, max_iter, *(f"{v:.3f}" for v in errors.values())])
        print(f"  {model_error}:{tempering}:{max_iter}: " + " / ".join(f"{v:.3f}" for v in errors.values()), flush=True)
    table = markdown_table(["model_error", "tempering", "max_iter", *(f"{lv * 100:g} %" for lv in levels)], rows)
    print(f"LEVDA time-mean full-state rel-RMSE, {args.case} {args.preset}, models of {source}\n{table}")
    record = {"command": " ".join(["python", "benchmarks/levda_sweep.py", *(argv or sys.argv[1:])]),
              "machine": info, "case": args.case, "preset": args.preset, "levels": levels,
              "surrogates": report["surrogates"], "results": results, "table": table}
    write_json(args.out or RESULTS / f"levda_sweep_{args.case}_{args.preset}.json", record)
    return record


if __name__ == "__main__":
    main()

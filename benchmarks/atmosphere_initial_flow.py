"""Which shared initial flow makes the atmosphere case learnable: sensitivity of trajectories to the forcing.

Every trajectory of the case starts from one balanced zonal flow and differs only by the forcing
parameters (hf0, sigma), so a surrogate can learn the flow only if it depends smoothly on them. For
each initial flow, members with hf0 and sigma changed by 1 % ("near") and with other draws ("far")
are run beside a reference member on the small preset's grid, through its burn-in and kept frames;
the table gives the relative difference of each field from the reference at the end of each quarter
of the kept horizon (area-weighted L2). Near differences that grow to the size of far ones mean chaos
(a rough function of the parameters, which an LDNet trained on 60 trajectories cannot represent).

    python benchmarks/atmosphere_initial_flow.py
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from common import RESULTS, describe, machine, markdown_table, write_json

from ldensf_hpc import cases
from ldensf_hpc.cases import load_config

FLOWS = {"galewsky (80 m/s jet, 120 m bump)": ["atmosphere.initial_flow=galewsky", "atmosphere.jet_speed=80",
                                               "atmosphere.perturbation=120"],
         "galewsky, unperturbed": ["atmosphere.initial_flow=galewsky", "atmosphere.jet_speed=80",
                                   "atmosphere.perturbation=0"],
         "solid body 20 m/s (the presets')": []}
MEMBERS = {"near hf0": (15.15, 2.5), "near sigma": (15.0, 2.525), "far 1": (5.0, 1.5), "far 2": (25.0, 3.5)}
REFERENCE = (15.0, 2.5)


def sensitivity(overrides) -> list[dict]:
    cfg = load_config("small", case="atmosphere", overrides=overrides)
    model = cases.get("atmosphere").model(cfg)
    schedule = cases.get("atmosphere").schedule(cfg.model)
    params = np.array([REFERENCE, *MEMBERS.values()])
    state = model.step(model.initial_state(params), params, schedule.warmup_steps)
    quarter = (schedule.n_frames - 1) // 4 * schedule.steps_per_frame
    rows = []
    for q in range(1, 5):
        state = model.step(state, params, quarter)
        fields = model.to_fields(state)
        ref = fields[0]
        squared = (((fields[1:] - ref) ** 2) * model.area).sum(axis=(2, 3))
        diff = np.sqrt(squared / ((ref**2) * model.area).sum(axis=(1, 2)))
        rows.append({"hours_after_burn_in": q * quarter * model.dt / 3600,
                     **{name: dict(zip(model.field_names, d.tolist())) for name, d in zip(MEMBERS, diff)}})
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(RESULTS / "atmosphere_initial_flow.json"))
    args = ap.parse_args(argv)
    command = "python benchmarks/atmosphere_initial_flow.py " + " ".join(argv or sys.argv[1:])
    result = {"machine": machine(), "command": command,
              "reference_params": REFERENCE, "members": MEMBERS, "flows": {}}
    print(f"Relative difference (h / u / v) from the member hf0 = {REFERENCE[0]}, sigma = {REFERENCE[1]} — "
          f"{describe(result['machine'])}\n")
    cells = []
    for flow, overrides in FLOWS.items():
        rows = result["flows"][flow] = sensitivity(overrides)
        for r in rows:
            cells.append([flow, f"{r['hours_after_burn_in']:.0f}",
                          *(" / ".join(f"{v:.3f}" for v in r[name].values()) for name in MEMBERS)])
    print(markdown_table(["initial flow", "hours after burn-in", *MEMBERS], cells))
    print(f"wrote {write_json(args.out, result)}")
    return result


if __name__ == "__main__":
    main()

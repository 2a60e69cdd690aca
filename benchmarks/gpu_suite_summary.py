"""The summary table of ``benchmarks/gpu_suite.sh``: every part's status and its figures beside the targets.

Reads ``parts.tsv``, ``gpu_suite.log`` and the parts' JSON in the suite's output folder, prints
one Markdown table and writes ``gpu_suite.json`` there (machine, parts, figures, targets)::

    python benchmarks/gpu_suite_summary.py runs/gpu-suite
"""
from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

from common import machine, markdown_table, write_json

TARGETS = {
    "kernel_K100_ms": 0.1, "kernel_K100000_s": 1.0,  # CUDA kernel per analysis, float32
    "swe_K100_2000_steps_s": 0.1,  # SWE at 150^2
    "kolmogorov_over_jax_cfd": 1.0,  # member-steps/s on the same GPU
}
PAPER_T_R_MS = {"swe": 0.94, "kolmogorov": 5.4}  # RTX A6000


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def pytest_line(log: str) -> str:
    """The last pytest summary line of the tests part ("N passed, M skipped in T s")."""
    section = log.split("=== tests", 1)[-1].split("=== kernel", 1)[0]
    lines = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|deselected|error).*?)\s*=*$", section, re.M)
    return lines[-1] if lines else "no pytest summary"


def figures(out: Path) -> dict[str, list[str]]:
    """part -> figures (strings, each naming what it measured and the target where there is one)."""
    found: dict[str, list[str]] = {}
    kernel = load(out / "kernel_gpu.json") or {}
    for r in kernel.get("rows", []):
        if r["device"] != "cpu" and r["K"] in (100, 100_000):
            key = f"kernel_K{r['K']}_{'ms' if r['K'] == 100 else 's'}"
            value = r["analysis_s_best"] * (1e3 if r["K"] == 100 else 1.0)
            found.setdefault("kernel", []).append(
                f"{r['backend']} {r['noise']} K={r['K']}: {value:.3g} {key.rsplit('_', 1)[1]}"
                + (f" (target <= {TARGETS[key]:g})" if r["backend"] == "cuda" else ""))
    for s in kernel.get("skipped", []):
        found.setdefault("kernel", []).append(f"skipped {s['backend']} K={s['K']}: {s['reason']}")
    solvers = load(out / "solvers_gpu.json") or {}
    for r in solvers.get("rows", []):
        what = "K=100 x 2000 steps" if r["case"] == "swe" else "K=100 x 300 frames"
        target = f" (target <= {TARGETS['swe_K100_2000_steps_s']:g} s)" if r["case"] == "swe" else ""
        found.setdefault("solvers", []).append(f"{r['case']} {r['backend']} {what}: {r['full_K100_seconds']:.3g} s"
                                               + (" extrapolated" if r["extrapolated"] else "") + target)
    if solvers.get("skipped"):
        found.setdefault("solvers", []).append(f"skipped: {solvers['skipped']}")
    peers = load(out / "peers_gpu.json") or {}
    for K, rows in (peers.get("kolmogorov") or {}).get("rows", {}).items():
        ours = next(r for r in rows if r["code"] == "ours")
        peer = next(r for r in rows if r["code"] == "jax-cfd")
        ratio = ours["member_steps_per_s"] / peer["member_steps_per_s"]
        found.setdefault("peers", []).append(
            f"Kolmogorov K={K}: ours {ours['member_steps_per_s']:.3g} vs jax-cfd {peer['member_steps_per_s']:.3g} "
            f"member-steps/s = {ratio:.2f}x (target >= {TARGETS['kolmogorov_over_jax_cfd']:g}x)")
    if peers.get("skipped"):
        found.setdefault("peers", []).append(f"skipped: {peers['skipped']}")
    training = load(out / "training_cost_gpu.json") or {}
    if training.get("skipped"):
        found.setdefault("training", []).append(f"skipped: {training['skipped']}")
    for case, c in training.get("cases", {}).items():
        others = ", ".join(f"{p} {f['points_per_s']:.3g}" for p, f in c.get("precisions", {}).items()
                           if p != c.get("precision"))
        found.setdefault("training", []).append(
            f"{case} on {training.get('device')}: {c['points_per_s']:.3g} points/s in {c.get('precision', 'fp32')}"
            f"{f' ({others})' if others else ''}, paper schedule {c['schedule_hours']:.3g} h, "
            f"T_r {c['T_r_one_field_s'] * 1e3:.3g} ms (paper {PAPER_T_R_MS[case]:g} ms)")
    return found


def main(argv=None) -> int:
    out = Path((argv or sys.argv[1:] or ["runs/gpu-suite"])[0])
    with open(out / "parts.tsv", newline="") as f:
        parts = list(csv.DictReader(f, delimiter="\t"))
    log = (out / "gpu_suite.log").read_text(errors="replace")
    found = figures(out)
    found.setdefault("tests", []).append(pytest_line(log))
    rows = []
    for p in parts:
        rc = int(p["rc"])
        status = "ok" if rc == 0 else "timed out" if rc in (124, 137) else f"failed (exit {rc})"
        rows.append([p["part"], status, int(p["seconds"]), int(p["cap_s"]), "; ".join(found.get(p["part"], []))])
    info = machine()
    print(f"\nGPU suite on {info['gpu'] or 'no GPU'} ({info['cpu']}, {info['cores']} cores)\n")
    print(markdown_table(["part", "status", "s", "cap s", "figures"], rows))
    write_json(out / "gpu_suite.json", {"machine": info, "command": "bash benchmarks/gpu_suite.sh",
                                        "targets": TARGETS, "paper_T_r_ms": PAPER_T_R_MS,
                                        "parts": [dict(zip(("part", "status", "seconds", "cap_s", "figures"), r))
                                                  for r in rows]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""End to end: `ldensf run` on a reduced tiny preset (generate -> train -> EnSF and LD-EnSF -> report).

The setting is the paper's story in miniature: sparse observations (16 of 1024 grid
points per field) with 10 % noise. Asserted with a fixed seed: LD-EnSF's full-state
rel-RMSE at the last step is below EnSF's and below the unassimilated forecast's,
and its parameter error decreases over the trajectory.
"""
import json

import numpy as np
import pytest
import yaml

from ldensf_hpc.cli import main

E2E = {
    "swe": {"n": 32, "n_steps": 120, "save_every": 5, "bump_width": 1.0e5},
    "data": {"n_trajectories": 30, "shard_size": 5, "points_per_frame": 256},
    "observe": {"stride": 8, "noise": 0.1},
    "ensf": {"ensemble_size": 20},
    "ldnet_swe": {"latent": 6, "dyn_depth": 3, "dyn_width": 48, "rec_depth": 4, "rec_width": 96,
                  "fourier_features": 16, "activation": "gelu", "frame_every": 4, "dt_hat": 0.2, "batch_size": 4,
                  "lr": 3.0e-3, "retrain_lr": 3.0e-4, "epochs": 150, "retrain_epochs": 50},
    "encoder_swe": {"layers": 1, "hidden": 64, "dropout": 0.0, "batch_size": 4, "lr": 3.0e-3, "epochs": 200},
    "train": {"threads": 1, "patience": 100},
}


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    (work / "e2e.yaml").write_text(yaml.safe_dump(E2E))
    argv = ["run", "--preset", "tiny", "--config", str(work / "e2e.yaml"), "--workdir", str(work / "run"),
            "--backend", "serial", "--quiet"]
    assert main(argv) == 0
    return work, argv


def test_ld_ensf_beats_ensf_and_free_forecast(e2e_run, capsys):
    work, _ = e2e_run
    report = json.loads((work / "run" / "report.json").read_text())
    free, ensf, ld = (np.asarray(report["methods"][m]["full_rel_rmse"]) for m in ("free", "ensf", "ld_ensf"))
    assert ld[-1] < ensf[-1] and ld[-1] < free[-1], (ld[-1], ensf[-1], free[-1])
    param_error = np.asarray(report["methods"]["ld_ensf"]["param_rel_error"])
    assert param_error[-1] < param_error[0]
    for m in ("ensf", "ld_ensf"):
        timings = report["methods"][m]
        assert all(np.isfinite(timings[k]) and timings[k] > 0 for k in ("T_d", "T_f"))
    assert report["methods"]["ld_ensf"]["state_dim"] == 6 + 2
    assert report["config"]["case"] == "swe" and report["observations"]["m"] == 3 * 4 * 4
    for png in ("rel_rmse.png", "fields.png", "parameters.png"):
        assert (work / "run" / png).stat().st_size > 1000


def test_rerun_reuses_data_and_checkpoints(e2e_run, capsys):
    work, argv = e2e_run
    before = {p: p.stat().st_mtime_ns for p in (work / "run" / "models").glob("*.pt")}
    assert main(argv + ["--methods", "ld_ensf"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (work / "run" / "models").glob("*.pt")} == before
    out = capsys.readouterr().out
    assert "ld_ensf" in out and "report:" in out

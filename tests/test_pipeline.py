"""End to end: `ldensf run` on a reduced tiny preset (generate -> train -> every method -> report).

The setting is the paper's story in miniature: sparse observations (16 of 1024 grid
points per field) at 0 and 10 % noise. Asserted with a fixed seed: every method runs
at every level with finite metrics; at 10 % noise LD-EnSF's full-state rel-RMSE at the
last step is below EnSF's and below the unassimilated forecast's and its parameter
error decreases; LEVDA's analysis error is below its background error. Two more runs
on the same data check the capability table against what the methods do: with moving
sensors and with irregular observation times, every method that declares the
capability runs, the others are skipped with the reason. Every registered method runs here
(the registry test): it beats the free run, and a method that estimates parameters ends
closer to the true ones than the prior.
"""
import json

import numpy as np
import pytest
import yaml

from ldensf_hpc.cli import build_parser, main
from ldensf_hpc.filters import METHODS
from ldensf_hpc.pipeline import describe

E2E = {
    "swe": {"n": 32, "n_steps": 120, "save_every": 5, "bump_width": 1.0e5},
    "data": {"n_trajectories": 30, "shard_size": 5, "points_per_frame": 256},
    "observe": {"stride": 8, "noise": 0.1, "every": 4},
    "ensf": {"ensemble_size": 20},
    "ldnet": {"latent": 6, "dyn_depth": 3, "dyn_width": 48, "rec_depth": 4, "rec_width": 96,
                  "fourier_features": 16, "activation": "gelu", "frame_every": 4, "dt_hat": 0.2, "batch_size": 4,
                  "lr": 3.0e-3, "retrain_lr": 3.0e-4, "epochs": 150, "retrain_epochs": 50},
    "encoder": {"layers": 1, "hidden": 64, "dropout": 0.0, "batch_size": 4, "lr": 3.0e-3, "epochs": 200},
    "train": {"threads": 1, "patience": 100},
}
ALL = ",".join(METHODS)


def _run(work, *extra):
    argv = ["run", "--preset", "tiny", "--config", str(work / "e2e.yaml"), "--workdir", str(work / "run"),
            "--backend", "serial", "--quiet", *extra]
    assert main(argv) == 0
    return json.loads((work / "run" / "report.json").read_text())


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    (work / "e2e.yaml").write_text(yaml.safe_dump(E2E))
    return work, _run(work, "--methods", ALL, "--noise", "0,0.1")


def test_every_method_runs_at_every_noise_level(e2e_run):
    work, report = e2e_run
    assert set(report["levels"]) == {"0", "0.1"}
    assert report["command"].startswith("ldensf run --preset tiny") and report["machine"]["cores"] >= 1
    assert set(report["stages_wall_s"]) == {"generate", "train", "assimilate"}
    assert report["surrogates"] and all(s["train_wall_s"] > 0 and s["precision"] == "fp32"  # the CPU's auto
                                        for s in report["surrogates"].values())
    for results in report["levels"].values():
        assert set(results) == set(METHODS)
        for name, r in results.items():
            assert "skipped" not in r, (name, r)
            assert len(r["full_rel_rmse"]) == len(report["times"])
            for key in ("full_rel_rmse", "spread_error_ratio", "crps"):
                assert np.all(np.isfinite(r[key])) and min(r[key]) > 0, (name, key)
            assert r["wall_s"] > 0 and r["T_d"] > 0
    assert not any(k.startswith("_") for k in report["methods"]["ensf"])
    for png in ("rel_rmse.png", "rel_rmse_levels.png", "fields.png", "fields_error.png", "parameters.png"):
        assert (work / "run" / png).stat().st_size > 1000
    md = (work / "run" / "report.md").read_text()
    assert "| LEVDA | LDNet latent + parameters | LDNet | yes | yes | yes | yes | no |" in md


def test_ld_ensf_beats_ensf_and_free_forecast(e2e_run):
    _, report = e2e_run
    main_level = report["methods"]
    free, ensf, ld = (np.asarray(main_level[m]["full_rel_rmse"]) for m in ("free", "ensf", "ld_ensf"))
    assert ld[-1] < ensf[-1] and ld[-1] < free[-1], (ld[-1], ensf[-1], free[-1])
    param_error = np.asarray(main_level["ld_ensf"]["param_rel_error"])
    assert param_error[-1] < param_error[0]
    assert main_level["ld_ensf"]["state_dim"] == 6 + 2
    assert report["config"]["case"] == "swe" and report["observations"]["m"] == 3 * 4 * 4


def test_levda_analysis_beats_its_background(e2e_run):
    _, report = e2e_run
    for level, results in report["levels"].items():
        levda = results["levda"]
        assert np.mean(levda["full_rel_rmse"]) < np.mean(levda["background_full_rel_rmse"])
        analysis, background = np.asarray(levda["cost_analysis"]), np.asarray(levda["cost_background"])
        assert analysis.sum() < background.sum()
        if level == "0.1":  # at noise 0 (the 1 % floor) J is too stiff for the mean of the members' minimisers
            assert np.all(analysis < background)


@pytest.mark.parametrize("setting, capability", [("observe.sensors=moving", "moving_sensors"),
                                                 ("observe.irregular=true", "irregular_times")])
def test_methods_run_exactly_where_they_declare_the_capability(e2e_run, setting, capability):
    work, _ = e2e_run
    report = _run(work, "--methods", ALL, "--noise", "0.1", "--set", setting)
    for name, r in report["methods"].items():
        declared = describe(name)[capability]
        if not declared:
            assert "skipped" in r, name
        else:
            assert "skipped" not in r and np.all(np.isfinite(r["full_rel_rmse"])), (name, r.get("skipped"))
    if capability == "moving_sensors":
        assert report["methods"]["ld_ensf"]["encoder"] == "set"
        assert (work / "run" / "models" / "set_encoder.pt").is_file()


def test_rerun_reuses_data_and_checkpoints(e2e_run, capsys):
    work, _ = e2e_run
    before = {p: p.stat().st_mtime_ns for p in (work / "run" / "models").glob("*.[pj][ts]*")}
    assert sum(p.suffix == ".json" for p in before) == sum(p.suffix == ".pt" for p in before) > 0
    _run(work, "--methods", "ld_ensf", "--noise", "0.1")
    # checkpoints and their summaries (errors) are reused, not rewritten
    assert {p: p.stat().st_mtime_ns for p in (work / "run" / "models").glob("*.[pj][ts]*")} == before
    out = capsys.readouterr().out
    assert "LD-EnSF" in out and "report:" in out and "reusing" not in out
    previous = list((work / "run" / "previous").glob("*/report.json"))
    assert {"0", "0.1"} in [set(json.loads(p.read_text())["levels"]) for p in previous]  # the fixture's run, kept
    again = _run(work, "--methods", "ld_ensf", "--noise", "0.1")
    assert "reusing the report" in capsys.readouterr().out
    assert again["inputs_sha256"] == json.loads((work / "run" / "report.json").read_text())["inputs_sha256"]


def test_unknown_method_and_bad_noise_are_clear_errors(e2e_run, capsys):
    work, _ = e2e_run
    argv = ["run", "--preset", "tiny", "--config", str(work / "e2e.yaml"), "--workdir", str(work / "run"),
            "--backend", "serial", "--quiet"]
    assert main(argv + ["--methods", "ensf,kalman"]) == 2
    err = capsys.readouterr().err
    assert f"unknown method 'kalman'; choose one of {', '.join(METHODS)}" in err and err.count("\n") == 1
    assert main(argv + ["--noise", "0.1,-1"]) == 2
    assert "noise levels must be finite fractions >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_assimilates(e2e_run, name):
    """The registry test: each method on the shared problem at 10 % noise beats the free run (the free
    run is its own forecast), and one that estimates parameters ends nearer the truth than the prior."""
    _, report = e2e_run
    results = report["levels"]["0.1"]
    r, free = results[name], results["free"]
    mean = np.mean(r["full_rel_rmse"])
    if name == "free":
        np.testing.assert_array_equal(r["full_rel_rmse"], r["forecast_full_rel_rmse"])
    else:
        assert mean < np.mean(free["full_rel_rmse"]), (name, mean)
    caps = describe(name)
    assert ("param_rel_error" in r) == caps["parameters"]
    if caps["parameters"]:
        assert r["param_rel_error"][-1] < report["prior_param_rel_error"], name
    assert r["state_dim"] > 0 and report["capabilities"][name] == caps


def test_the_cli_offers_exactly_the_registered_methods(capsys):
    subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
    action = next(a for a in subcommands["assimilate"]._actions if a.dest == "filter")
    assert list(action.choices) == list(METHODS)
    assert main(["assimilate", "--data", "x", "--out", "y", "--filter", "kalman"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'kalman'" in err and err.count("\n") == 1

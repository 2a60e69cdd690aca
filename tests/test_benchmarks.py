"""The benchmark scripts: their --quick modes run and report positive, finite numbers, and the
bookkeeping behind the tables (trajectory lengths, extrapolation, projection) is right."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from problems import ROUND_OFF

from ldensf_hpc.cases import load_config

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import kernel  # noqa: E402
import scaling  # noqa: E402
import timing_study  # noqa: E402


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def run_quick(script: str, tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / f"{script}.json"
    done = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--quick", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(out.read_text()), done.stdout


def test_paper_trajectories_match_the_paper():
    """SWE: 2000 steps, 50 analyses every 40 steps, 51 latent steps; Kolmogorov: 100 warm-up + 200
    stored frames of 10 steps, observations every 5 frames: 40 latent steps, 39 EnSF analyses after
    the prior, 2950 steps to the last observation."""
    swe = timing_study.full_trajectory(load_config("paper", case="swe"))
    kol = timing_study.full_trajectory(load_config("paper", case="kolmogorov"))
    assert (swe.warmup_steps, swe.gap, swe.cycles, swe.latent_steps, swe.total_steps) == (0, 40, 50, 51, 2000)
    assert (kol.warmup_steps, kol.gap, kol.cycles, kol.latent_steps, kol.total_steps) == (1000, 50, 39, 40, 2950)


def test_extrapolation_is_linear():
    t = timing_study.extrapolated(2.0, 4, 50)
    assert t["seconds"] == pytest.approx(25.0) and t["extrapolated"]
    assert not timing_study.extrapolated(2.0, 50, 50)["extrapolated"]


def test_projection_follows_the_message_sizes():
    """With free compute the EnSF cycle costs a ring Allgather plus a Gather of K d float64 each."""
    ens = {"members": 100, "state_dim": 1000,
           "runs": [{"T_d_per_cycle": 1.0, "T_f_per_cycle": 0.0}]}
    proj = scaling.project(None, ens, bandwidth_gbit=8.0, latency_s=1e-6)
    rows = {r["nodes"]: r for r in proj["ensf"]["rows"]}
    message = 100 * 1000 * 8 / 1e9  # seconds at 1 GB/s
    assert rows[1]["comm_s"] == 0.0
    assert rows[4]["comm_s"] == pytest.approx(2 * (3e-6 + 0.75 * message))
    gen = {"table": [{"strong_shards": 10}], "shard_s": 2.0, "shard_bytes": 0.0}
    gen_rows = {r["nodes"]: r for r in scaling.project(gen, None, 1e9, 0.0)["generation"]["rows"]}
    assert gen_rows[4]["compute_s"] == pytest.approx(6.0)  # ceil(10 / 4) shards of 2 s
    assert gen_rows[64]["speedup"] == pytest.approx(10.0, rel=1e-6)  # one shard per node at most


def test_rank_counts_and_table():
    assert scaling.rank_counts(1) == [1]
    assert scaling.rank_counts(6) == [1, 2, 4, 6]
    table = common.markdown_table(["a", "b"], [["x", 1.23456], ["y", None]])
    assert table.splitlines()[1] == "|---|---:|" and "1.235" in table and "| y | - |" in table


def test_timing_study_quick(tmp_path):
    record, stdout = run_quick("timing_study", tmp_path)
    assert "| swe | EnSF | T_d |" in stdout and "| kolmogorov | LD-EnSF | T_r (cpu, 1 state) |" in stdout
    for case in ("swe", "kolmogorov"):
        for quantity in ("T_d", "T_f", "T_r (cpu, 1 state)", "T_r (cpu, 20 members)", "D_s"):
            assert f"| {case} | Latent-EnSF | {quantity} |" in stdout
    assert record["machine"]["cores"] >= 1 and record["members"] == 20
    vae_latent = load_config("tiny").vae.latent
    for case, n_fields, p in (("swe", 3, 2), ("kolmogorov", 2, 1)):
        r = record["cases"][case]
        traj = r["trajectory"]
        assert traj["total_steps"] == traj["warmup_steps"] + traj["cycles"] * traj["gap"]
        e = r["ensf"]
        assert e["D_s"] == n_fields * 32 * 32
        for key in ("T_d", "T_f"):
            assert positive(e[key]["seconds"]) and not e[key]["extrapolated"]
        ld = r["ld_ensf"]
        assert ld["D_s"] == ld["ldnet"]["latent"] + p
        assert {"reference", "numba"} <= set(ld["kernels"])
        for k in ld["kernels"].values():
            assert positive(k["T_d"]) and positive(k["T_f"]) and math.isfinite(k["final_rel_rmse"])
        assert positive(ld["T_e"])
        for rec in ld["T_r"]:
            assert positive(rec["one_state"]) and positive(rec["members"]["seconds"])
        le = r["latent_ensf"]
        assert le["D_s"] == vae_latent and le["observations"] == e["observations"]
        assert le["T_d"] == e["T_d"]["seconds"]  # the same full solver
        tf = le["T_f"]
        assert tf["analyses"] == traj["cycles"] and positive(tf["per_analysis"])
        assert tf["seconds"] == pytest.approx(tf["per_analysis"] * traj["cycles"])
        assert tf["per_analysis"] == min(tf["times_s"]) and all(positive(t) for t in tf["parts_s"].values())
        assert [rec["device"] for rec in le["T_r"]] == [rec["device"] for rec in ld["T_r"]]
        for rec in le["T_r"]:
            assert positive(rec["one_state"]) and positive(rec["members"]["seconds"])
            assert not rec["members"]["extrapolated"]


def test_full_space_ensf_quick(tmp_path):
    """Every variant timed, the fused float64 path equal to the reference to round-off, float32 to 1e-4."""
    record, stdout = run_quick("full_space_ensf", tmp_path, "--case", "swe", "--repeats", "1")
    rows = {(r["kernel"], r["precision"]): r for r in record["rows"]}
    assert set(rows) == {("reference", "float64"), ("blas", "float64"), ("blas", "float32")}
    assert all(positive(r["analysis_s_median"]) and positive(r["fraction_of_peak"]) for r in rows.values())
    assert rows[("blas", "float64")]["mean_rel_diff_vs_reference"] < 1e-12
    assert rows[("blas", "float32")]["mean_rel_diff_vs_reference"] < 1e-4
    assert "| swe | 6912 | 20 | blas | float32 |" in stdout


def test_kernel_quick_profile_adds_up(tmp_path):
    """Numba rows carry their rate on the 4 K^2 d N count and the arithmetic limit; the profile's
    mixture score and rest sum to the analysis, and its overhead fit reproduces the profiled cycles."""
    record, stdout = run_quick("kernel", tmp_path)
    a = kernel.arithmetic(100)
    assert a["flops"] == 4 * 100**2 * kernel.D * kernel.N_STEPS
    assert a["limit_s"] == pytest.approx((2 * kernel.D + kernel.EXP_FMA) * 100**2 * kernel.N_STEPS
                                         / (a["peak_gflops"] / 2 * 1e9))
    numba_rows = [r for r in record["rows"] if r["backend"] == "numba"]
    assert {r["K"] for r in numba_rows} == {20, 100}
    for r in numba_rows:
        assert r["gflops"] == pytest.approx(kernel.arithmetic(r["K"])["flops"] / r["analysis_s_best"] / 1e9)
        assert 0 < r["fraction_of_limit"] < 1
    for p in record["profile"]:
        assert p["mixture_s"] + p["rest_s"] == pytest.approx(p["full_s"]) and positive(p["rest_s"])
        assert p["padded_K"] % kernel.PAD == 0 and p["padded_K"] >= p["K"]
    fit = record["profile_fit"]  # two K: the line passes through both (its sign is the machine's, not tested)
    assert len(record["profile"]) == 2
    for p in record["profile"]:
        assert fit["c0_cycles_per_member_step"] + fit["c1_cycles_per_padded_pair"] * p["padded_K"] == pytest.approx(
            p["cycles_per_member_step"], rel=1e-9)
    assert "Mixture score per member-step" in stdout


def test_reconstruction_quick_counts_the_networks_flops(tmp_path):
    """The LDNet's counted flops are its layers' (the first layer split into a point part and a
    latent part, evaluated per chunk of points), the fields agree across precisions to bfloat16
    accuracy, and rates are positive."""
    record, stdout = run_quick("reconstruction", tmp_path)
    rows = {(r["case"], r["surrogate"], r["precision"]): r for r in record["rows"]}
    assert set(rows) == {(c, s, p) for c in ("swe", "kolmogorov") for s in ("ldnet", "vae")
                         for p in ("float32", "bfloat16")}
    for case in ("swe", "kolmogorov"):
        cfg = load_config("paper", case=case).ldnet
        M, W, F = 48 * 48, cfg.rec_width, {"swe": 3, "kolmogorov": 2}[case]  # h, u, v | u, v
        embedded = 2 + 2 * cfg.fourier_features
        chunks = -(-M // 2048)  # fields_at's point chunks: the latent part of layer one once per chunk
        want = (M * (2 * embedded * W + 2 * (cfg.rec_depth - 1) * W * W + 2 * W * F)
                + chunks * 2 * cfg.latent * W + M * 2 * 2 * cfg.fourier_features)
        assert rows[(case, "ldnet", "float32")]["flops_per_state"] == want
    for r in rows.values():
        assert positive(r["one_state_s"]) and positive(r["K_states_s"]) and positive(r["fraction_of_peak"])
        assert r["rel_diff_vs_float32"] < (0.05 if r["precision"] == "bfloat16" else 1e-12)
    assert "not evaluated (--quick)" in stdout


def test_scaling_quick(tmp_path):
    record, stdout = run_quick("scaling", tmp_path)
    assert "PROJECTION" in stdout and "Target EnSF" in stdout
    gen = record["generation"]
    assert {(r["backend"], r["workers"]) for r in gen["table"]} == {(b, w) for b in ("dask", "mpi") for w in (1, 2)}
    for r in gen["table"]:
        assert positive(r["strong_wall_s"]) and positive(r["strong_speedup"]) and positive(r["weak_efficiency"])
    runs = record["ensf"]["runs"]
    assert [r["ranks"] for r in runs] == [1, 2]
    for r in runs:
        assert positive(r["cycle_s"]) and positive(r["speedup"])
        assert r["max_rel_rmse_diff_vs_1_rank"] < ROUND_OFF["float32"]  # sharding: float32 round-off only
    for r in record["kernel"]["rows"]:
        assert positive(r["member_steps_per_s"]) and 1 <= r["euler_steps"] <= 100
    for part in ("generation", "ensf"):
        assert all(positive(r["total_s"]) for r in record["projection"][part]["rows"])
    assert all(Path(p).is_file() for p in record["plots"]) and len(record["plots"]) == 2


def test_moving_sensors_quick(tmp_path):
    record, _ = run_quick("moving_sensors", tmp_path)
    rows = record["methods"]
    assert set(rows) == {"LSTM, grid", "set, grid", "set, moving", "LSTM, moving"}
    assert all(positive(r["full_rel_rmse_last"]) for r in rows.values())


def test_levda_sweep_reruns_levda_on_the_runs_models(tmp_path):
    """At a run's own LEVDA settings the sweep (over the run's dataset and checkpoints, not retrained)
    reproduces the run's errors; a larger model-error weight changes them."""
    import ldensf_hpc as ld

    work = tmp_path / "swe-tiny"
    report = ld.Case.load("swe", "tiny").run(work, methods=["levda"], levels=[0.0, 0.1])
    out = tmp_path / "sweep.json"
    done = subprocess.run([sys.executable, str(BENCH / "levda_sweep.py"), "--from", str(work), "--preset", "tiny",
                           "--noise", "0,0.1", "--settings", "0:1:50,0.3:1:50", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    own, other = (list(r["time_mean_full_rel_rmse"].values()) for r in json.loads(out.read_text())["results"])
    expected = [sum(r["levda"]["full_rel_rmse"]) / len(r["levda"]["full_rel_rmse"]) for r in report["levels"].values()]
    assert own == pytest.approx(expected, rel=1e-6)
    assert other != pytest.approx(expected, rel=1e-3)
    assert not (work / "previous").exists()


def test_gpu_suite_rehearses_without_a_gpu(tmp_path):
    """benchmarks/gpu_suite.sh runs every part on a machine without a GPU, each saying what it
    skipped, and ends with the summary table and gpu_suite.json (at most 8 files: the device limit)."""
    from ldensf_hpc.backend import cupy_available

    if cupy_available():
        pytest.skip("a GPU is present: the suite would time it (run it by hand)")
    done = subprocess.run(["bash", str(BENCH / "gpu_suite.sh")], cwd=BENCH.parent, capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "OUT": str(tmp_path), "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_suite.json").read_text())
    parts = {p["part"]: p for p in summary["parts"]}
    assert list(parts) == ["build", "tests", "kernel", "solvers", "peers", "training"]
    for name in ("tests", "kernel", "solvers", "training"):
        assert parts[name]["status"] == "ok", parts[name]
    assert "skipped" in parts["tests"]["figures"] and "passed" not in parts["tests"]["figures"]
    for name in ("kernel", "solvers", "training"):
        assert "no CUDA GPU" in parts[name]["figures"], parts[name]
    assert "| part | status |" in done.stdout
    assert len(list(tmp_path.iterdir())) <= 8

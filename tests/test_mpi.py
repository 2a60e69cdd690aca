"""Members sharded over MPI ranks: the one forecast-analysis driver gives the numbers of one process.

Run the MPI tests with ``mpiexec -n 2 python -m pytest -q --with-mpi -m mpi tests/test_mpi.py``;
the plain ``python -m pytest`` run skips them and runs the others, one of which launches
``jobs/mpirun/assimilate.sh 2 ...`` (``mpiexec -n 2 ldensf assimilate --backend mpi``) itself.

Tolerance: the mixture score's two BLAS products are blocked by the rows a rank holds,
so the sharded analysis equals the one-process one to round-off (measured <= 1e-15
relative), not bitwise; everything else (forecasts, noise, member-paired score, LETKF's
transform) is bitwise.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from problems import ROUND_OFF

from ldensf_hpc import cases
from ldensf_hpc.backend import rng_for
from ldensf_hpc.cases import load_config
from ldensf_hpc.cli import main
from ldensf_hpc.data.generate import generate
from ldensf_hpc.errors import InputError
from ldensf_hpc.experiment import prior_members
from ldensf_hpc.filters.base import Observation
from ldensf_hpc.filters.cycle import cycle
from ldensf_hpc.filters.ensf import EnSF
from ldensf_hpc.filters.ld_ensf import LDEnSF
from ldensf_hpc.filters.letkf import LETKF
from ldensf_hpc.models import trajectory
from ldensf_hpc.observe import full_operator, grid_operator, observe
from ldensf_hpc.parallel.mpi import Sharding, member_block, member_counts

JOBS = Path(__file__).resolve().parents[1] / "jobs" / "mpirun"


def analysis_problem(K=12, n=16, seed=0):
    """A forecast ``(K, 3 n^2)`` and a noisy grid observation of a random truth (std 0.2)."""
    rng = np.random.default_rng(seed)
    shape = (3, n, n)
    d = int(np.prod(shape))
    forecast = rng.standard_normal(d) + 0.5 * rng.standard_normal((K, d))
    op = grid_operator(shape, 4)
    truth = rng.standard_normal(d)
    y = op.apply(truth[None])[0] + 0.2 * rng.standard_normal(op.m)
    return forecast, Observation(op, y, 0.2)


def assert_round_off(got, expected, precision="float64"):
    np.testing.assert_allclose(got, expected, rtol=0,
                               atol=ROUND_OFF[precision] * max(1.0, float(np.abs(expected).max())))


# ---------------------------------------------------------------- one process


@pytest.mark.parametrize("K", [7, 10, 100, 101])
@pytest.mark.parametrize("n_ranks", [1, 2, 3, 7])
def test_member_blocks_are_balanced_contiguous_and_cover_the_ensemble(K, n_ranks):
    counts = member_counts(K, n_ranks)
    assert counts.sum() == K and counts.max() - counts.min() <= 1 and np.all(np.diff(counts) <= 0)
    blocks = [member_block(K, n_ranks, r) for r in range(n_ranks)]
    assert np.array_equal(np.concatenate([np.arange(K)[b] for b in blocks]), np.arange(K))
    assert [b.stop - b.start for b in blocks] == counts.tolist()


def test_more_ranks_than_members_is_rejected():
    with pytest.raises(InputError, match="cannot shard 3 ensemble members over 4 ranks"):
        member_counts(3, 4)


ROW_FILTERS = {"ensf-mixture": EnSF(n_steps=40), "ensf-mixture-float64": EnSF(n_steps=40, precision="float64"),
               "ensf-paired": EnSF(n_steps=40, mixture=False),
               "letkf": LETKF(radius=3.0), "ld_ensf": LDEnSF(n_steps=40)}


def row_problem(name, K):
    """The analysis problem of ``name``: the grid problem, or a latent identity observation for LD-EnSF."""
    forecast, obs = analysis_problem(K=K)
    if name == "ld_ensf":
        forecast = forecast[:, :12].astype(np.float32)
        obs = Observation(full_operator((12,)), forecast.mean(axis=0) + 0.3, 0.4)
    return forecast, obs


@pytest.mark.parametrize("name", list(ROW_FILTERS))
def test_blocks_of_rows_are_the_whole_analysis(name):
    """What member sharding relies on: the analysis of a block of members equals those rows of the
    whole analysis (the noise of sample k depends only on the seed, the step and k)."""
    filt = ROW_FILTERS[name]
    forecast, obs = row_problem(name, K=10)
    whole = filt.analyse(forecast, obs, np.random.default_rng(5))
    for cut in (1, 4, 5):
        parts = [filt.analyse(forecast, obs, np.random.default_rng(5), rows) for rows in (slice(0, cut), slice(cut, 10))]
        if name.startswith("ensf-mixture"):
            assert_round_off(np.concatenate(parts), whole, filt.precision)
        else:
            np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-6 if name == "ld_ensf" else 0)


# ---------------------------------------------------------------- two ranks


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("filt", [EnSF(n_steps=50), EnSF(n_steps=50, mixture=False), LETKF(radius=4.0, inflation=1.05)],
                         ids=["ensf-mixture", "ensf-paired", "letkf"])
def test_sharded_swe_cycles_equal_the_serial_cycles(filt):
    """Three forecast-analysis cycles of the SWE tiny model, 7 members (4 + 3 over 2 ranks)."""
    from mpi4py import MPI

    cfg = load_config("tiny", case="swe", overrides=["swe.backend=numpy"])
    model = cases.get("swe").model(cfg)
    truth_params = model.sample_params(np.random.default_rng(9), 1)
    truth = trajectory(model, model.initial_state(truth_params), None, 3, 10)[0]
    op = grid_operator(truth.shape[1:], 4)
    obs = [Observation(op, observe(op, truth[c + 1], np.full(op.m, 0.2), rng_for(1, 0, c)), 0.2) for c in range(3)]
    K = 7

    def run(shards):
        state, params = prior_members(model, shards.rows, seed=1)
        return cycle(model, filt, state, obs, [10, 10, 10], params=params, seed=1, sharding=shards)

    sharded = run(Sharding(K, MPI.COMM_WORLD))
    serial = run(Sharding(K))
    np.testing.assert_array_equal(sharded.forecast.mean[0], serial.forecast.mean[0])  # forecasts: bitwise
    precision = getattr(filt, "precision", "float64")
    for key in ("mean", "std"):
        assert_round_off(getattr(sharded.analysis, key), getattr(serial.analysis, key), precision)
    rows = Sharding(K, MPI.COMM_WORLD).rows
    assert_round_off(sharded.state, serial.state[rows], precision)
    assert sharded.state.shape == (rows.stop - rows.start, 3, 32, 32)
    error = [np.sqrt(np.mean((m - t.ravel()) ** 2)) for m, t in zip(serial.analysis.mean, truth[1:])]
    prior = [np.sqrt(np.mean((m - t.ravel()) ** 2)) for m, t in zip(serial.forecast.mean, truth[1:])]
    if isinstance(filt, LETKF):  # the first analysis halves the error of the prior bump
        assert error[0] < 0.5 * prior[0]


@pytest.mark.mpi(min_size=2)
def test_an_error_on_one_rank_is_raised_on_every_rank():
    from mpi4py import MPI

    shards = Sharding(4, MPI.COMM_WORLD)

    def fails_on_last_rank():
        if shards.rank == shards.size - 1:
            raise InputError("bad member block")
        return shards.rank

    with pytest.raises(InputError, match="bad member block"):
        shards.collective(fails_on_last_rank)
    assert shards.collective(lambda: shards.rank) == shards.rank  # the ranks are still in step


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for case in ("swe", "kolmogorov"):
        generate(load_config("tiny", case=case), root / case, backend="serial", progress=False)
    return root


def numbers(record: dict) -> dict:
    """The per-time errors and spreads of a record (what must not depend on the ranks)."""
    return {k: np.asarray(v) for k, v in record.items() if k.endswith(("rel_rmse", "error_ratio"))}


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec")
@pytest.mark.parametrize("case, filt", [("swe", "ensf"), ("kolmogorov", "letkf")])
def test_mpiexec_ldensf_assimilate_equals_serial(datasets, tmp_path, case, filt, capsys):
    args = ["assimilate", "--case", case, "--preset", "tiny", "--data", datasets / case, "--filter", filt]
    assert main([*map(str, args), "--out", str(tmp_path / "serial")]) == 0
    assert "mean analysis rel-RMSE" in capsys.readouterr().out
    run = subprocess.run([str(JOBS / "assimilate.sh"), "2", "tiny", case, str(datasets / case), str(tmp_path / "mpi"),
                          "--filter", filt], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert re.search(r"mpiexec -n 2 .* assimilate --backend mpi", run.stderr)  # the script's trace
    assert run.stdout.count("mean analysis rel-RMSE") == 1  # rank 0 prints and writes
    serial = json.loads((tmp_path / "serial" / f"assimilate_{filt}.json").read_text())
    mpi = json.loads((tmp_path / "mpi" / f"assimilate_{filt}.json").read_text())
    assert (serial["ranks"], mpi["ranks"], mpi["backend"]) == (1, 2, "mpi")
    assert serial["trajectory"] == mpi["trajectory"] and serial["time"] == mpi["time"]
    got, expected = numbers(mpi), numbers(serial)
    assert set(got) == {"full_rel_rmse", "forecast_full_rel_rmse", "spread_error_ratio"}
    for key in expected:
        assert got[key].shape == (len(serial["time"]),)
        assert_round_off(got[key], expected[key], "float32")
    assert np.all(np.isfinite(expected["full_rel_rmse"]))
    assert expected["full_rel_rmse"][-1] < expected["forecast_full_rel_rmse"][-1]


@pytest.mark.parametrize("script", ["generate.sh", "assimilate.sh", "bench.sh"])
def test_mpirun_scripts_print_their_usage(script):
    for args in ([], ["two", "tiny"]):
        run = subprocess.run([str(JOBS / script), *args], capture_output=True, text=True, timeout=30)
        assert run.returncode == 2 and run.stderr.startswith(f"usage: jobs/mpirun/{script} NRANKS")


def test_assimilate_rejects_bad_input_in_one_line(datasets, tmp_path, capsys):
    base = ["assimilate", "--preset", "tiny", "--out", str(tmp_path)]
    cases = {
        "no dataset at": ["--case", "swe", "--data", str(tmp_path / "missing")],
        "invalid choice: 'enkf'": ["--case", "swe", "--data", str(datasets / "swe"), "--filter", "enkf"],
        "is a swe dataset, not kolmogorov": ["--case", "kolmogorov", "--data", str(datasets / "swe")],
        r"differs in: n\b": ["--case", "swe", "--data", str(datasets / "swe"), "--set", "swe.n=16"],
        "LD-EnSF needs the trained surrogate.s. ldnet, encoder": ["--case", "swe", "--data", str(datasets / "swe"),
                                                                   "--filter", "ld_ensf"],
    }
    for message, extra in cases.items():
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("ldensf: error:") and "\n" not in err
        assert re.search(message, err), err

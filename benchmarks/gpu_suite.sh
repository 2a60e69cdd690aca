#!/usr/bin/env bash
# Everything GPU-side in one short lease: the GPU tests and the GPU benchmarks, each under its
# own time cap (about 6 minutes in all), then one summary table. Run from the repository root:
#
#     OUT=/some/dir bash benchmarks/gpu_suite.sh     # $OUT default: runs/gpu-suite
#
# On the device machine (no network) carry the missing wheels: jax-cfd and tree-math (the rest
# is installed there), fetched here with
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --implementation cp --platform manylinux_2_17_x86_64 -d .whl jax-cfd==0.2.1 tree-math
# and name `.whl` in the device tool's `carry`. The package itself is installed without its
# dependencies (dask is not needed by anything run here).
#
# Without a GPU the script still runs every part, which then says what it skipped: that is the
# rehearsal. Files under $OUT: gpu_suite.log (every part's output), parts.tsv (part, exit code,
# seconds, cap), kernel_gpu.json, solvers_gpu.json, peers_gpu.json, training_cost_gpu.json and
# gpu_suite.json (the summary; benchmarks/gpu_suite_summary.py).
set -u
OUT=${OUT:-runs/gpu-suite}
mkdir -p "$OUT"
LOG="$OUT/gpu_suite.log"
PARTS="$OUT/parts.tsv"
: >"$LOG"
printf 'part\trc\tseconds\tcap_s\n' >"$PARTS"
export PYTHONUNBUFFERED=1 PYTHON=${PYTHON:-python3}

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-suite-site \
        .whl/*.whl >>"$LOG" 2>&1 && export PYTHONPATH="/tmp/gpu-suite-site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PYTHON" -c "import ldensf_hpc" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index -e . >>"$LOG" 2>&1 \
        || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

# part NAME CAP_SECONDS COMMAND...: run COMMAND under `timeout`, log its output, record rc and time.
part() {
    local name=$1 cap=$2
    shift 2
    echo "=== $name (cap ${cap} s): $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout --kill-after=10 "$cap" "$@" >>"$LOG" 2>&1
    local rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$cap" >>"$PARTS"
    echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
}

# The prebuilt fatbin (sm_80/sm_90 SASS + PTX) that kernels/cuda.py loads before trying NVRTC.
part build 45 bash -c 'cmake -S cmake -B build/cuda -DCMAKE_BUILD_TYPE=Release && cmake --build build/cuda --parallel 8'
part tests 80 "$PYTHON" -m pytest -q -m gpu -rs -p no:cacheprovider $(grep -l "mark.gpu" tests/test_*.py)
part kernel 90 "$PYTHON" benchmarks/kernel.py --gpu-only --budget 10 --out "$OUT/kernel_gpu.json"
part solvers 40 "$PYTHON" benchmarks/solvers.py --gpu-only --out "$OUT/solvers_gpu.json"
part peers 60 "$PYTHON" benchmarks/peers.py --gpu --members 8 100 --steps 50 --out "$OUT/peers_gpu.json"
part training 40 "$PYTHON" benchmarks/training_cost.py --gpu-only --points 2000 --out "$OUT/training_cost_gpu.json"

"$PYTHON" benchmarks/gpu_suite_summary.py "$OUT" | tee -a "$LOG"

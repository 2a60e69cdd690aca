#!/usr/bin/env bash
# Scaling of the MPI-sharded full-space EnSF: 1 rank, then NRANKS ranks (benchmarks/mpi_ensf.py).
usage="usage: jobs/mpirun/bench.sh NRANKS [benchmarks/mpi_ensf.py options...]
  NRANKS  largest rank count; runs 1 rank, then NRANKS ranks, and prints the table
          (results in benchmarks/results/mpi_ensf.json)
  e.g.    jobs/mpirun/bench.sh 2                      # SWE 150x150, K = 100, one cycle
          jobs/mpirun/bench.sh 4 --n 64 --cycles 3
Threads per rank: OMP_NUM_THREADS and NUMBA_NUM_THREADS (default 1); mpiexec: \$MPIEXEC (default mpiexec)."
set -euo pipefail
[[ $# -ge 1 && $1 =~ ^[1-9][0-9]*$ ]] || { echo "$usage" >&2; exit 2; }
nranks=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} NUMBA_NUM_THREADS=${NUMBA_NUM_THREADS:-1}
export MKL_NUM_THREADS=$OMP_NUM_THREADS OPENBLAS_NUM_THREADS=$OMP_NUM_THREADS
for n in $(printf '%s\n' 1 "$nranks" | sort -nu); do
  (set -x; "${MPIEXEC:-mpiexec}" -n "$n" python "$root/benchmarks/mpi_ensf.py" "${@:2}")
done

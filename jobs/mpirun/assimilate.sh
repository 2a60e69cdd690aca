#!/usr/bin/env bash
# Full-space data assimilation with the ensemble members sharded over NRANKS MPI ranks.
usage="usage: jobs/mpirun/assimilate.sh NRANKS PRESET [CASE] [DATA] [OUT] [ldensf assimilate options...]
  NRANKS  MPI ranks (mpiexec -n NRANKS); at most ensf.ensemble_size
  PRESET  tiny | small | paper (the preset the dataset was generated with)
  CASE    swe (default) | kolmogorov
  DATA    dataset directory (default: data/CASE-PRESET, see generate.sh)
  OUT     output directory for assimilate_<filter>.json (default: runs/CASE-PRESET)
  e.g.    jobs/mpirun/assimilate.sh 2 small swe data/swe-small runs --filter letkf --set ensf.ensemble_size=100
Threads per rank: OMP_NUM_THREADS and NUMBA_NUM_THREADS (default 1); mpiexec: \$MPIEXEC (default mpiexec)."
set -euo pipefail
[[ $# -ge 2 && $1 =~ ^[1-9][0-9]*$ ]] || { echo "$usage" >&2; exit 2; }
nranks=$1 preset=$2 case=${3:-swe}
data=${4:-data/$case-$preset} out=${5:-runs/$case-$preset}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} NUMBA_NUM_THREADS=${NUMBA_NUM_THREADS:-1}
export MKL_NUM_THREADS=$OMP_NUM_THREADS OPENBLAS_NUM_THREADS=$OMP_NUM_THREADS
ldensf=(ldensf); command -v ldensf >/dev/null || ldensf=(python -m ldensf_hpc.cli)
set -x
"${MPIEXEC:-mpiexec}" -n "$nranks" "${ldensf[@]}" assimilate --backend mpi --case "$case" --preset "$preset" \
  --data "$data" --out "$out" "${@:6}"

#!/usr/bin/env bash
# Generate a trajectory dataset with NRANKS MPI ranks (each rank writes its own HDF5 shards).
usage="usage: jobs/mpirun/generate.sh NRANKS PRESET [CASE] [OUT] [ldensf generate options...]
  NRANKS  MPI ranks (mpiexec -n NRANKS)
  PRESET  tiny | small | paper
  CASE    swe (default) | kolmogorov
  OUT     dataset directory (default: data/CASE-PRESET); a rerun resumes it
  e.g.    jobs/mpirun/generate.sh 4 small kolmogorov data/kol --set data.n_trajectories=80
Threads per rank: OMP_NUM_THREADS and NUMBA_NUM_THREADS (default 1); mpiexec: \$MPIEXEC (default mpiexec)."
set -euo pipefail
[[ $# -ge 2 && $1 =~ ^[1-9][0-9]*$ ]] || { echo "$usage" >&2; exit 2; }
nranks=$1 preset=$2 case=${3:-swe}
out=${4:-data/$case-$preset}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} NUMBA_NUM_THREADS=${NUMBA_NUM_THREADS:-1}
export MKL_NUM_THREADS=$OMP_NUM_THREADS OPENBLAS_NUM_THREADS=$OMP_NUM_THREADS
ldensf=(ldensf); command -v ldensf >/dev/null || ldensf=(python -m ldensf_hpc.cli)
set -x
"${MPIEXEC:-mpiexec}" -n "$nranks" "${ldensf[@]}" generate --backend mpi --case "$case" --preset "$preset" \
  --out "$out" "${@:5}"

// Tsunami shallow-water steps (ldensf_hpc/models/shallow_water.py) for a batch of members,
// all steps in one launch: one block per member, float64, the numba kernel's expressions in
// its order (compile without FMA contraction, e.g. NVRTC --fmad=false, to round like NumPy).
// bad[member] = the first step (from 1) at which a NaN/Inf appeared, else 0.
// No #include: the file compiles with nvcc and NVRTC alike.

extern "C" __global__ void swe_advance(double* state, double* flux, const double* fdt_u,
                                       const double* fdt_v, const int n, const int n_steps,
                                       const double H, const double r, const double gr,
                                       long long* bad)
{
    // One block per member, all steps in one launch; the same expressions as the numba
    // kernel, in the same order. Within a phase no thread reads a value that another thread
    // writes, so the barriers between phases are the only synchronisation needed (and one
    // thread per block gives the same result).
    const int nn = n * n;
    double* eta = state + (size_t)blockIdx.x * 3 * nn;
    double* u = eta + nn;
    double* v = u + nn;
    double* fx = flux + (size_t)blockIdx.x * 2 * nn;  // east face of cell c (0 on the wall)
    double* fy = fx + nn;                               // north face of cell c (0 on the wall)
    if (threadIdx.x == 0) bad[blockIdx.x] = 0;
    for (int step = 1; step <= n_steps; ++step) {
        int nonfinite = 0;
        for (int c = threadIdx.x; c < nn; c += blockDim.x) {
            const int j = c / n, i = c % n;
            const double ue = u[c], vn = v[c];
            fx[c] = (i < n - 1) ? ue * (H + (ue > 0.0 ? eta[c] : eta[c + 1])) : 0.0;
            fy[c] = (j < n - 1) ? vn * (H + (vn > 0.0 ? eta[c] : eta[c + n])) : 0.0;
        }
        __syncthreads();
        for (int c = threadIdx.x; c < nn; c += blockDim.x) {
            const int j = c / n, i = c % n;
            const double fx_west = (i > 0) ? fx[c - 1] : 0.0;
            const double fy_south = (j > 0) ? fy[c - n] : 0.0;
            eta[c] = eta[c] - r * ((fx[c] - fx_west) + (fy[c] - fy_south));
            nonfinite |= !isfinite(eta[c]);
        }
        __syncthreads();
        for (int c = threadIdx.x; c < nn; c += blockDim.x) {
            const int j = c / n, i = c % n;
            if (i == n - 1) continue;
            double v_sum = v[c] + v[c + 1];
            if (j > 0) v_sum = v_sum + (v[c - n] + v[c - n + 1]);
            u[c] = u[c] - gr * (eta[c + 1] - eta[c]) + fdt_u[j] * (0.25 * v_sum);
            nonfinite |= !isfinite(u[c]);
        }
        __syncthreads();
        for (int c = threadIdx.x; c < nn; c += blockDim.x) {
            const int j = c / n, i = c % n;
            if (j == n - 1) continue;
            const double u_sum = (i > 0) ? (u[c] + u[c - 1]) + (u[c + n] + u[c + n - 1])
                                         : u[c] + u[c + n];
            v[c] = v[c] - gr * (eta[c + n] - eta[c]) - fdt_v[j] * (0.25 * u_sum);
            nonfinite |= !isfinite(v[c]);
        }
        if (__syncthreads_or(nonfinite)) {
            if (threadIdx.x == 0) bad[blockIdx.x] = step;
            return;
        }
    }
}

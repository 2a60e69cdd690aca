// swe_advance.cu built for the CPU (cuda_host.h), launched as ldensf_hpc/models/shallow_water.py does.
#include "cuda_host.h"
#include "../swe_advance.cu"

extern "C" int swe_advance_launch(unsigned int blocks, unsigned int threads, double *state, double *flux,
                                  const double *fdt_u, const double *fdt_v, int n, int n_steps, double H, double r,
                                  double gr, long long *bad)
{
    cuda_host::launch(dim3(blocks), dim3(threads), swe_advance, state, flux, fdt_u, fdt_v, n, n_steps, H, r, gr, bad);
    return 0;
}

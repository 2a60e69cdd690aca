// ensf_fused.cu built for the CPU (cuda_host.h): one C entry point that launches the
// kernel of the given state width, with the arguments of ldensf_hpc/kernels/cuda.py.
#include "cuda_host.h"
#include "../ensf_fused.cu"

extern "C" int ensf_fused_launch(unsigned int blocks, unsigned int threads, int width, const float *prior, int K,
                                 int d, const float *obs, const float *inv_var, const float *table, int n_steps,
                                 int mixture, float clip, const float *noise, int has_noise,
                                 unsigned long long seed, int first, int n_rows, float *out)
{
    decltype(&ensf_fused_d4) kernel = nullptr;
    switch (width) {
        case 4: kernel = ensf_fused_d4; break;
        case 8: kernel = ensf_fused_d8; break;
        case 12: kernel = ensf_fused_d12; break;
        case 16: kernel = ensf_fused_d16; break;
        case 32: kernel = ensf_fused_d32; break;
        default: return 1;
    }
    cuda_host::launch(dim3(blocks), dim3(threads), kernel, prior, K, d, obs, inv_var, table, n_steps, mixture, clip,
                      noise, has_noise, seed, first, n_rows, out);
    return 0;
}

// Fused latent EnSF analysis (LD-EnSF paper eqs. 6-12, Algorithm 1) in one CUDA launch.
//
// One thread per ensemble member runs all Euler-Maruyama steps of the reverse SDE
//   score = (alpha mean - x) / beta2 + h (y - x) / sigma^2,
//   mean  = sum_k w_k p_k,  w = softmax_k(-|x - alpha p_k|^2 / (2 beta2))   (mixture)
//         or p_m (member-paired),
//   x    <- (1 - dt f) x + (dt g2) score + sqrt(dt g2) z,
// with the per-step coefficients of ldensf_hpc.kernels.step_table (ENSF_TABLE_COLUMNS per
// row: alpha, 1/beta2, 1/(2 beta2), 1 - dt f, dt g2, h, sqrt(dt g2)).
// The forecast ensemble streams through shared memory in tiles of ENSF_THREADS members;
// each thread folds a tile into its online softmax (running minimum distance, rescaled
// partial sums), so nothing K x K is ever stored. float32 data, float accumulators;
// Box-Muller in double so the normals equal those of the NumPy/Numba backends.
//
// Noise: a pre-drawn array (n_steps + 1, K, d) when has_noise, else Philox4x32-10
// (Salmon et al., SC'11) keyed by the 64-bit seed with counter (j / 4, step, member, 0),
// the stream of ldensf_hpc/kernels/reference.py:philox_normals.
//
// ensf_fused_d<D> handles d <= D (state kept in registers) and draws the samples of members
// first .. first + n_rows - 1 (all K keys enter the mixture score); launch ceil(n_rows /
// ENSF_THREADS) blocks of ENSF_THREADS threads; out holds n_rows rows. CI runs this file on
// the CPU through kernels/cuda/host/cuda_host.h (host threads per block, barriers, shared tiles).
// No #include: the file compiles with nvcc and NVRTC alike.

#define ENSF_THREADS 128
#define ENSF_TABLE_COLUMNS 7

__host__ __device__ inline void philox4x32_10(unsigned int ctr[4], unsigned int k0, unsigned int k1)
{
    for (int round = 0; round < 10; ++round) {
        const unsigned long long p0 = 0xD2511F53ull * ctr[0];
        const unsigned long long p1 = 0xCD9E8D57ull * ctr[2];
        const unsigned int c0 = (unsigned int)(p1 >> 32) ^ ctr[1] ^ k0;
        const unsigned int c2 = (unsigned int)(p0 >> 32) ^ ctr[3] ^ k1;
        ctr[1] = (unsigned int)p1;
        ctr[3] = (unsigned int)p0;
        ctr[0] = c0;
        ctr[2] = c2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
}

// Standard normals z[0 .. d-1] of noise index `step` for `member`.
template <int D>
__host__ __device__ inline void draw_normals(float z[D], int d, unsigned long long seed, int step, int member)
{
#pragma unroll
    for (int b = 0; b < (D + 3) / 4; ++b) {
        if (4 * b >= d) break;
        unsigned int words[4] = {(unsigned int)b, (unsigned int)step, (unsigned int)member, 0u};
        philox4x32_10(words, (unsigned int)(seed & 0xFFFFFFFFull), (unsigned int)(seed >> 32));
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const double u1 = ((double)words[2 * h] + 0.5) * 2.3283064365386963e-10;  // 2^-32
            const double u2 = ((double)words[2 * h + 1] + 0.5) * 2.3283064365386963e-10;
            const double radius = sqrt(-2.0 * log(u1));
            const double angle = 6.283185307179586 * u2;
            if (4 * b + 2 * h < D) z[4 * b + 2 * h] = (float)(radius * cos(angle));
            if (4 * b + 2 * h + 1 < D) z[4 * b + 2 * h + 1] = (float)(radius * sin(angle));
        }
    }
}

// Online softmax over forecast members (eq. 11-12): weights exp(-(dist - best) c) relative to
// the smallest squared distance `best` seen so far; partial sums rescaled when it drops.
template <int D>
struct OnlineSoftmax {
    float best;
    float total;
    float acc[D];

    __host__ __device__ inline void reset()
    {
        best = 3.0e38f;
        total = 0.0f;
#pragma unroll
        for (int j = 0; j < D; ++j) acc[j] = 0.0f;
    }

    __host__ __device__ inline void add(const float x[D], const float *key, int d, float a, float c)
    {
        float dist = 0.0f;
#pragma unroll
        for (int j = 0; j < D; ++j) {
            if (j < d) {
                const float e = x[j] - a * key[j];
                dist += e * e;
            }
        }
        if (dist < best) {
            const float scale = expf((dist - best) * c);
            total *= scale;
#pragma unroll
            for (int j = 0; j < D; ++j) acc[j] *= scale;
            best = dist;
        }
        const float w = expf((best - dist) * c);
        total += w;
#pragma unroll
        for (int j = 0; j < D; ++j) {
            if (j < d) acc[j] += w * key[j];
        }
    }
};

// One Euler-Maruyama step of the reverse SDE with the score of eq. (10), optionally clipped.
template <int D>
__host__ __device__ inline void euler_step(float x[D], const float mean[D], const float y[D], const float inv_var[D],
                                           const float z[D], int d, const float *row, float clip)
{
    const float a = row[0], inv_b2 = row[1], x_factor = row[3], score_factor = row[4];
    const float h = row[5], noise_scale = row[6];
#pragma unroll
    for (int j = 0; j < D; ++j) {
        if (j < d) {
            float score = (a * mean[j] - x[j]) * inv_b2 + h * (y[j] - x[j]) * inv_var[j];
            if (clip > 0.0f) score = fminf(fmaxf(score, -clip), clip);
            x[j] = x_factor * x[j] + score_factor * score + noise_scale * z[j];
        }
    }
}

template <int D>
__device__ inline void ensf_fused(const float *__restrict__ prior, int K, int d, const float *__restrict__ obs,
                                  const float *__restrict__ inv_var, const float *__restrict__ table, int n_steps,
                                  int mixture, float clip, const float *__restrict__ noise, int has_noise,
                                  unsigned long long seed, int first, int n_rows, float *__restrict__ out)
{
    __shared__ float tile[ENSF_THREADS * D];
    const int m = first + blockIdx.x * blockDim.x + threadIdx.x;  // the sample (member index) of this thread
    const int last = first + n_rows - 1;
    const int me = m <= last ? m : last;  // idle threads shadow the last sample; only m <= last is stored
    float x[D], z[D], y[D], iv[D], mean[D];
#pragma unroll
    for (int j = 0; j < D; ++j) {
        y[j] = j < d ? obs[j] : 0.0f;
        iv[j] = j < d ? inv_var[j] : 0.0f;
        x[j] = j < d && has_noise ? noise[(size_t)me * d + j] : 0.0f;
    }
    if (!has_noise) draw_normals<D>(x, d, seed, 0, me);

    for (int i = 0; i < n_steps; ++i) {
        const float *row = table + i * ENSF_TABLE_COLUMNS;
        const float a = row[0], c = row[2];
        if (mixture) {
            OnlineSoftmax<D> softmax;
            softmax.reset();
            for (int k0 = 0; k0 < K; k0 += ENSF_THREADS) {
                const int n = min(ENSF_THREADS, K - k0);
                __syncthreads();
                for (int e = threadIdx.x; e < n * d; e += blockDim.x) tile[e] = prior[(size_t)k0 * d + e];
                __syncthreads();
                for (int t = 0; t < n; ++t) softmax.add(x, tile + t * d, d, a, c);
            }
#pragma unroll
            for (int j = 0; j < D; ++j) mean[j] = softmax.acc[j] / softmax.total;
        } else {
#pragma unroll
            for (int j = 0; j < D; ++j) mean[j] = j < d ? prior[(size_t)me * d + j] : 0.0f;
        }
        if (has_noise) {
#pragma unroll
            for (int j = 0; j < D; ++j) z[j] = j < d ? noise[((size_t)(i + 1) * K + me) * d + j] : 0.0f;
        } else {
            draw_normals<D>(z, d, seed, i + 1, me);
        }
        euler_step<D>(x, mean, y, iv, z, d, row, clip);
    }
    if (m <= last) {
#pragma unroll
        for (int j = 0; j < D; ++j) {
            if (j < d) out[(size_t)(m - first) * d + j] = x[j];
        }
    }
}

#define ENSF_KERNEL(D)                                                                                              \
    extern "C" __global__ void __launch_bounds__(ENSF_THREADS)                                                     \
        ensf_fused_d##D(const float *prior, int K, int d, const float *obs, const float *inv_var, const float *table, \
                        int n_steps, int mixture, float clip, const float *noise, int has_noise,                     \
                        unsigned long long seed, int first, int n_rows, float *out)                                   \
    {                                                                                                               \
        ensf_fused<D>(prior, K, d, obs, inv_var, table, n_steps, mixture, clip, noise, has_noise, seed, first,     \
                      n_rows, out);                                                                                 \
    }

ENSF_KERNEL(4)
ENSF_KERNEL(8)
ENSF_KERNEL(12)
ENSF_KERNEL(16)
ENSF_KERNEL(32)

// CUDA C on the CPU: the subset of the CUDA programming model our kernels use, as host C++,
// so that the real .cu sources execute (and are tested) on a machine without a GPU.
//
// A launch runs the blocks of the grid one after another; each block's threads are
// blockDim host threads that run the kernel body concurrently, __syncthreads() is a
// barrier among them, and __shared__ arrays are static storage, shared by the threads of
// the block in flight (blocks never overlap, launches are serialised). Threads that race
// on the GPU race here too, so a missing barrier shows up as a result that changes.
// Math functions are the host libm's (expf may differ from the device's by an ulp or so).
//
//   #include "cuda_host.h"
//   #include "../my_kernel.cu"
//   cuda_host::launch(grid, block, my_kernel, args...);
#pragma once

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

using std::isfinite;
using std::max;
using std::min;

namespace cuda_host {

// The block in flight: its barrier and the slots of __syncthreads_or, used in turn. Thread 0
// clears the slot of call n - 1 just after the barrier of call n (every thread has read it
// by then), and no thread can write it again (call n + 2) before thread 0 reaches call n + 1.
struct Block {
    explicit Block(std::ptrdiff_t threads) : barrier(threads) {}
    std::barrier<> barrier;
    std::atomic<int> any[3] = {0, 0, 0};
};

inline thread_local Block *current = nullptr;
inline thread_local unsigned int or_calls = 0;

inline std::mutex &launch_lock()
{
    static std::mutex lock;
    return lock;
}

template <class... Params, class... Args>
void launch(dim3 grid, dim3 block, void (*kernel)(Params...), Args... args)
{
    std::lock_guard<std::mutex> serial(launch_lock());
    const unsigned int threads = block.x * block.y * block.z;
    for (unsigned int b = 0; b < grid.x * grid.y * grid.z; ++b) {
        Block state(threads);
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (unsigned int t = 0; t < threads; ++t) {
            pool.emplace_back([&, b, t] {
                current = &state;
                or_calls = 0;
                gridDim = grid;
                blockDim = block;
                blockIdx = dim3(b % grid.x, b / grid.x % grid.y, b / (grid.x * grid.y));
                threadIdx = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
                kernel(args...);
            });
        }
        for (auto &thread : pool) thread.join();
    }
}

}  // namespace cuda_host

inline void __syncthreads() { cuda_host::current->barrier.arrive_and_wait(); }

inline int __syncthreads_or(int predicate)
{
    cuda_host::Block &block = *cuda_host::current;
    const unsigned int n = cuda_host::or_calls++;
    if (predicate) block.any[n % 3].store(1);
    block.barrier.arrive_and_wait();
    const int any = block.any[n % 3].load();
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) block.any[(n + 2) % 3].store(0);
    return any;
}

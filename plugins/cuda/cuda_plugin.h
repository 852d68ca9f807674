// What the CUDA plugin's sources share: the device's context, error reporting, node state
// and launch helpers. Only the plugin's .cu files include this (it needs the CUDA headers);
// the arithmetic is in plans.h.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "plans.h"

namespace weft_cuda {

// A pinned host buffer that copy_from_host stages through; `done` is recorded after the copy
// that reads it, so the buffer is reused only once that copy has run.
struct Staging {
  void* host = nullptr;
  size_t bytes = 0;
  cudaEvent_t done = nullptr;
};

// The `cuda` device (CUDA device 0 of the process; CUDA_VISIBLE_DEVICES picks it): its one
// stream and the library handles every node shares. A cuBLAS or cuDNN handle is made by the
// first create() that needs one and kept for the life of the process, as the stream is:
// making one per node would cost each node a context's worth of setup and memory. (The cuDNN
// handle lives in dense.cu, the one source compiled with and without cuDNN.)
struct Context {
  std::mutex mutex;  // guards everything below, and a handle from its set-stream to its call
  const weft_host* host = nullptr;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  std::vector<Staging> staging;
};
Context& context();

// The cuBLAS handle, made on first use; false with the reason (no device, no memory).
bool cublas_handle(Context& c, cublasHandle_t& h, std::string& why);

// "what: <CUDA's message> (CUDA error N)", and cuBLAS's.
std::string cuda_error(const char* what, cudaError_t e);
std::string cublas_error(const char* what, cublasStatus_t s);

// Reports `message` for the node through the host and returns non-zero, as a kernel does.
int fail(const weft_call* call, const std::string& message);
// After a launch: 0, or the launch's error reported (a bad configuration, no device, an
// earlier kernel's fault surfacing here).
int launched(const weft_call* call, const char* kernel);

inline cudaStream_t stream_of(const weft_call* call) {
  return static_cast<cudaStream_t>(call->stream);
}

// Grid-stride launches: enough blocks to cover n, at most 65536 of them.
constexpr int kThreads = 256;
inline unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return unsigned(b < 1 ? 1 : b > 65536 ? 65536 : b);
}
#define WEFT_FOR_EACH(i, n)                                                 \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

// The block's sum in double, returned to every thread. Every thread of the block must call
// it, and blockDim.x must be a multiple of 32. (Each source that calls it has its own copy:
// the plugin is compiled without relocatable device code.)
__device__ inline double block_sum(double v) {
  __shared__ double warp_sums[32];
  __shared__ double total;
  for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xffffffffu, v, d);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // the previous call's readers are done with warp_sums and total
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < int(blockDim.x >> 5) ? warp_sums[lane] : 0.0;
    for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xffffffffu, v, d);
    if (lane == 0) total = v;
  }
  __syncthreads();
  return total;
}

// A node's state: made by create() from the setup's shapes and attributes, run for each
// call, deleted by destroy() when the plan goes.
struct Node {
  virtual ~Node() = default;
  virtual int run(const weft_call* call, const weft_tensor* in, int32_t n_in, weft_tensor* out,
                  int32_t n_out) = 0;
};

// Makes a node for a setup, or returns null with the reason it declines; may set the
// workspace it needs.
using NodeMaker = std::unique_ptr<Node> (*)(const weft_kernel_setup& setup, size_t* workspace,
                                            std::string& why);

// A kernel's create() for one maker: weft's create has no user data, so each maker gets its
// own instantiation.
template <NodeMaker Make>
int create_node(const weft_kernel_setup* setup, void** state, size_t* workspace, char* why,
                size_t why_size) {
  std::string reason;
  try {
    if (setup->dtype != WEFT_F32) {
      reason = "the CUDA plugin's kernels are f32";
    } else if (std::unique_ptr<Node> node = Make(*setup, workspace, reason)) {
      *state = node.release();
      return 0;
    }
  } catch (const std::exception& e) {  // std::bad_alloc, std::length_error
    reason = e.what();
  }
  std::snprintf(why, why_size, "%s", reason.empty() ? "declined" : reason.c_str());
  return 1;
}
int run_node(const weft_call* call, const weft_tensor* in, int32_t n_in, weft_tensor* out,
             int32_t n_out);
void destroy_node(void* state);

struct KernelSpec {
  const char* op;
  const char* name;  // shown by `weft ops` as weft-cuda:<name>
  weft_kernel_create_fn create;
};
// Each source's kernels, in the order weft should try them for an op.
void elementwise_kernels(std::vector<KernelSpec>& out);
void norm_optim_kernels(std::vector<KernelSpec>& out);
void dense_kernels(std::vector<KernelSpec>& out);

inline const float* in_f32(const weft_tensor* t, int i) {
  return static_cast<const float*>(t[i].data);
}
inline float* out_f32(const weft_tensor* t, int i) { return static_cast<float*>(t[i].data); }
// An input the kernel updates in place (running statistics, parameters, optimizer state).
inline float* io_f32(const weft_tensor* t, int i) { return static_cast<float*>(t[i].data); }

}  // namespace weft_cuda

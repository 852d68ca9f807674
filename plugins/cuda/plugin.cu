// weft-cuda: the `cuda` device and the registration of its f32 kernels.
//
// The plugin loads and registers on any machine: weft_plugin_init calls no CUDA function.
// Without a GPU (or a driver) `available` says why, and weft refuses --device cuda with it.
#include <cstring>

#include "cuda_plugin.h"

namespace weft_cuda {

Context& context() {
  static Context c;
  return c;
}

std::string cuda_error(const char* what, cudaError_t e) {
  return std::string(what) + ": " + cudaGetErrorString(e) + " (CUDA error " +
         std::to_string(int(e)) + ")";
}
std::string cublas_error(const char* what, cublasStatus_t s) {
  return std::string(what) + ": " + cublasGetStatusString(s) + " (cuBLAS status " +
         std::to_string(int(s)) + ")";
}

int fail(const weft_call* call, const std::string& message) {
  if (call && call->host && call->host->report_error)
    call->host->report_error(call, message.c_str());
  return 1;
}

int launched(const weft_call* call, const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? 0 : fail(call, cuda_error(kernel, e));
}

bool cublas_handle(Context& c, cublasHandle_t& h, std::string& why) {
  std::lock_guard<std::mutex> lock(c.mutex);
  if (!c.cublas) {
    cublasHandle_t made = nullptr;
    cublasStatus_t s = cublasCreate(&made);
    if (s != CUBLAS_STATUS_SUCCESS) {
      why = cublas_error("cublasCreate", s);
      return false;
    }
    // Plain f32 arithmetic: no TF32 tensor cores (weft's CPU kernels are f32 throughout).
    s = cublasSetMathMode(made, CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
      cublasDestroy(made);
      why = cublas_error("cublasSetMathMode", s);
      return false;
    }
    c.cublas = made;
  }
  h = c.cublas;
  return true;
}

int run_node(const weft_call* call, const weft_tensor* in, int32_t n_in, weft_tensor* out,
             int32_t n_out) {
  if (!call->state) return fail(call, "called without the state its create() made");
  return static_cast<Node*>(call->state)->run(call, in, n_in, out, n_out);
}

void destroy_node(void* state) { delete static_cast<Node*>(state); }

namespace {

// ---- the device ----------------------------------------------------------------------

Context& ctx_of(void* p) { return *static_cast<Context*>(p); }

// Device functions have no report_error: the reason goes to the host's log, the error
// number back to weft (which names the failed function).
int device_fail(Context& c, const char* what, cudaError_t e) {
  if (c.host && c.host->log) c.host->log("weft-cuda", cuda_error(what, e).c_str());
  return int(e) ? int(e) : 1;
}

// Compiled for sm_90 with its PTX: Hopper and, by JIT, newer GPUs; older ones cannot run it.
constexpr int kMinMajor = 9;

int device_available(void* p, char* why, size_t why_size) {
  (void)p;
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    std::snprintf(why, why_size, "no CUDA device: %s (cudaGetDeviceCount error %d)",
                  cudaGetErrorString(e), int(e));
    return 1;
  }
  if (count < 1) {
    std::snprintf(why, why_size, "no CUDA device: cudaGetDeviceCount found none");
    return 1;
  }
  int major = 0, minor = 0;
  cudaError_t a = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  if (a == cudaSuccess) a = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
  if (a != cudaSuccess) {
    std::snprintf(why, why_size, "%s", cuda_error("cudaDeviceGetAttribute", a).c_str());
    return 1;
  }
  if (major < kMinMajor) {
    std::snprintf(why, why_size,
                  "CUDA device 0 has compute capability %d.%d; weft-cuda is built for sm_90 "
                  "(9.0) and newer",
                  major, minor);
    return 1;
  }
  return 0;
}

void* device_alloc(void* p, size_t bytes) {
  void* d = nullptr;
  const cudaError_t e = cudaMalloc(&d, bytes);
  if (e != cudaSuccess) {
    device_fail(ctx_of(p), "cudaMalloc", e);
    return nullptr;
  }
  return d;
}

void device_free(void* p, void* d) {
  // cudaFree waits for the device, so work still queued on this memory finishes first.
  const cudaError_t e = cudaFree(d);
  if (e != cudaSuccess) device_fail(ctx_of(p), "cudaFree", e);
}

void* device_stream_create(void* p) {
  Context& c = ctx_of(p);
  std::lock_guard<std::mutex> lock(c.mutex);
  if (!c.stream) {
    cudaStream_t s = nullptr;
    // Non-blocking: the legacy default stream (which other libraries in the process may
    // use) never serializes against weft's work.
    const cudaError_t e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
      device_fail(c, "cudaStreamCreateWithFlags", e);
      return nullptr;
    }
    c.stream = s;
  }
  return c.stream;
}

// To pageable host memory, cudaMemcpyAsync returns only when the copy is done; weft syncs
// before it reads anyway.
int device_copy_to_host(void* p, void* stream, void* host_dst, const void* device_src,
                        size_t bytes) {
  const cudaError_t e = cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost,
                                        static_cast<cudaStream_t>(stream));
  return e == cudaSuccess ? 0 : device_fail(ctx_of(p), "cudaMemcpyAsync (to the host)", e);
}

// weft reuses host_src as soon as this returns. From pageable memory cudaMemcpyAsync has
// copied the source into CUDA's own staging memory when it returns, but from page-locked
// memory it returns at once and the DMA engine reads the source later; weft's buffers are
// pageable today, but nothing in the ABI says so. So the source is copied here into a
// pinned staging buffer of the plugin's, and the asynchronous copy reads that. A buffer is
// reused only after the event recorded behind its last copy has passed: the pool grows to
// the number of copies in flight (one or two per step) and then stays.
int device_copy_from_host(void* p, void* stream, void* device_dst, const void* host_src,
                          size_t bytes) {
  Context& c = ctx_of(p);
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  std::lock_guard<std::mutex> lock(c.mutex);
  Staging* use = nullptr;
  for (Staging& st : c.staging) {
    if (st.bytes < bytes) continue;
    const cudaError_t q = cudaEventQuery(st.done);
    if (q == cudaSuccess) {
      use = &st;
      break;
    }
    if (q != cudaErrorNotReady) return device_fail(c, "cudaEventQuery", q);
    (void)cudaGetLastError();  // "not ready" is no error; keep it from a later launch check
  }
  if (!use) {
    Staging st;
    st.bytes = bytes < (1u << 16) ? (1u << 16) : bytes;
    cudaError_t e = cudaHostAlloc(&st.host, st.bytes, cudaHostAllocDefault);
    if (e != cudaSuccess) return device_fail(c, "cudaHostAlloc", e);
    e = cudaEventCreateWithFlags(&st.done, cudaEventDisableTiming);
    if (e != cudaSuccess) {
      cudaFreeHost(st.host);
      return device_fail(c, "cudaEventCreateWithFlags", e);
    }
    c.staging.push_back(st);
    use = &c.staging.back();
  }
  std::memcpy(use->host, host_src, bytes);
  cudaError_t e = cudaMemcpyAsync(device_dst, use->host, bytes, cudaMemcpyHostToDevice, s);
  if (e != cudaSuccess) return device_fail(c, "cudaMemcpyAsync (from the host)", e);
  e = cudaEventRecord(use->done, s);
  return e == cudaSuccess ? 0 : device_fail(c, "cudaEventRecord", e);
}

int device_copy(void* p, void* stream, void* device_dst, const void* device_src, size_t bytes) {
  if (device_dst == device_src) return 0;
  const cudaError_t e = cudaMemcpyAsync(device_dst, device_src, bytes, cudaMemcpyDeviceToDevice,
                                        static_cast<cudaStream_t>(stream));
  return e == cudaSuccess ? 0 : device_fail(ctx_of(p), "cudaMemcpyAsync (on the device)", e);
}

int device_zero(void* p, void* stream, void* device_dst, size_t bytes) {
  const cudaError_t e = cudaMemsetAsync(device_dst, 0, bytes, static_cast<cudaStream_t>(stream));
  return e == cudaSuccess ? 0 : device_fail(ctx_of(p), "cudaMemsetAsync", e);
}

// Also where a kernel's fault (an illegal address) surfaces, since kernels never wait.
int device_sync(void* p, void* stream) {
  const cudaError_t e = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
  return e == cudaSuccess ? 0 : device_fail(ctx_of(p), "cudaStreamSynchronize", e);
}

const weft_plugin_info kInfo = {WEFT_PLUGIN_ABI_VERSION, "weft-cuda", "1.0"};

}  // namespace
}  // namespace weft_cuda

using namespace weft_cuda;

extern "C" WEFT_EXPORT const weft_plugin_info* weft_plugin_describe(void) { return &kInfo; }

extern "C" WEFT_EXPORT int weft_plugin_init(const weft_host* host, weft_registrar* reg) {
  Context& c = context();
  c.host = host;
  const weft_device_def device = {sizeof(weft_device_def),
                                  "cuda",
                                  &c,
                                  device_available,
                                  device_alloc,
                                  device_free,
                                  device_stream_create,
                                  device_copy_to_host,
                                  device_copy_from_host,
                                  device_copy,
                                  device_zero,
                                  device_sync};
  int32_t kind = 0;
  if (reg->add_device(reg, &device, &kind) != 0) return 1;
  try {  // no C++ exception may cross the C ABI
    std::vector<KernelSpec> specs;
    elementwise_kernels(specs);
    norm_optim_kernels(specs);
    dense_kernels(specs);
    for (const KernelSpec& s : specs) {
      const weft_kernel_def k = {
          sizeof(weft_kernel_def), s.op, kind, WEFT_F32, s.name, run_node, s.create, destroy_node};
      if (reg->add_kernel(reg, &k) != 0) return 1;
    }
  } catch (const std::exception&) {
    return 1;
  }
  return 0;
}

// Matrix products and convolutions: matmul, linear and linear_act through cuBLAS; conv2d,
// conv2d_backward_data, conv2d_backward_weights and conv_transpose2d through cuDNN (when
// built with WEFT_CUDA_CUDNN) and through im2col + cuBLAS. With cuDNN both are registered,
// cuDNN first: a node cuDNN declines (a geometry its descriptors cannot state, or
// WEFT_CUDA_CONV=im2col in the environment) falls to im2col.
#include <climits>
#include <cstdlib>

#include "cuda_plugin.h"
#if WEFT_CUDA_CUDNN
#include <cudnn.h>
#endif

namespace weft_cuda {
namespace {

// ---- cuBLAS on row-major tensors ---------------------------------------------------------

// C [m, n] = op(A) op(B) + beta C, row-major (plans.h's blas_gemm turns it into cuBLAS's
// column-major arguments). With batch > 1, `batch` products whose operands lie stride_*
// elements apart.
cublasStatus_t gemm(cublasHandle_t h, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                    const float* a, int64_t stride_a, const float* b, int64_t stride_b, float beta,
                    float* c, int64_t stride_c, int64_t batch) {
  const float one = 1.0f;
  const BlasGemm g = blas_gemm(ta, tb, m, n, k);
  const cublasOperation_t first = g.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N,
                          second = g.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (batch == 1)
    return cublasSgemm(h, first, second, int(g.m), int(g.n), int(g.k), &one, b, int(g.ld_first), a,
                       int(g.ld_second), &beta, c, int(g.ldc));
  return cublasSgemmStridedBatched(h, first, second, int(g.m), int(g.n), int(g.k), &one, b,
                                   int(g.ld_first), stride_b, a, int(g.ld_second), stride_a, &beta,
                                   c, int(g.ldc), stride_c, int(batch));
}

bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

// Runs `body` with the handle on the call's stream, holding the context's lock so that no
// other thread moves the handle to another stream in between.
template <class F>
int with_cublas(const weft_call* call, cublasHandle_t h, const char* what, F body) {
  std::lock_guard<std::mutex> lock(context().mutex);
  cublasStatus_t s = cublasSetStream(h, stream_of(call));
  if (s != CUBLAS_STATUS_SUCCESS) return fail(call, cublas_error("cublasSetStream", s));
  s = body();
  return s == CUBLAS_STATUS_SUCCESS ? 0 : fail(call, cublas_error(what, s));
}

// ---- matmul, linear, linear_act ----------------------------------------------------------

// y [rows, cols] = act(y + bias), linear's epilogue (bias may be null).
__global__ void bias_act_kernel(int kind, double alpha, const float* bias, float* y, int64_t cols,
                                int64_t n) {
  WEFT_FOR_EACH(i, n) y[i] = bias_act_value(kind, alpha, y[i], bias, i % cols);
}

struct MatmulNode : Node {
  cublasHandle_t h = nullptr;
  Matmul g;
  int run(const weft_call* call, const weft_tensor* in, int32_t, weft_tensor* out,
          int32_t) override {
    float* y = out_f32(out, 0);
    if (with_cublas(call, h, "cublasSgemm", [&] {
          return gemm(h, g.ta, g.tb, g.m, g.n, g.k, in_f32(in, 0), 0, in_f32(in, 1), 0, 0.0f, y, 0,
                      1);
        }))
      return 1;
    if (!g.bias && g.act == kIdentity) return 0;
    const int64_t count = g.m * g.n;
    bias_act_kernel<<<blocks_for(count), kThreads, 0, stream_of(call)>>>(
        g.act, g.alpha, g.bias ? in_f32(in, 2) : nullptr, y, g.n, count);
    return launched(call, "bias_act_kernel");
  }
};

std::unique_ptr<Node> make_matmul_node(const weft_kernel_setup& s, size_t*, std::string& why) {
  auto node = std::make_unique<MatmulNode>();
  if (!make_matmul(s, node->g, why)) return nullptr;
  if (!fits_int(node->g.m) || !fits_int(node->g.n) || !fits_int(node->g.k)) {
    why = "a dimension over cuBLAS's int range";
    return nullptr;
  }
  if (!cublas_handle(context(), node->h, why)) return nullptr;
  return node;
}

// ---- convolutions by im2col --------------------------------------------------------------

__global__ void im2col_kernel(Conv q, const float* x, int64_t n0, int64_t k_stride,
                              int64_t n_stride, float* col, int64_t total) {
  WEFT_FOR_EACH(i, total) im2col_element(q, x, n0, k_stride, n_stride, i, col);
}

__global__ void col2im_kernel(Conv q, const float* col, int64_t k_stride, int64_t n_stride,
                              int64_t n0, float* x, int64_t total) {
  WEFT_FOR_EACH(i, total) col2im_element(q, col, k_stride, n_stride, n0, i, x);
}

__global__ void gather_rows_kernel(Conv q, const float* dy, int64_t n0, int64_t images, float* dyt,
                                   int64_t total) {
  WEFT_FOR_EACH(i, total) gather_rows_element(q, dy, n0, images, i, dyt);
}

__global__ void channel_bias_kernel(const float* bias, int64_t channels, int64_t hw, float* y,
                                    int64_t total) {
  WEFT_FOR_EACH(i, total) channel_bias_element(bias, channels, hw, i, y);
}

// A turn's workspace is at most this many bytes; more images are done in more turns.
constexpr int64_t kIm2colBudget = int64_t(256) << 20;

// Each turn of images n0..: im2col (and dy's rows) into the workspace, the product of
// plans.h's conv_gemm, and for data and conv_transpose2d col2im into the output.
struct Im2colNode : Node {
  cublasHandle_t h = nullptr;
  ConvRole role = kConvForward;
  Conv q;
  bool bias = false;
  int64_t chunk = 1;  // images per turn
  int run(const weft_call* call, const weft_tensor* in, int32_t, weft_tensor* out,
          int32_t) override {
    if (call->workspace_bytes < size_t(chunk * im2col_floats_per_image(q, role)) * sizeof(float))
      return fail(call, "im2col ran without its workspace");
    const int64_t kk = q.patch(), pp = q.pixels();
    float* col = static_cast<float*>(call->workspace);
    const cudaStream_t s = stream_of(call);
    for (int64_t n0 = 0; n0 < q.n; n0 += chunk) {
      const int64_t images = q.n - n0 < chunk ? q.n - n0 : chunk;
      const int64_t ks = col_k_stride(q, role, images), ns = col_n_stride(q, role);
      const ConvGemm g = conv_gemm(q, role, images);
      if (role == kConvForward) {
        im2col_kernel<<<blocks_for(images * kk * pp), kThreads, 0, s>>>(q, in_f32(in, 0), n0, ks,
                                                                        ns, col, images * kk * pp);
        if (launched(call, "im2col_kernel")) return 1;
        float* y = out_f32(out, 0) + n0 * q.o * pp;
        if (with_cublas(call, h, "cublasSgemmStridedBatched", [&] {
              return gemm(h, g.ta, g.tb, g.m, g.n, g.k, in_f32(in, 1), g.stride_a, col, g.stride_b,
                          0.0f, y, g.stride_c, g.batch);
            }))
          return 1;
      } else if (role == kConvWeights) {
        float* dyt = col + images * kk * pp;
        im2col_kernel<<<blocks_for(images * kk * pp), kThreads, 0, s>>>(q, in_f32(in, 0), n0, ks,
                                                                        ns, col, images * kk * pp);
        if (launched(call, "im2col_kernel")) return 1;
        gather_rows_kernel<<<blocks_for(images * q.o * pp), kThreads, 0, s>>>(
            q, in_f32(in, 1), n0, images, dyt, images * q.o * pp);
        if (launched(call, "gather_rows_kernel")) return 1;
        // The first turn writes dw, the later ones add to it.
        if (with_cublas(call, h, "cublasSgemm", [&] {
              return gemm(h, g.ta, g.tb, g.m, g.n, g.k, dyt, 0, col, 0, n0 == 0 ? 0.0f : 1.0f,
                          out_f32(out, 0), 0, 1);
            }))
          return 1;
      } else {
        const float* dy = in_f32(in, 0) + n0 * q.o * pp;
        if (with_cublas(call, h, "cublasSgemmStridedBatched", [&] {
              return gemm(h, g.ta, g.tb, g.m, g.n, g.k, in_f32(in, 1), g.stride_a, dy, g.stride_b,
                          0.0f, col, g.stride_c, g.batch);
            }))
          return 1;
        const int64_t total = images * q.c * q.h * q.w;
        col2im_kernel<<<blocks_for(total), kThreads, 0, s>>>(q, col, ks, ns, n0, out_f32(out, 0),
                                                             total);
        if (launched(call, "col2im_kernel")) return 1;
      }
    }
    if (!bias) return 0;
    // conv2d's bias is over y's channels (o), conv_transpose2d's over its output, x (c).
    const bool on_y = role == kConvForward;
    const int64_t channels = on_y ? q.o : q.c, hw = on_y ? pp : q.h * q.w;
    const int64_t total = q.n * channels * hw;
    channel_bias_kernel<<<blocks_for(total), kThreads, 0, s>>>(in_f32(in, 2), channels, hw,
                                                               out_f32(out, 0), total);
    return launched(call, "channel_bias_kernel");
  }
};

std::unique_ptr<Node> make_im2col(const weft_kernel_setup& s, size_t* workspace, std::string& why) {
  auto node = std::make_unique<Im2colNode>();
  if (!conv_role(s.op, node->role)) {
    why = "not a convolution";
    return nullptr;
  }
  if (!make_conv(s, node->role, node->q, why)) return nullptr;
  const Conv& q = node->q;
  node->bias = (node->role == kConvForward || node->role == kConvTranspose) && s.n_in > 2;
  node->chunk = im2col_chunk(q, node->role, kIm2colBudget);
  const ConvGemm g = conv_gemm(q, node->role, node->chunk);
  if (!fits_int(g.m) || !fits_int(g.n) || !fits_int(g.k) || !fits_int(g.batch)) {
    why = "a dimension over cuBLAS's int range";
    return nullptr;
  }
  *workspace = size_t(node->chunk * im2col_floats_per_image(q, node->role)) * sizeof(float);
  if (!cublas_handle(context(), node->h, why)) return nullptr;
  return node;
}

// ---- convolutions by cuDNN ---------------------------------------------------------------

#if WEFT_CUDA_CUDNN

std::string cudnn_error(const char* what, cudnnStatus_t s) {
  return std::string(what) + ": " + cudnnGetErrorString(s) + " (cuDNN status " +
         std::to_string(int(s)) + ")";
}

// The device's cuDNN handle, made by the first node that needs it and kept, as the cuBLAS
// handle is (cuda_plugin.h); guarded by the context's mutex.
cudnnHandle_t g_cudnn = nullptr;

bool cudnn_handle(cudnnHandle_t& h, std::string& why) {
  std::lock_guard<std::mutex> lock(context().mutex);
  if (!g_cudnn) {
    cudnnHandle_t made = nullptr;
    const cudnnStatus_t s = cudnnCreate(&made);
    if (s != CUDNN_STATUS_SUCCESS) {
      why = cudnn_error("cudnnCreate", s);
      return false;
    }
    g_cudnn = made;
  }
  h = g_cudnn;
  return true;
}

// The largest workspace an algorithm may ask for; one asking more is passed over.
constexpr size_t kCudnnWorkspaceLimit = size_t(1) << 30;

struct CudnnNode : Node {
  cudnnHandle_t h = nullptr;
  ConvRole role = kConvForward;
  Conv q;
  bool bias = false;
  cudnnTensorDescriptor_t x_desc = nullptr, y_desc = nullptr, bias_desc = nullptr;
  cudnnFilterDescriptor_t w_desc = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t fwd_algo{};
  cudnnConvolutionBwdDataAlgo_t data_algo{};
  cudnnConvolutionBwdFilterAlgo_t filter_algo{};
  size_t workspace = 0;

  ~CudnnNode() override {
    if (x_desc) cudnnDestroyTensorDescriptor(x_desc);
    if (y_desc) cudnnDestroyTensorDescriptor(y_desc);
    if (bias_desc) cudnnDestroyTensorDescriptor(bias_desc);
    if (w_desc) cudnnDestroyFilterDescriptor(w_desc);
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
  }

  int run(const weft_call* call, const weft_tensor* in, int32_t, weft_tensor* out,
          int32_t) override {
    if (call->workspace_bytes < workspace) return fail(call, "cuDNN ran without its workspace");
    const float one = 1.0f, zero = 0.0f;
    void* ws = workspace ? call->workspace : nullptr;
    std::lock_guard<std::mutex> lock(context().mutex);
    cudnnStatus_t st = cudnnSetStream(h, stream_of(call));
    if (st != CUDNN_STATUS_SUCCESS) return fail(call, cudnn_error("cudnnSetStream", st));
    const char* what = "";
    switch (role) {
      case kConvForward:
        what = "cudnnConvolutionForward";
        st = cudnnConvolutionForward(h, &one, x_desc, in_f32(in, 0), w_desc, in_f32(in, 1), conv,
                                     fwd_algo, ws, workspace, &zero, y_desc, out_f32(out, 0));
        break;
      case kConvTranspose:
      case kConvData:
        what = "cudnnConvolutionBackwardData";
        st = cudnnConvolutionBackwardData(h, &one, w_desc, in_f32(in, 1), y_desc, in_f32(in, 0),
                                          conv, data_algo, ws, workspace, &zero, x_desc,
                                          out_f32(out, 0));
        break;
      case kConvWeights:
        what = "cudnnConvolutionBackwardFilter";
        st = cudnnConvolutionBackwardFilter(h, &one, x_desc, in_f32(in, 0), y_desc, in_f32(in, 1),
                                            conv, filter_algo, ws, workspace, &zero, w_desc,
                                            out_f32(out, 0));
        break;
    }
    if (st != CUDNN_STATUS_SUCCESS) return fail(call, cudnn_error(what, st));
    if (!bias) return 0;
    // conv2d's bias is over y's channels, conv_transpose2d's over its output, x.
    st = cudnnAddTensor(h, &one, bias_desc, in_f32(in, 2), &one,
                        role == kConvForward ? y_desc : x_desc, out_f32(out, 0));
    return st == CUDNN_STATUS_SUCCESS ? 0 : fail(call, cudnn_error("cudnnAddTensor", st));
  }
};

bool dims_fit_cudnn(const Conv& q) {
  // The legacy descriptors take int sizes, and tensors of fewer than 2^31 elements.
  const int64_t big[] = {q.n * q.c * q.h * q.w, q.n * q.o * q.oh * q.ow, q.o * q.c * q.kh * q.kw};
  for (int64_t v : big)
    if (!fits_int(v)) return false;
  return true;
}

// Checks one cuDNN call while a node is made; false with the reason.
bool ok(cudnnStatus_t s, const char* what, std::string& why) {
  if (s == CUDNN_STATUS_SUCCESS) return true;
  why = cudnn_error(what, s);
  return false;
}

// The first algorithm of cuDNN's heuristic ranking that this convolution supports with f32
// FMA arithmetic (no tensor cores: no TF32) and whose workspace is within the limit.
template <class Perf, class Algo, class Find, class Size>
bool choose_algorithm(Find find, Size size_of, int count, Algo& algo, size_t& workspace,
                      std::string& why, const char* what) {
  std::vector<Perf> perf(static_cast<size_t>(count));
  int found = 0;
  if (!ok(find(count, &found, perf.data()), what, why)) return false;
  for (int i = 0; i < found; ++i) {
    if (perf[size_t(i)].status != CUDNN_STATUS_SUCCESS) continue;
    if (perf[size_t(i)].mathType == CUDNN_TENSOR_OP_MATH ||
        perf[size_t(i)].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
      continue;
    size_t bytes = 0;
    if (size_of(perf[size_t(i)].algo, &bytes) != CUDNN_STATUS_SUCCESS) continue;
    if (bytes > kCudnnWorkspaceLimit) continue;
    algo = perf[size_t(i)].algo;
    workspace = bytes;
    return true;
  }
  why = std::string(what) + " offered no algorithm for this convolution in f32";
  return false;
}

std::unique_ptr<Node> make_cudnn(const weft_kernel_setup& s, size_t* workspace, std::string& why) {
  if (const char* force = std::getenv("WEFT_CUDA_CONV"))
    if (std::string(force) == "im2col") {
      why = "WEFT_CUDA_CONV=im2col";
      return nullptr;
    }
  auto node = std::make_unique<CudnnNode>();
  if (!conv_role(s.op, node->role)) {
    why = "not a convolution";
    return nullptr;
  }
  if (!make_conv(s, node->role, node->q, why)) return nullptr;
  const Conv& q = node->q;
  if (!dims_fit_cudnn(q)) {
    why = "a tensor over cuDNN's 2^31 elements";
    return nullptr;
  }
  node->bias = (node->role == kConvForward || node->role == kConvTranspose) && s.n_in > 2;
  if (!cudnn_handle(node->h, why)) return nullptr;
  // The handle is not to be used by two threads at once: the algorithm queries below take
  // the lock that runs take.
  std::lock_guard<std::mutex> lock(context().mutex);
  CudnnNode& c = *node;
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
  if (!ok(cudnnCreateTensorDescriptor(&c.x_desc), "cudnnCreateTensorDescriptor", why) ||
      !ok(cudnnCreateTensorDescriptor(&c.y_desc), "cudnnCreateTensorDescriptor", why) ||
      !ok(cudnnCreateFilterDescriptor(&c.w_desc), "cudnnCreateFilterDescriptor", why) ||
      !ok(cudnnCreateConvolutionDescriptor(&c.conv), "cudnnCreateConvolutionDescriptor", why) ||
      !ok(cudnnSetTensor4dDescriptor(c.x_desc, CUDNN_TENSOR_NCHW, f32, int(q.n), int(q.c), int(q.h),
                                     int(q.w)),
          "cudnnSetTensor4dDescriptor", why) ||
      !ok(cudnnSetTensor4dDescriptor(c.y_desc, CUDNN_TENSOR_NCHW, f32, int(q.n), int(q.o),
                                     int(q.oh), int(q.ow)),
          "cudnnSetTensor4dDescriptor", why) ||
      !ok(cudnnSetFilter4dDescriptor(c.w_desc, f32, CUDNN_TENSOR_NCHW, int(q.o), int(q.c),
                                     int(q.kh), int(q.kw)),
          "cudnnSetFilter4dDescriptor", why) ||
      !ok(cudnnSetConvolution2dDescriptor(c.conv, int(q.ph), int(q.pw), int(q.sh), int(q.sw),
                                          int(q.dh), int(q.dw), CUDNN_CROSS_CORRELATION, f32),
          "cudnnSetConvolution2dDescriptor", why) ||
      // FMA math: f32 arithmetic throughout. cuDNN's default math permits TF32 tensor cores
      // for f32 convolutions on Ampere and newer.
      !ok(cudnnSetConvolutionMathType(c.conv, CUDNN_FMA_MATH), "cudnnSetConvolutionMathType", why))
    return nullptr;
  if (c.bias) {
    const int channels = int(c.role == kConvForward ? q.o : q.c);
    if (!ok(cudnnCreateTensorDescriptor(&c.bias_desc), "cudnnCreateTensorDescriptor", why) ||
        !ok(cudnnSetTensor4dDescriptor(c.bias_desc, CUDNN_TENSOR_NCHW, f32, 1, channels, 1, 1),
            "cudnnSetTensor4dDescriptor", why))
      return nullptr;
  }
  // cuDNN derives y's size from x's; conv_transpose2d's output_padding can ask for an x that
  // maps to another y (when it is not below the stride). Such nodes are left to im2col.
  int dims[4] = {};
  if (!ok(cudnnGetConvolution2dForwardOutputDim(c.conv, c.x_desc, c.w_desc, &dims[0], &dims[1],
                                                &dims[2], &dims[3]),
          "cudnnGetConvolution2dForwardOutputDim", why))
    return nullptr;
  if (dims[0] != q.n || dims[1] != q.o || dims[2] != q.oh || dims[3] != q.ow) {
    why = "cuDNN's convolution of [" + std::to_string(q.n) + ", " + std::to_string(q.c) + ", " +
          std::to_string(q.h) + ", " + std::to_string(q.w) + "] is not this node's [" +
          std::to_string(q.n) + ", " + std::to_string(q.o) + ", " + std::to_string(q.oh) + ", " +
          std::to_string(q.ow) + "]";
    return nullptr;
  }
  bool chosen = false;
  switch (c.role) {
    case kConvForward:
      chosen = choose_algorithm<cudnnConvolutionFwdAlgoPerf_t>(
          [&](int n, int* found, cudnnConvolutionFwdAlgoPerf_t* p) {
            return cudnnGetConvolutionForwardAlgorithm_v7(c.h, c.x_desc, c.w_desc, c.conv, c.y_desc,
                                                          n, found, p);
          },
          [&](cudnnConvolutionFwdAlgo_t a, size_t* bytes) {
            return cudnnGetConvolutionForwardWorkspaceSize(c.h, c.x_desc, c.w_desc, c.conv,
                                                           c.y_desc, a, bytes);
          },
          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, c.fwd_algo, c.workspace, why,
          "cudnnGetConvolutionForwardAlgorithm_v7");
      break;
    case kConvTranspose:
    case kConvData:
      chosen = choose_algorithm<cudnnConvolutionBwdDataAlgoPerf_t>(
          [&](int n, int* found, cudnnConvolutionBwdDataAlgoPerf_t* p) {
            return cudnnGetConvolutionBackwardDataAlgorithm_v7(c.h, c.w_desc, c.y_desc, c.conv,
                                                               c.x_desc, n, found, p);
          },
          [&](cudnnConvolutionBwdDataAlgo_t a, size_t* bytes) {
            return cudnnGetConvolutionBackwardDataWorkspaceSize(c.h, c.w_desc, c.y_desc, c.conv,
                                                                c.x_desc, a, bytes);
          },
          CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, c.data_algo, c.workspace, why,
          "cudnnGetConvolutionBackwardDataAlgorithm_v7");
      break;
    case kConvWeights:
      chosen = choose_algorithm<cudnnConvolutionBwdFilterAlgoPerf_t>(
          [&](int n, int* found, cudnnConvolutionBwdFilterAlgoPerf_t* p) {
            return cudnnGetConvolutionBackwardFilterAlgorithm_v7(c.h, c.x_desc, c.y_desc, c.conv,
                                                                 c.w_desc, n, found, p);
          },
          [&](cudnnConvolutionBwdFilterAlgo_t a, size_t* bytes) {
            return cudnnGetConvolutionBackwardFilterWorkspaceSize(c.h, c.x_desc, c.y_desc, c.conv,
                                                                  c.w_desc, a, bytes);
          },
          CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, c.filter_algo, c.workspace, why,
          "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
      break;
  }
  if (!chosen) return nullptr;
  *workspace = c.workspace;
  return node;
}

#endif  // WEFT_CUDA_CUDNN

}  // namespace

void dense_kernels(std::vector<KernelSpec>& out) {
  for (const char* op : {"matmul", "linear", "linear_act"})
    out.push_back({op, "cuda", &create_node<make_matmul_node>});
  for (const char* op :
       {"conv2d", "conv2d_backward_data", "conv2d_backward_weights", "conv_transpose2d"}) {
#if WEFT_CUDA_CUDNN
    out.push_back({op, "cudnn", &create_node<make_cudnn>});
#endif
    out.push_back({op, "im2col", &create_node<make_im2col>});
  }
}

}  // namespace weft_cuda

// Batch norm (batch_norm, batch_norm_act, batch_norm_backward), the optimizers' updates
// (sgd_update, adam_update, rmsprop_update) and sum_squares. The arithmetic of each is in
// plans.h.
#include "cuda_plugin.h"

namespace weft_cuda {
namespace {

// ---- batch norm ------------------------------------------------------------------------

// One block per channel: its mean and variance (two passes in double, as the reference),
// the running statistics' update, and the scale the apply kernel multiplies by (into the
// workspace).
__global__ void bn_stats_kernel(BatchNorm q, bool training, double momentum, double eps,
                                const float* x, const float* gamma, float* running_mean,
                                float* running_var, float* mean, float* var, float* scale) {
  const int64_t count = q.count();
  for (int64_t k = blockIdx.x; k < q.c; k += gridDim.x) {
    double mu = 0, squares = 0;
    if (training) {
      double s = 0;
      for (int64_t e = threadIdx.x; e < count; e += blockDim.x) s += double(x[bn_offset(q, k, e)]);
      mu = block_sum(s) / double(count);
      s = 0;
      for (int64_t e = threadIdx.x; e < count; e += blockDim.x) {
        const double d = double(x[bn_offset(q, k, e)]) - mu;
        s += d * d;
      }
      squares = block_sum(s);
    }
    if (threadIdx.x == 0)
      bn_finish_channel(training, mu, squares, count, momentum, eps, gamma[k], &mean[k], &var[k],
                        &running_mean[k], &running_var[k], &scale[k]);
  }
}

__global__ void bn_apply_kernel(BatchNorm q, double slope, const float* x, const float* mean,
                                const float* scale, const float* beta, float* y, int64_t n) {
  WEFT_FOR_EACH(i, n) {
    const int64_t k = bn_channel(q, i);
    y[i] = bn_apply(x[i], mean[k], scale[k], beta[k], slope);
  }
}

// One block per channel: dgamma, dbeta and dx's coefficients (into the workspace).
__global__ void bn_backward_stats_kernel(BatchNorm q, double eps, const float* dy, const float* x,
                                         const float* gamma, const float* mean, const float* var,
                                         float* dgamma, float* dbeta, float* coef) {
  const int64_t count = q.count();
  for (int64_t k = blockIdx.x; k < q.c; k += gridDim.x) {
    const double mu = mean[k];
    double s = 0, sx = 0;
    for (int64_t e = threadIdx.x; e < count; e += blockDim.x) {
      const int64_t at = bn_offset(q, k, e);
      s += double(dy[at]);
      sx += double(dy[at]) * (double(x[at]) - mu);
    }
    s = block_sum(s);
    sx = block_sum(sx);
    if (threadIdx.x == 0)
      bn_backward_channel(s, sx, count, gamma[k], var[k], eps, &dgamma[k], &dbeta[k], coef + 3 * k);
  }
}

__global__ void bn_backward_apply_kernel(BatchNorm q, const float* dy, const float* x,
                                         const float* mean, const float* coef, float* dx,
                                         int64_t n) {
  WEFT_FOR_EACH(i, n) {
    const int64_t k = bn_channel(q, i);
    dx[i] = bn_backward_dx(coef + 3 * k, dy[i], x[i], mean[k]);
  }
}

unsigned channel_blocks(int64_t c) { return unsigned(c < 65536 ? c : 65536); }

// Inputs (x, gamma, beta, running_mean, running_var), outputs (y, mean, var); the running
// statistics are updated in place while training.
struct BatchNormNode : Node {
  BatchNorm q;
  double momentum = 0.1, eps = 1e-5, slope = 1;
  int run(const weft_call* call, const weft_tensor* in, int32_t, weft_tensor* out,
          int32_t) override {
    if (call->workspace_bytes < sizeof(float) * size_t(q.c))
      return fail(call, "batch norm ran without its workspace");
    float* scale = static_cast<float*>(call->workspace);
    const cudaStream_t s = stream_of(call);
    bn_stats_kernel<<<channel_blocks(q.c), kThreads, 0, s>>>(
        q, call->training != 0, momentum, eps, in_f32(in, 0), in_f32(in, 1), io_f32(in, 3),
        io_f32(in, 4), out_f32(out, 1), out_f32(out, 2), scale);
    if (launched(call, "bn_stats_kernel")) return 1;
    const int64_t n = q.count() * q.c;
    bn_apply_kernel<<<blocks_for(n), kThreads, 0, s>>>(q, slope, in_f32(in, 0), out_f32(out, 1),
                                                       scale, in_f32(in, 2), out_f32(out, 0), n);
    return launched(call, "bn_apply_kernel");
  }
};

std::unique_ptr<Node> make_batch_norm(const weft_kernel_setup& s, size_t* workspace,
                                      std::string& why) {
  const Attrs attrs(s.attrs);
  auto node = std::make_unique<BatchNormNode>();
  if (s.n_in != 5 || s.n_out != 3) {
    why = "batch norm takes 5 inputs and gives 3 outputs";
    return nullptr;
  }
  if (!batch_norm_geometry(in_shape(s, 0), node->q, why)) return nullptr;
  if (!bn_slope(s.op, attrs, node->slope, why)) return nullptr;
  node->momentum = attrs.number("momentum", 0.1);
  node->eps = attrs.number("eps", 1e-5);
  *workspace = sizeof(float) * size_t(node->q.c);
  return node;
}

// Inputs (dy, x, gamma, mean, var), outputs (dx, dgamma, dbeta).
struct BatchNormBackwardNode : Node {
  BatchNorm q;
  double eps = 1e-5;
  int run(const weft_call* call, const weft_tensor* in, int32_t, weft_tensor* out,
          int32_t) override {
    if (call->workspace_bytes < 3 * sizeof(float) * size_t(q.c))
      return fail(call, "batch_norm_backward ran without its workspace");
    float* coef = static_cast<float*>(call->workspace);
    const cudaStream_t s = stream_of(call);
    bn_backward_stats_kernel<<<channel_blocks(q.c), kThreads, 0, s>>>(
        q, eps, in_f32(in, 0), in_f32(in, 1), in_f32(in, 2), in_f32(in, 3), in_f32(in, 4),
        out_f32(out, 1), out_f32(out, 2), coef);
    if (launched(call, "bn_backward_stats_kernel")) return 1;
    const int64_t n = q.count() * q.c;
    bn_backward_apply_kernel<<<blocks_for(n), kThreads, 0, s>>>(
        q, in_f32(in, 0), in_f32(in, 1), in_f32(in, 3), coef, out_f32(out, 0), n);
    return launched(call, "bn_backward_apply_kernel");
  }
};

std::unique_ptr<Node> make_batch_norm_backward(const weft_kernel_setup& s, size_t* workspace,
                                               std::string& why) {
  const Attrs attrs(s.attrs);
  auto node = std::make_unique<BatchNormBackwardNode>();
  if (s.n_in != 5 || s.n_out != 3) {
    why = "batch_norm_backward takes 5 inputs and gives 3 outputs";
    return nullptr;
  }
  if (!batch_norm_geometry(in_shape(s, 1), node->q, why)) return nullptr;
  node->eps = attrs.number("eps", 1e-5);
  *workspace = 3 * sizeof(float) * size_t(node->q.c);
  return node;
}

// ---- optimizers ------------------------------------------------------------------------

__global__ void update_kernel(Update u, float* p, const float* g, float* s0, float* s1, int64_t n) {
  WEFT_FOR_EACH(k, n) update_element(u, k, p, g, s0, s1);
}

constexpr int kSquaresThreads = 1024;

// sum += the sum of g's squares, in one block so that the order (and the result) is the same
// on every run. The launch bound keeps the compiler's register use within what 1024 threads
// may have.
__global__ void __launch_bounds__(kSquaresThreads)
    sum_squares_kernel(const float* g, int64_t n, double* sum) {
  double s = 0;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) s += double(g[k]) * double(g[k]);
  s = block_sum(s);
  if (threadIdx.x == 0) *sum += s;
}

// sumsq is f64 [1] (ops/optim.cpp); the check keeps a mismatched plan from writing 4 bytes
// of a double.
int add_squares(const weft_call* call, const weft_tensor& g, const weft_tensor& sumsq, int64_t n) {
  if (sumsq.dtype != WEFT_F64) return fail(call, "sumsq must be f64");
  sum_squares_kernel<<<1, kSquaresThreads, 0, stream_of(call)>>>(
      static_cast<const float*>(g.data), n, static_cast<double*>(sumsq.data));
  return launched(call, "sum_squares_kernel");
}

// Inputs (param, grad, sumsq, state...), all updated in place; per-call scalars
// [grad_scale, squares, ...] as ops/optim.cpp documents them.
struct UpdateNode : Node {
  Update u;  // from the attributes; each call fills in its scalars
  int64_t n = 0;
  int n_state = 0;
  int run(const weft_call* call, const weft_tensor* in, int32_t n_in, weft_tensor*,
          int32_t) override {
    const int need = update_scalar_count(u);
    if (!call->scalars || call->n_scalars < need)
      return fail(call, "expected " + std::to_string(need) + " scalars, got " +
                            std::to_string(call->n_scalars));
    if (n_in < 3 + n_state) return fail(call, "missing optimizer state");
    // Passed to the launch by value: the scalars are copied there.
    const Update v = update_for_call(u, call->scalars);
    // The squares of the raw gradient, before the update (which does not change it).
    if (call->scalars[1] != 0 && add_squares(call, in[1], in[2], n)) return 1;
    float* s0 = n_state > 0 ? io_f32(in, 3) : nullptr;
    float* s1 = n_state > 1 ? io_f32(in, 4) : nullptr;
    update_kernel<<<blocks_for(n), kThreads, 0, stream_of(call)>>>(v, io_f32(in, 0), in_f32(in, 1),
                                                                   s0, s1, n);
    return launched(call, "update_kernel");
  }
};

std::unique_ptr<Node> make_update_node(const weft_kernel_setup& s, size_t*, std::string& why) {
  auto node = std::make_unique<UpdateNode>();
  if (!make_update(s.op, Attrs(s.attrs), s.n_in, node->u, node->n_state, why)) return nullptr;
  node->n = in_shape(s, 0).numel();
  return node;
}

// Inputs (grad, sumsq): sumsq += the sum of grad's squares.
struct SumSquaresNode : Node {
  int64_t n = 0;
  int run(const weft_call* call, const weft_tensor* in, int32_t, weft_tensor*, int32_t) override {
    return add_squares(call, in[0], in[1], n);
  }
};

std::unique_ptr<Node> make_sum_squares(const weft_kernel_setup& s, size_t*, std::string&) {
  auto node = std::make_unique<SumSquaresNode>();
  node->n = in_shape(s, 0).numel();
  return node;
}

}  // namespace

void norm_optim_kernels(std::vector<KernelSpec>& out) {
  for (const char* op : {"batch_norm", "batch_norm_act"})
    out.push_back({op, "cuda", &create_node<make_batch_norm>});
  out.push_back({"batch_norm_backward", "cuda", &create_node<make_batch_norm_backward>});
  for (const char* op : {"sgd_update", "adam_update", "rmsprop_update"})
    out.push_back({op, "cuda", &create_node<make_update_node>});
  out.push_back({"sum_squares", "cuda", &create_node<make_sum_squares>});
}

}  // namespace weft_cuda

// Elementwise kernels, reductions and noise: neg, relu, leaky_relu, tanh, sigmoid, softplus
// and the activations' backward ops; add, sub, mul, div and broadcast_like with numpy
// broadcasting; sum and mean; noise_normal and noise_uniform. The arithmetic of each is in
// plans.h.
#include "cuda_plugin.h"

namespace weft_cuda {
namespace {

// ---- one input (and dy) ------------------------------------------------------------------

__global__ void unary_kernel(int kind, double alpha, const float* x, float* y, int64_t n) {
  WEFT_FOR_EACH(i, n) y[i] = unary_value(kind, alpha, x[i]);
}

__global__ void backward_kernel(int kind, double alpha, const float* dy, const float* y, float* dx,
                                int64_t n) {
  WEFT_FOR_EACH(i, n) dx[i] = backward_value(kind, alpha, dy[i], y[i]);
}

struct UnaryNode : Node {
  int kind = 0;
  bool backward = false;
  double alpha = 0;
  int64_t n = 0;
  int run(const weft_call* call, const weft_tensor* in, int32_t, weft_tensor* out,
          int32_t) override {
    if (backward)
      backward_kernel<<<blocks_for(n), kThreads, 0, stream_of(call)>>>(
          kind, alpha, in_f32(in, 0), in_f32(in, 1), out_f32(out, 0), n);
    else
      unary_kernel<<<blocks_for(n), kThreads, 0, stream_of(call)>>>(kind, alpha, in_f32(in, 0),
                                                                    out_f32(out, 0), n);
    return launched(call, backward ? "backward_kernel" : "unary_kernel");
  }
};

std::unique_ptr<Node> make_unary(const weft_kernel_setup& s, size_t*, std::string& why) {
  auto node = std::make_unique<UnaryNode>();
  if (!unary_kind(s.op, node->kind, node->backward)) {
    why = std::string("not an activation: ") + s.op;
    return nullptr;
  }
  node->n = out_shape(s, 0).numel();
  node->alpha = Attrs(s.attrs).number("alpha", 0.01);
  return node;
}

// ---- broadcasting ----------------------------------------------------------------------

__global__ void binary_kernel(Broadcast b, int kind, const float* x, const float* z, float* y,
                              int64_t n) {
  WEFT_FOR_EACH(i, n)
  y[i] = binary_value(kind, x[broadcast_offset(b, 0, i)], z[broadcast_offset(b, 1, i)]);
}

// broadcast_like: y = x at its broadcast offset, times scale (mean: the fold count's inverse).
__global__ void expand_kernel(Broadcast b, float scale, const float* x, float* y, int64_t n) {
  WEFT_FOR_EACH(i, n) y[i] = x[broadcast_offset(b, 0, i)] * scale;
}

struct BinaryNode : Node {
  Broadcast b;
  int kind = 0;  // a BinaryKind, or -1 for broadcast_like
  float scale = 1;
  int64_t n = 0;
  int run(const weft_call* call, const weft_tensor* in, int32_t, weft_tensor* out,
          int32_t) override {
    if (kind < 0) {
      expand_kernel<<<blocks_for(n), kThreads, 0, stream_of(call)>>>(b, scale, in_f32(in, 0),
                                                                     out_f32(out, 0), n);
      return launched(call, "expand_kernel");
    }
    binary_kernel<<<blocks_for(n), kThreads, 0, stream_of(call)>>>(
        b, kind, in_f32(in, 0), in_f32(in, 1), out_f32(out, 0), n);
    return launched(call, "binary_kernel");
  }
};

std::unique_ptr<Node> make_binary(const weft_kernel_setup& s, size_t*, std::string& why) {
  auto node = std::make_unique<BinaryNode>();
  const Shape out = out_shape(s, 0);
  const Shape in[2] = {in_shape(s, 0), s.n_in > 1 ? in_shape(s, 1) : Shape()};
  node->n = out.numel();
  if (std::string(s.op) == "broadcast_like") {
    node->kind = -1;
    node->b = make_broadcast(out, in, 1);
    node->scale = broadcast_like_scale(in[0], out, Attrs(s.attrs).flag("mean", false));
    return node;
  }
  if (!binary_kind(s.op, node->kind)) {
    why = std::string("not a binary op: ") + s.op;
    return nullptr;
  }
  node->b = make_broadcast(out, in, 2);
  return node;
}

// ---- sum, mean -------------------------------------------------------------------------

// Outputs that fold few elements (or many outputs): one thread per output, in order.
__global__ void reduce_serial_kernel(Reduce r, const float* x, float* y) {
  WEFT_FOR_EACH(o, r.n_out) y[o] = reduce_serial(r, x, o);
}

// Few outputs folding many elements each: one block per output.
__global__ void reduce_block_kernel(Reduce r, const float* x, float* y) {
  for (int64_t o = blockIdx.x; o < r.n_out; o += gridDim.x) {
    const int64_t base = reduce_base(r, o);
    double s = 0;
    for (int64_t j = threadIdx.x; j < r.fold_count; j += blockDim.x)
      s += double(x[base + reduce_step(r, j)]);
    s = block_sum(s);
    if (threadIdx.x == 0) y[o] = float(s * r.scale);
  }
}

struct ReduceNode : Node {
  Reduce r;
  int run(const weft_call* call, const weft_tensor* in, int32_t, weft_tensor* out,
          int32_t) override {
    if (r.fold_count <= 64 || r.n_out >= 4096) {
      reduce_serial_kernel<<<blocks_for(r.n_out), kThreads, 0, stream_of(call)>>>(r, in_f32(in, 0),
                                                                                  out_f32(out, 0));
      return launched(call, "reduce_serial_kernel");
    }
    const unsigned blocks = unsigned(r.n_out < 65536 ? r.n_out : 65536);
    reduce_block_kernel<<<blocks, kThreads, 0, stream_of(call)>>>(r, in_f32(in, 0),
                                                                  out_f32(out, 0));
    return launched(call, "reduce_block_kernel");
  }
};

std::unique_ptr<Node> make_reduce_node(const weft_kernel_setup& s, size_t*, std::string& why) {
  const Attrs attrs(s.attrs);
  auto node = std::make_unique<ReduceNode>();
  if (!make_reduce(in_shape(s, 0), attrs.ints("axes"), std::string(s.op) == "mean", node->r, why))
    return nullptr;
  return node;
}

// ---- noise -----------------------------------------------------------------------------

__global__ void noise_kernel(bool normal, double a, double b, uint64_t key, uint64_t first,
                             float* y, int64_t n) {
  WEFT_FOR_EACH(i, n) y[i] = noise_value(normal, a, b, key, first + uint64_t(i));
}

struct NoiseNode : Node {
  bool normal = true;
  double a = 0, b = 1;
  int64_t n = 0;
  int run(const weft_call* call, const weft_tensor*, int32_t, weft_tensor* out, int32_t) override {
    // The stream is the node's key, as the host's draw_noise for the same input; the call's
    // scalar, when given, is the first element's index in it (ops/random.cpp: a rank's shard
    // of the batch).
    const uint64_t first = call->scalars && call->n_scalars > 0 ? uint64_t(call->scalars[0]) : 0;
    noise_kernel<<<blocks_for(n), kThreads, 0, stream_of(call)>>>(normal, a, b, call->node_key,
                                                                  first, out_f32(out, 0), n);
    return launched(call, "noise_kernel");
  }
};

std::unique_ptr<Node> make_noise(const weft_kernel_setup& s, size_t*, std::string&) {
  const Attrs attrs(s.attrs);
  auto node = std::make_unique<NoiseNode>();
  node->normal = std::string(s.op) == "noise_normal";
  node->a = attrs.number("a", node->normal ? 0.0 : -1.0);
  node->b = attrs.number("b", 1.0);
  node->n = out_shape(s, 0).numel();
  return node;
}

}  // namespace

void elementwise_kernels(std::vector<KernelSpec>& out) {
  for (const char* op : {"neg", "relu", "leaky_relu", "tanh", "sigmoid", "softplus",
                         "relu_backward", "leaky_relu_backward", "tanh_backward"})
    out.push_back({op, "cuda", &create_node<make_unary>});
  for (const char* op : {"add", "sub", "mul", "div", "broadcast_like"})
    out.push_back({op, "cuda", &create_node<make_binary>});
  for (const char* op : {"sum", "mean"})
    out.push_back({op, "cuda", &create_node<make_reduce_node>});
  for (const char* op : {"noise_normal", "noise_uniform"})
    out.push_back({op, "cuda", &create_node<make_noise>});
}

}  // namespace weft_cuda

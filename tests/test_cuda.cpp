// The CUDA plugin (plugins/cuda). Two suites in one executable:
//
// - without a GPU (the default run): the plugin loads and registers a kernel for every op
//   dcgan and mlp_gan use; --device cuda is refused with CUDA's own reason and the runner
//   writes nothing; the device functions and kernels fail with a message and do not crash;
//   and the plugin's arithmetic (plugins/cuda/plans.h: the plans its create() functions
//   make and the per-element functions its device code calls) is run on the CPU, with the
//   im2col layouts and the cuBLAS argument mapping, against weft's f64 reference kernels.
// - `test_cuda --gpu` (ctest: test_cuda_gpu): every kernel on the device against the f64
//   reference, and dcgan and mlp_gan trained on cuda against the CPU. Without a usable GPU it
//   prints why and exits 77, which ctest reports as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <dlfcn.h>
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "plugins/cuda/plans.h"
#include "runtime/device.h"
#include "runtime/gradcheck.h"
#include "runtime/model.h"
#include "runtime/plan.h"
#include "runtime/plugin.h"
#include "runtime/rng.h"
#include "runtime/sources.h"
#include "runtime/threading.h"
#include "runtime/trainer.h"
#include "tests/test_util.h"

using namespace weft;
namespace wc = weft_cuda;
namespace fs = std::filesystem;

namespace {

constexpr int kSkipped = 77;  // ctest's SKIP_RETURN_CODE for test_cuda_gpu

// Every op dcgan and mlp_gan train and sample with, the optimizers and the noise.
const char* const kCudaOps[] = {"add",
                                "sub",
                                "mul",
                                "div",
                                "neg",
                                "sum",
                                "mean",
                                "broadcast_like",
                                "matmul",
                                "linear",
                                "linear_act",
                                "conv2d",
                                "conv2d_backward_data",
                                "conv2d_backward_weights",
                                "conv_transpose2d",
                                "batch_norm",
                                "batch_norm_act",
                                "batch_norm_backward",
                                "relu",
                                "relu_backward",
                                "leaky_relu",
                                "leaky_relu_backward",
                                "tanh",
                                "tanh_backward",
                                "sigmoid",
                                "softplus",
                                "sgd_update",
                                "adam_update",
                                "rmsprop_update",
                                "sum_squares",
                                "noise_normal",
                                "noise_uniform"};
const char* const kConvOps[] = {"conv2d", "conv2d_backward_data", "conv2d_backward_weights",
                                "conv_transpose2d"};

void load_cuda() {
  if (!find_plugin("weft-cuda")) load_plugin(WEFT_CUDA_PLUGIN);
}

const DeviceDef& cuda_def() {
  load_cuda();
  for (const DeviceDef& d : devices())
    if (d.name == "cuda") return d;
  throw std::runtime_error("weft-cuda registered no device named cuda");
}

Device cuda_device() { return Device{cuda_def().kind, 0}; }

// "" when the cuda device can be used, else its reason.
std::string unavailable() {
  const DeviceDef& d = cuda_def();
  char why[512] = {0};
  return d.fns.available(d.fns.context, why, sizeof why) == 0 ? "" : std::string(why);
}

bool is_conv(const std::string& op) {
  for (const char* c : kConvOps)
    if (op == c) return true;
  return false;
}

// ---- one op on given inputs -----------------------------------------------------------

struct OpCase {
  std::string op;
  json attrs = json::object();
  std::vector<Dims> in;
  std::vector<std::pair<double, double>> ranges;  // per input; [-1, 1] where not given
  bool training = true;
  std::vector<double> scalars;
  std::vector<Dims> out;  // the noise ops' (others' come from the shape rule)
  uint64_t node_key = 0x5eed;
  int64_t im2col_budget = int64_t(1) << 40;  // the emulation's im2col turns (bytes per turn)
  std::string label() const {
    std::string s = op + " " + attrs.dump() + (training ? " training" : " inference") + " in";
    for (auto& d : in) {
      s += " [";
      for (size_t i = 0; i < d.size(); ++i) {
        if (i) s += ",";
        s += std::to_string(d[i]);
      }
      s += "]";
    }
    return s;
  }
};

// The optimizers' sumsq (f64 [1]) is f64 in every plan.
bool f64_input(const std::string& op, size_t i) {
  return (op == "sum_squares" && i == 1) ||
         (op.size() > 7 && op.substr(op.size() - 7) == "_update" && i == 2);
}

std::vector<Dims> output_dims(const OpCase& c) {
  if (!c.out.empty()) return c.out;
  const OpDef* def = Registry::get().find(c.op);
  REQUIRE(def);
  std::vector<Shape> in;
  for (const Dims& d : c.in) in.emplace_back(d.begin(), d.end());
  const json attrs = def->complete_attrs(c.attrs);
  std::vector<Dims> out;
  for (const Shape& s : def->shape_rule(ShapeContext{in, attrs})) out.push_back(bind_batch(s, 1));
  return out;
}

// Inputs drawn in f32 (so that f32 and f64 runs read the same numbers), held in f64.
std::vector<Tensor> random_inputs(const OpCase& c, uint64_t seed) {
  std::vector<Tensor> r;
  for (size_t i = 0; i < c.in.size(); ++i) {
    const auto [lo, hi] = i < c.ranges.size() ? c.ranges[i] : std::pair<double, double>{-1, 1};
    Tensor t(DType::f64, c.in[i]);
    for (int64_t k = 0; k < t.numel(); ++k)
      t.set(k, double(float(lo + (hi - lo) * uniform01(seed + i, uint64_t(k)))));
    r.push_back(t);
  }
  return r;
}

// What a run leaves: its outputs and its inputs (those it updates in place), on the host in f64.
struct Outcome {
  std::vector<Tensor> out, in;
  std::string kernel;
};

// weft's kernel for the case on `device` in `dt`: f64 on the CPU is the reference, f32 on
// cuda the plugin's kernel.
Outcome run_weft(const OpCase& c, const std::vector<Tensor>& inputs, DType dt, Device device) {
  const OpDef* def = Registry::get().find(c.op);
  REQUIRE(def);
  KernelInfo info;
  info.node = c.op;
  info.attrs = def->complete_attrs(c.attrs);
  info.in = c.in;
  info.out = output_dims(c);
  info.dtype = dt;
  info.device = device;
  std::vector<Tensor> in, out;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor h = inputs[i].to(f64_input(c.op, i) ? DType::f64 : dt);
    if (device.kind == 0) {
      in.push_back(h);
    } else {
      in.push_back(zeros_on(device, h.dtype(), h.shape()));
      upload(h, in.back());
    }
  }
  for (const Dims& d : info.out)
    out.push_back(device.kind == 0 ? Tensor(dt, d) : zeros_on(device, dt, d));
  Outcome r;
  {
    std::unique_ptr<Kernel> k = make_kernel(*def, info, r.kernel, "");
    RunContext ctx;
    ctx.seed = 3;
    ctx.step = 5;
    ctx.training = c.training;
    KernelArgs a;
    for (auto& t : in) a.in.push_back(&t);
    for (auto& t : out) a.out.push_back(&t);
    a.ctx = &ctx;
    a.node_key = c.node_key;
    a.scalars = c.scalars.empty() ? nullptr : c.scalars.data();
    a.n_scalars = int(c.scalars.size());
    k->run(a);
  }
  for (auto& t : out) r.out.push_back(on_host(t).to(DType::f64));
  for (auto& t : in) r.in.push_back(on_host(t).to(DType::f64));
  return r;
}

// The worst of |a - b| / max(1, |b|) over the outputs and the inputs updated in place.
double worst_error(const Outcome& got, const Outcome& want, std::string& where) {
  double worst = 0;
  auto scan = [&](const std::vector<Tensor>& a, const std::vector<Tensor>& b, const char* what) {
    REQUIRE(a.size() == b.size());
    for (size_t t = 0; t < a.size(); ++t) {
      REQUIRE(a[t].numel() == b[t].numel());
      for (int64_t k = 0; k < a[t].numel(); ++k) {
        const double x = a[t].at(k), y = b[t].at(k);
        const double e = std::isnan(x) != std::isnan(y) ? INFINITY
                         : std::isnan(x)                ? 0
                                         : std::abs(x - y) / std::max(1.0, std::abs(y));
        if (e > worst) {
          worst = e;
          where = std::string(what) + " " + std::to_string(t) + " element " + std::to_string(k) +
                  ": " + std::to_string(x) + " against " + std::to_string(y);
        }
      }
    }
  };
  scan(got.out, want.out, "output");
  scan(got.in, want.in, "input");
  return worst;
}

// ---- the plugin's plans, run on the CPU ------------------------------------------------

// A weft_kernel_setup as weft makes one (runtime/plugin.cpp), with the storage it points to.
struct Setup {
  std::string op, attrs;
  std::vector<int32_t> in_ndim, out_ndim;
  std::vector<std::array<int64_t, WEFT_MAX_DIMS>> in_shape, out_shape;
  weft_kernel_setup s{};
  Setup(const OpCase& c, weft_dtype dtype = WEFT_F32) : op(c.op) {
    const OpDef* def = Registry::get().find(c.op);
    REQUIRE(def);
    attrs = def->complete_attrs(c.attrs).dump();
    for (const Dims& d : c.in) {
      in_ndim.push_back(int32_t(d.size()));
      in_shape.push_back({});
      std::copy(d.begin(), d.end(), in_shape.back().begin());
    }
    for (const Dims& d : output_dims(c)) {
      out_ndim.push_back(int32_t(d.size()));
      out_shape.push_back({});
      std::copy(d.begin(), d.end(), out_shape.back().begin());
    }
    s.size = sizeof s;
    s.op = op.c_str();
    s.node = op.c_str();
    s.attrs = attrs.c_str();
    s.dtype = dtype;
    s.n_in = int32_t(in_ndim.size());
    s.n_out = int32_t(out_ndim.size());
    s.in_ndim = in_ndim.data();
    s.in_shape = reinterpret_cast<const int64_t(*)[WEFT_MAX_DIMS]>(in_shape.data());
    s.out_ndim = out_ndim.data();
    s.out_shape = reinterpret_cast<const int64_t(*)[WEFT_MAX_DIMS]>(out_shape.data());
  }
  Setup(const Setup&) = delete;
};

std::vector<float> floats(const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  for (int64_t k = 0; k < t.numel(); ++k) v[size_t(k)] = float(t.at(k));
  return v;
}
Tensor tensor_of(const std::vector<float>& v, const Dims& d) {
  Tensor t(DType::f64, d);
  for (int64_t k = 0; k < t.numel(); ++k) t.set(k, double(v[size_t(k)]));
  return t;
}

// BLAS's column-major sgemm by its definition: C = op(A) op(B) + beta C, C [m, n], op(A)
// [m, k], op(B) [k, n], leading dimensions as BLAS takes them. What cuBLAS computes for the
// arguments dense.cu gives it.
void column_major_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a,
                        int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                        int64_t ldc) {
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) {
      double s = 0;
      for (int64_t l = 0; l < k; ++l)
        s += double(ta ? a[l + i * lda] : a[i + l * lda]) *
             double(tb ? b[j + l * ldb] : b[l + j * ldb]);
      float& out = c[i + j * ldc];
      out = float(s) + (beta != 0 ? beta * out : 0.0f);
    }
}

// dense.cu's gemm(): the row-major product through plans.h's blas_gemm, batched.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t stride_a,
          const float* b, int64_t stride_b, float beta, float* c, int64_t stride_c, int64_t batch) {
  const wc::BlasGemm g = wc::blas_gemm(ta, tb, m, n, k);
  for (int64_t i = 0; i < batch; ++i)
    column_major_sgemm(g.trans_first, g.trans_second, g.m, g.n, g.k, b + i * stride_b, g.ld_first,
                       a + i * stride_a, g.ld_second, beta, c + i * stride_c, g.ldc);
}

// dense.cu's Im2colNode::run on the CPU: the same turns, layouts and products.
std::vector<float> im2col_conv(const OpCase& c, const wc::Conv& q, wc::ConvRole role,
                               const std::vector<std::vector<float>>& in, size_t out_size) {
  std::vector<float> out(out_size, NAN);  // every element must be written
  const int64_t chunk = wc::im2col_chunk(q, role, c.im2col_budget);
  std::vector<float> ws(size_t(chunk * wc::im2col_floats_per_image(q, role)), NAN);
  const int64_t kk = q.patch(), pp = q.pixels();
  for (int64_t n0 = 0; n0 < q.n; n0 += chunk) {
    const int64_t images = std::min(chunk, q.n - n0);
    const int64_t ks = wc::col_k_stride(q, role, images), ns = wc::col_n_stride(q, role);
    const wc::ConvGemm g = wc::conv_gemm(q, role, images);
    float* col = ws.data();
    if (role == wc::kConvForward) {
      for (int64_t i = 0; i < images * kk * pp; ++i)
        wc::im2col_element(q, in[0].data(), n0, ks, ns, i, col);
      gemm(g.ta, g.tb, g.m, g.n, g.k, in[1].data(), g.stride_a, col, g.stride_b, 0.0f,
           out.data() + n0 * q.o * pp, g.stride_c, g.batch);
    } else if (role == wc::kConvWeights) {
      float* dyt = col + images * kk * pp;
      for (int64_t i = 0; i < images * kk * pp; ++i)
        wc::im2col_element(q, in[0].data(), n0, ks, ns, i, col);
      for (int64_t i = 0; i < images * q.o * pp; ++i)
        wc::gather_rows_element(q, in[1].data(), n0, images, i, dyt);
      gemm(g.ta, g.tb, g.m, g.n, g.k, dyt, 0, col, 0, n0 == 0 ? 0.0f : 1.0f, out.data(), 0, 1);
    } else {
      gemm(g.ta, g.tb, g.m, g.n, g.k, in[1].data(), g.stride_a, in[0].data() + n0 * q.o * pp,
           g.stride_b, 0.0f, col, g.stride_c, g.batch);
      for (int64_t i = 0; i < images * q.c * q.h * q.w; ++i)
        wc::col2im_element(q, col, ks, ns, n0, i, out.data());
    }
  }
  const bool bias = (role == wc::kConvForward || role == wc::kConvTranspose) && in.size() > 2;
  if (bias) {
    const bool on_y = role == wc::kConvForward;
    const int64_t channels = on_y ? q.o : q.c, hw = on_y ? pp : q.h * q.w;
    for (int64_t i = 0; i < q.n * channels * hw; ++i)
      wc::channel_bias_element(in[2].data(), channels, hw, i, out.data());
  }
  return out;
}

// What the plugin's kernels compute for the case, by plans.h's functions on the CPU, in the
// order the device code calls them (a block's reduction summed in order instead).
Outcome emulate(const OpCase& c, const std::vector<Tensor>& inputs) {
  Setup setup(c);
  const weft_kernel_setup& s = setup.s;
  const wc::Attrs attrs(s.attrs);
  REQUIRE(attrs.ok());
  std::vector<std::vector<float>> in;
  std::vector<double> sumsq;
  for (size_t i = 0; i < inputs.size(); ++i) {
    in.push_back(floats(inputs[i]));
    if (f64_input(c.op, i)) sumsq.push_back(inputs[i].at(0));
  }
  const std::vector<Dims> out_dims = output_dims(c);
  std::vector<std::vector<float>> out;
  for (const Dims& d : out_dims) out.emplace_back(size_t(numel(d)), NAN);
  std::string why;
  const std::string op = c.op;
  int kind = 0;
  bool backward = false;
  if (wc::unary_kind(op, kind, backward)) {
    const double alpha = attrs.number("alpha", 0.01);
    for (size_t i = 0; i < out[0].size(); ++i)
      out[0][i] = backward ? wc::backward_value(kind, alpha, in[0][i], in[1][i])
                           : wc::unary_value(kind, alpha, in[0][i]);
  } else if (wc::binary_kind(op, kind) || op == "broadcast_like") {
    const wc::Shape o = wc::out_shape(s, 0);
    const wc::Shape shapes[2] = {wc::in_shape(s, 0), wc::in_shape(s, 1)};
    const bool expand = op == "broadcast_like";
    const wc::Broadcast b = wc::make_broadcast(o, shapes, expand ? 1 : 2);
    const float scale = wc::broadcast_like_scale(shapes[0], o, attrs.flag("mean", false));
    for (int64_t i = 0; i < o.numel(); ++i)
      out[0][size_t(i)] = expand
                              ? in[0][size_t(wc::broadcast_offset(b, 0, i))] * scale
                              : wc::binary_value(kind, in[0][size_t(wc::broadcast_offset(b, 0, i))],
                                                 in[1][size_t(wc::broadcast_offset(b, 1, i))]);
  } else if (op == "sum" || op == "mean") {
    wc::Reduce r;
    REQUIRE(wc::make_reduce(wc::in_shape(s, 0), attrs.ints("axes"), op == "mean", r, why));
    CHECK(r.n_out == int64_t(out[0].size()));
    for (int64_t o = 0; o < r.n_out; ++o) out[0][size_t(o)] = wc::reduce_serial(r, in[0].data(), o);
  } else if (op == "noise_normal" || op == "noise_uniform") {
    const uint64_t first = c.scalars.empty() ? 0 : uint64_t(c.scalars[0]);
    for (size_t i = 0; i < out[0].size(); ++i)
      out[0][i] = wc::noise_value(op == "noise_normal", attrs.number("a", 0), attrs.number("b", 1),
                                  c.node_key, first + i);
  } else if (op == "batch_norm" || op == "batch_norm_act") {
    wc::BatchNorm q;
    double slope = 1;
    REQUIRE(wc::batch_norm_geometry(wc::in_shape(s, 0), q, why));
    REQUIRE(wc::bn_slope(op, attrs, slope, why));
    std::vector<float> scale(size_t(q.c));
    for (int64_t k = 0; k < q.c; ++k) {
      double sum = 0, squares = 0;
      for (int64_t e = 0; e < q.count(); ++e) sum += in[0][size_t(wc::bn_offset(q, k, e))];
      const double mu = sum / double(q.count());
      for (int64_t e = 0; e < q.count(); ++e) {
        const double d = in[0][size_t(wc::bn_offset(q, k, e))] - mu;
        squares += d * d;
      }
      wc::bn_finish_channel(c.training, mu, squares, q.count(), attrs.number("momentum", 0.1),
                            attrs.number("eps", 1e-5), in[1][size_t(k)], &out[1][size_t(k)],
                            &out[2][size_t(k)], &in[3][size_t(k)], &in[4][size_t(k)],
                            &scale[size_t(k)]);
    }
    for (size_t i = 0; i < out[0].size(); ++i) {
      const size_t k = size_t(wc::bn_channel(q, int64_t(i)));
      out[0][i] = wc::bn_apply(in[0][i], out[1][k], scale[k], in[2][k], slope);
    }
  } else if (op == "batch_norm_backward") {
    wc::BatchNorm q;
    REQUIRE(wc::batch_norm_geometry(wc::in_shape(s, 1), q, why));
    std::vector<float> coef(size_t(3 * q.c));
    for (int64_t k = 0; k < q.c; ++k) {
      double sdy = 0, sdyx = 0;
      for (int64_t e = 0; e < q.count(); ++e) {
        const size_t at = size_t(wc::bn_offset(q, k, e));
        sdy += in[0][at];
        sdyx += double(in[0][at]) * (double(in[1][at]) - double(in[3][size_t(k)]));
      }
      wc::bn_backward_channel(sdy, sdyx, q.count(), in[2][size_t(k)], in[4][size_t(k)],
                              attrs.number("eps", 1e-5), &out[1][size_t(k)], &out[2][size_t(k)],
                              &coef[size_t(3 * k)]);
    }
    for (size_t i = 0; i < out[0].size(); ++i) {
      const size_t k = size_t(wc::bn_channel(q, int64_t(i)));
      out[0][i] = wc::bn_backward_dx(&coef[3 * k], in[0][i], in[1][i], in[3][k]);
    }
  } else if (op == "sum_squares") {
    for (float g : in[0]) sumsq[0] += double(g) * double(g);
  } else if (op.size() > 7 && op.substr(op.size() - 7) == "_update") {
    wc::Update u;
    int n_state = 0;
    REQUIRE(wc::make_update(op, attrs, s.n_in, u, n_state, why));
    REQUIRE(int(c.scalars.size()) >= wc::update_scalar_count(u));
    const wc::Update v = wc::update_for_call(u, c.scalars.data());
    if (c.scalars[1] != 0)
      for (float g : in[1]) sumsq[0] += double(g) * double(g);
    for (int64_t k = 0; k < int64_t(in[0].size()); ++k)
      wc::update_element(v, k, in[0].data(), in[1].data(), n_state > 0 ? in[3].data() : nullptr,
                         n_state > 1 ? in[4].data() : nullptr);
  } else if (op == "matmul" || op == "linear" || op == "linear_act") {
    wc::Matmul g;
    REQUIRE(wc::make_matmul(s, g, why));
    gemm(g.ta, g.tb, g.m, g.n, g.k, in[0].data(), 0, in[1].data(), 0, 0.0f, out[0].data(), 0, 1);
    if (g.bias || g.act != wc::kIdentity)
      for (int64_t i = 0; i < g.m * g.n; ++i)
        out[0][size_t(i)] = wc::bias_act_value(g.act, g.alpha, out[0][size_t(i)],
                                               g.bias ? in[2].data() : nullptr, i % g.n);
  } else if (is_conv(op)) {
    wc::ConvRole role;
    wc::Conv q;
    REQUIRE(wc::conv_role(s.op, role));
    REQUIRE_MESSAGE(wc::make_conv(s, role, q, why), why);
    out[0] = im2col_conv(c, q, role, in, out[0].size());
  } else {
    FAIL("no emulation for op ", op);
  }
  Outcome r;
  for (size_t i = 0; i < out.size(); ++i) r.out.push_back(tensor_of(out[i], out_dims[i]));
  size_t next_sumsq = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    if (f64_input(c.op, i)) {
      Tensor t(DType::f64, c.in[i]);
      t.set(0, sumsq[next_sumsq++]);
      r.in.push_back(t);
    } else {
      r.in.push_back(tensor_of(in[i], c.in[i]));
    }
  }
  r.kernel = "emulated";
  return r;
}

// ---- the cases -------------------------------------------------------------------------

// Each op on shapes like its op-sweep cases and like dcgan's and mlp_gan's, with the
// attribute values those graphs use.
std::vector<OpCase> op_cases() {
  std::vector<OpCase> v;
  const std::vector<std::vector<Dims>> binary_shapes = {
      {{3, 4}, {3, 4}}, {{3, 4}, {4}}, {{3, 1}, {1, 4}},          {{}, {2, 3}},
      {{2, 3}, {}},     {{64, 1}, {}}, {{2, 3, 4, 5}, {3, 1, 5}}, {{4, 1, 6}, {5, 1}}};
  for (const char* op : {"add", "sub", "mul", "div"})
    for (auto& shapes : binary_shapes) {
      OpCase c{op};
      c.in = shapes;
      if (std::string(op) == "div") c.ranges = {{-2, 2}, {0.5, 2}};
      v.push_back(c);
    }
  for (bool mean : {false, true})
    for (auto& shapes : std::vector<std::vector<Dims>>{{{4}, {3, 4}},
                                                       {{3, 1}, {3, 4}},
                                                       {{}, {2, 3}},
                                                       {{1, 3, 1, 1}, {2, 3, 4, 4}},
                                                       {{2, 1, 4}, {2, 3, 4}}}) {
      OpCase c{"broadcast_like", {{"mean", mean}}};
      c.in = shapes;
      v.push_back(c);
    }
  for (const char* op : {"neg", "relu", "tanh", "sigmoid", "softplus"}) {
    OpCase c{op};
    c.in = {{4, 7}};
    c.ranges = {{-4, 4}};
    v.push_back(c);
  }
  v.push_back({"leaky_relu", {{"alpha", 0.2}}, {{64, 512}}, {{-3, 3}}});
  v.push_back({"relu_backward", {}, {{4, 7}, {4, 7}}});
  v.push_back({"leaky_relu_backward", {{"alpha", 0.2}}, {{64, 256}, {64, 256}}});
  v.push_back({"tanh_backward", {}, {{4, 7}, {4, 7}}});
  struct Fold {
    Dims in;
    std::vector<int64_t> axes;  // [] folds all
    bool keep;
  };
  for (const char* op : {"sum", "mean"})
    for (const Fold& f :
         {Fold{{3, 4}, {0}, false}, Fold{{2, 3, 4}, {-1}, true}, Fold{{5}, {}, false},
          Fold{{8, 64, 14, 14}, {0, 2, 3}, false}, Fold{{2, 3, 4, 5}, {1, 3}, true},
          Fold{{4, 1, 3}, {0, 1}, false}, Fold{{64, 1}, {}, false}, Fold{{64, 784}, {0}, false},
          Fold{{3, 2000}, {1}, false}}) {
      OpCase c{op, {{"axes", f.axes}, {"keepdims", f.keep}}};
      c.in = {f.in};
      v.push_back(c);
    }
  for (bool normal : {true, false})
    for (double first : {0.0, 640.0}) {
      OpCase c{normal ? "noise_normal" : "noise_uniform"};
      c.attrs = normal ? json{{"a", 0.5}, {"b", 2.0}} : json{{"a", -2.0}, {"b", 3.0}};
      c.out = {{64, 100}};
      if (first > 0) c.scalars = {first};
      v.push_back(c);
    }
  // Batch norm: gamma and the running variance positive, as in a model.
  const std::vector<std::pair<double, double>> bn_ranges = {
      {-2, 2}, {0.5, 2}, {-1, 1}, {-1, 1}, {0.5, 2}};
  for (const Dims& x : std::vector<Dims>{{4, 3, 2, 2}, {5, 4}, {64, 600}, {8, 64, 14, 14}})
    for (bool training : {true, false})
      for (const json& attrs : {json{{"momentum", 0.1}}, json{{"activation", "relu"}},
                                json{{"activation", "leaky_relu"}, {"alpha", 0.2}}}) {
        OpCase c{attrs.contains("activation") ? "batch_norm_act" : "batch_norm", attrs};
        c.in = {x, {x[1]}, {x[1]}, {x[1]}, {x[1]}};
        c.ranges = bn_ranges;
        c.training = training;
        v.push_back(c);
      }
  for (const Dims& x : std::vector<Dims>{{4, 3, 2, 2}, {16, 600}, {2, 3, 9, 9}}) {
    OpCase c{"batch_norm_backward"};
    c.in = {x, x, {x[1]}, {x[1]}, {x[1]}};
    c.ranges = {{-2, 2}, {-2, 2}, {0.5, 2}, {-0.5, 0.5}, {0.5, 2}};
    v.push_back(c);
  }
  // Optimizers: (param, grad, sumsq, state...), scalars as the trainer passes them.
  const Dims p = {1001};
  v.push_back({"sgd_update", {{"lr", 0.01}}, {p, p, {1}}, {}, true, {1.0, 1.0, 1.0}});
  v.push_back({"sgd_update",
               {{"lr", 0.01}, {"momentum", 0.9}, {"nesterov", true}, {"weight_decay", 0.1}},
               {p, p, {1}, p},
               {},
               true,
               {0.5, 0.0, 0.0}});
  v.push_back(
      {"sgd_update", {{"lr", 0.01}, {"momentum", 0.9}}, {p, p, {1}, p}, {}, true, {1.0, 1.0, 1.0}});
  v.push_back({"adam_update",
               {{"lr", 2e-4}, {"beta1", 0.5}, {"beta2", 0.999}},
               {p, p, {1}, p, p},
               {{-1, 1}, {-1, 1}, {0, 1}, {-0.1, 0.1}, {0, 0.01}},
               true,
               {1.0, 1.0, 2e-4 / (1 - 0.5 * 0.5), 1 / std::sqrt(1 - 0.999 * 0.999)}});
  v.push_back({"adam_update",
               {{"lr", 0.01}, {"weight_decay", 0.1}, {"clip_value", 0.5}, {"clip_weights", 0.9}},
               {p, p, {1}, p, p},
               {{-1, 1}, {-2, 2}, {0, 1}, {-0.1, 0.1}, {0, 0.01}},
               true,
               {0.7, 0.0, 0.01 / (1 - 0.9), 1 / std::sqrt(1 - 0.999)}});
  v.push_back({"rmsprop_update",
               {{"lr", 0.01}, {"momentum", 0.5}, {"clip_value", 0.5}, {"clip_weights", 0.9}},
               {p, p, {1}, p, p},
               {{-1, 1}, {-2, 2}, {0, 1}, {0, 0.5}, {-0.1, 0.1}},
               true,
               {1.0, 1.0}});
  v.push_back({"rmsprop_update",
               {{"lr", 0.01}},
               {p, p, {1}, p, p},
               {{-1, 1}, {-1, 1}, {0, 1}, {0, 0.5}, {-1, 1}},
               true,
               {0.5, 0.0}});
  v.push_back({"sum_squares", {}, {{6272, 100}, {1}}, {{-1, 1}, {0, 1}}});
  // Matrix products.
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      OpCase c{"matmul", {{"transpose_a", ta}, {"transpose_b", tb}}};
      c.in = {ta ? Dims{4, 3} : Dims{3, 4}, tb ? Dims{5, 4} : Dims{4, 5}};
      v.push_back(c);
    }
  v.push_back({"matmul", {{"transpose_a", true}}, {{64, 256}, {64, 512}}});
  v.push_back({"linear", {}, {{4, 3}, {5, 3}, {5}}});
  v.push_back({"linear", {}, {{2, 6}, {3, 6}}});
  v.push_back({"linear", {}, {{64, 100}, {6272, 100}, {6272}}});
  for (const char* act : {"relu", "leaky_relu", "sigmoid", "tanh"})
    v.push_back(
        {"linear_act", {{"activation", act}, {"alpha", 0.2}}, {{64, 100}, {256, 100}, {256}}});
  v.push_back({"linear_act", {{"activation", "tanh"}}, {{4, 3}, {5, 3}}});
  // Convolutions (groups = 1; the plugin declines others): the op-sweep cases and dcgan's.
  struct ConvCase {
    std::vector<Dims> in;
    json attrs;
  };
  const std::vector<ConvCase> forward = {
      {{{2, 3, 5, 5}, {4, 3, 3, 3}, {4}}, {{"pad", 1}}},
      {{{2, 3, 7, 6}, {2, 3, 3, 2}}, {{"stride", 2}}},
      {{{1, 2, 7, 7}, {3, 2, 3, 3}}, {{"dilation", 2}, {"pad", {1, 2}}, {"stride", {2, 1}}}},
      {{{3, 1, 8, 8}, {4, 1, 4, 4}, {4}}, {{"stride", 2}, {"pad", 1}}},
      {{{3, 1, 28, 28}, {64, 1, 4, 4}, {64}}, {{"stride", 2}, {"pad", 1}}},
      {{{3, 64, 14, 14}, {128, 64, 4, 4}, {128}}, {{"stride", 2}, {"pad", 1}}}};
  const std::vector<ConvCase> transpose = {
      {{{2, 3, 4, 4}, {3, 2, 4, 4}, {2}}, {{"stride", 2}, {"pad", 1}}},
      {{{1, 2, 3, 3}, {2, 3, 3, 3}}, {{"stride", 2}, {"pad", 1}, {"output_padding", 1}}},
      {{{2, 3, 5, 5}, {3, 2, 3, 3}}, {{"pad", 1}}},
      // output_padding not below the stride (allowed by the dilation): cuDNN declines it.
      {{{1, 2, 3, 3}, {2, 2, 3, 3}}, {{"dilation", 2}, {"output_padding", 1}}},
      {{{3, 128, 7, 7}, {128, 64, 4, 4}, {64}}, {{"stride", 2}, {"pad", 1}}},
      {{{3, 64, 14, 14}, {64, 1, 4, 4}, {1}}, {{"stride", 2}, {"pad", 1}}}};
  for (int64_t budget : {int64_t(1) << 40, int64_t(1)})  // one turn; one image per turn
    for (const ConvCase& f : forward) {
      OpCase c{"conv2d", f.attrs};
      c.in = f.in;
      c.im2col_budget = budget;
      v.push_back(c);
      // The adjoints at the same geometry: dy shaped like y.
      const Dims y = output_dims(c)[0];
      OpCase d{"conv2d_backward_data", f.attrs};
      d.in = {y, f.in[1], f.in[0]};
      d.im2col_budget = budget;
      v.push_back(d);
      OpCase w{"conv2d_backward_weights", f.attrs};
      w.in = {f.in[0], y, f.in[1]};
      w.im2col_budget = budget;
      v.push_back(w);
    }
  for (const ConvCase& f : transpose) {
    OpCase c{"conv_transpose2d", f.attrs};
    c.in = f.in;
    v.push_back(c);
    c.im2col_budget = 1;
    v.push_back(c);
  }
  return v;
}

// Calls weft_plugin_init of the loaded library with a registrar that keeps what it is given,
// so that the device's functions and the kernels' create and run can be called directly.
struct Recorded {
  weft_device_def device{};
  std::vector<weft_kernel_def> kernels;
  std::vector<std::string> ops, names;  // the strings, kept
};
Recorded g_recorded;
std::string g_log, g_reported;
int record_kernel(weft_registrar*, const weft_kernel_def* k) {
  g_recorded.kernels.push_back(*k);
  g_recorded.ops.push_back(k->op);
  g_recorded.names.push_back(k->name ? k->name : "");
  return 0;
}
int record_device(weft_registrar*, const weft_device_def* d, int32_t* kind) {
  g_recorded.device = *d;
  *kind = 41;
  return 0;
}
int refuse_op(weft_registrar*, const weft_op_def*) { return 1; }
void log_to(const char*, const char* message) { g_log = message; }
void report_to(const weft_call*, const char* message) { g_reported = message; }
const weft_host kTestHost = {WEFT_PLUGIN_ABI_VERSION,
                             sizeof(weft_host),
                             nullptr,
                             nullptr,
                             log_to,
                             report_to,
                             nullptr,
                             nullptr,
                             nullptr};

const Recorded& recorded() {
  if (!g_recorded.kernels.empty()) return g_recorded;
  load_cuda();
  void* lib = dlopen(WEFT_CUDA_PLUGIN, RTLD_NOW | RTLD_NOLOAD);
  REQUIRE(lib);
  auto init =
      reinterpret_cast<int (*)(const weft_host*, weft_registrar*)>(dlsym(lib, "weft_plugin_init"));
  REQUIRE(static_cast<bool>(init));
  weft_registrar reg{nullptr, refuse_op, record_kernel, record_device};
  REQUIRE(init(&kTestHost, &reg) == 0);
  dlclose(lib);  // RTLD_NOLOAD took a reference; the plugin stays loaded
  return g_recorded;
}

const weft_kernel_def& kernel_named(const std::string& op, const std::string& name) {
  const Recorded& r = recorded();
  for (size_t i = 0; i < r.kernels.size(); ++i)
    if (r.ops[i] == op && r.names[i] == name) return r.kernels[i];
  throw std::runtime_error("no kernel " + name + " for " + op);
}

// create() on a setup: 0 and the state, or non-zero and the reason.
int create(const weft_kernel_def& k, const OpCase& c, void** state, std::string& why,
           weft_dtype dtype = WEFT_F32) {
  Setup setup(c, dtype);
  size_t workspace = 0;
  char reason[512] = {0};
  const int rc = k.create(&setup.s, state, &workspace, reason, sizeof reason);
  why = reason;
  return rc;
}

}  // namespace

// ---- without a GPU -----------------------------------------------------------------------

TEST_CASE(
    "weft-cuda loads on any machine and gives the cuda device every op dcgan and mlp_gan use") {
  load_cuda();
  const LoadedPlugin* p = find_plugin("weft-cuda");
  REQUIRE(p);
  CHECK(p->version == "1.0");
  CHECK(p->ops.empty());  // kernels only, for weft's own ops
  const DeviceDef& d = cuda_def();
  CHECK(d.plugin == "weft-cuda");
  const Device dev = cuda_device();
  for (const char* op : kCudaOps) {
    INFO(op);
    const OpDef* def = Registry::get().find(op);
    REQUIRE(def);
    CHECK(has_kernel(*def, dev, DType::f32));
    CHECK_FALSE(has_kernel(*def, dev, DType::f64));
    std::vector<std::string> names;
    for (const KernelEntry& e : def->kernel_list)
      if (e.device_kind == dev.kind) names.push_back(e.name);
    if (!is_conv(op)) {
      CHECK(names == std::vector<std::string>{"weft-cuda:cuda"});
    } else if (WEFT_CUDA_WITH_CUDNN) {
      CHECK(names == std::vector<std::string>{"weft-cuda:cudnn", "weft-cuda:im2col"});
    } else {
      CHECK(names == std::vector<std::string>{"weft-cuda:im2col"});
    }
  }
}

TEST_CASE(
    "without a GPU --device cuda is refused with CUDA's reason, and the runner writes nothing") {
  const std::string reason = unavailable();
  if (reason.empty()) {
    MESSAGE("a CUDA device is usable here: the refusal is not tested");
    return;
  }
  CHECK(reason.rfind("no CUDA device: ", 0) == 0);
  try {
    device_named("cuda");
    FAIL("an unusable device was accepted");
  } catch (const Error& e) {
    CHECK_MESSAGE(
        e.message().rfind("device cuda (plugin weft-cuda) cannot be used: no CUDA device", 0) == 0,
        e.message());
    CHECK(e.message().find("cudaGetDeviceCount error") != std::string::npos);
  }
  const std::string w = WEFT_BINARY, lib = WEFT_CUDA_PLUGIN;
  const fs::path dir = fs::temp_directory_path() / "weft_cuda_refused";
  fs::remove_all(dir);
  std::string out;
  CHECK(test::run_command(w + " train " + WEFT_SOURCE_DIR + "/graphs/dcgan.json --plugin " + lib +
                              " --device cuda --steps 1 --out " + dir.string(),
                          out) == 2);
  CHECK_MESSAGE(out.find("device cuda (plugin weft-cuda) cannot be used: no CUDA device") !=
                    std::string::npos,
                out);
  CHECK_FALSE(fs::exists(dir / "checkpoint.safetensors"));
}

TEST_CASE("weft ops lists the kernels on cuda, for both builds of the plugin") {
  const std::string w = WEFT_BINARY;
  std::string out;
  REQUIRE(test::run_command(w + " ops --all --plugin " + WEFT_CUDA_PLUGIN, out) == 0);
  CHECK(out.find("weft-cuda:cuda/f32 on cuda") != std::string::npos);
  CHECK(out.find("weft-cuda:im2col/f32 on cuda") != std::string::npos);
  CHECK((out.find("weft-cuda:cudnn/f32 on cuda") != std::string::npos) ==
        bool(WEFT_CUDA_WITH_CUDNN));
  const std::string im2col = WEFT_CUDA_IM2COL_PLUGIN;
  if (im2col.empty()) return;  // built without cuDNN: libweft_cuda.so is the im2col build
  REQUIRE(test::run_command(w + " ops --all --plugin " + im2col, out) == 0);
  CHECK(out.find("weft-cuda:im2col/f32 on cuda") != std::string::npos);
  CHECK(out.find("weft-cuda:cudnn") == std::string::npos);
}

TEST_CASE("through the ABI: the kernels' defs, and what create declines") {
  const Recorded& r = recorded();
  CHECK(r.device.size == sizeof(weft_device_def));
  CHECK(std::string(r.device.name) == "cuda");
  for (const weft_kernel_def& k : r.kernels) {
    INFO(k.op);
    CHECK(k.size == sizeof(weft_kernel_def));
    CHECK(k.device == 41);
    CHECK(k.dtype == WEFT_F32);
    CHECK((k.run && k.create && k.destroy));
  }
  void* state = nullptr;
  std::string why;
  OpCase grouped{"conv2d", {{"groups", 2}}, {{1, 4, 5, 5}, {6, 2, 3, 3}}};
  for (const char* name : {"im2col", "cudnn"}) {
    if (std::string(name) == "cudnn" && !WEFT_CUDA_WITH_CUDNN) continue;
    CHECK(create(kernel_named("conv2d", name), grouped, &state, why) != 0);
    CHECK(why == "groups = 2: the CUDA plugin takes groups = 1 only");
  }
  OpCase add{"add", {}, {{2, 3}, {3}}};
  CHECK(create(kernel_named("add", "cuda"), add, &state, why, WEFT_F64) != 0);
  CHECK(why == "the CUDA plugin's kernels are f32");
  // Elementwise nodes make no CUDA call until they run.
  REQUIRE(create(kernel_named("add", "cuda"), add, &state, why) == 0);
  REQUIRE(state);
  kernel_named("add", "cuda").destroy(state);
}

TEST_CASE(
    "without a GPU the device functions and kernels fail with CUDA's message, and do not crash") {
  const std::string reason = unavailable();
  if (reason.empty()) {
    MESSAGE("a CUDA device is usable here: the failures are not tested");
    return;
  }
  const Recorded& r = recorded();
  const weft_device_def& d = r.device;
  char why[512] = {0};
  CHECK(d.available(d.context, why, sizeof why) != 0);
  CHECK(std::string(why) == reason);
  g_log.clear();
  CHECK(d.alloc(d.context, 64) == nullptr);
  CHECK(g_log.rfind("cudaMalloc: ", 0) == 0);
  CHECK(d.stream_create(d.context) == nullptr);
  CHECK(g_log.rfind("cudaStreamCreateWithFlags: ", 0) == 0);
  float host[4] = {1, 2, 3, 4};
  CHECK(d.copy_from_host(d.context, nullptr, host, host, sizeof host) != 0);
  CHECK(d.copy_to_host(d.context, nullptr, host, host, sizeof host) != 0);
  CHECK(d.copy(d.context, nullptr, host + 2, host, 8) != 0);
  CHECK(d.zero(d.context, nullptr, host, sizeof host) != 0);
  CHECK(d.sync(d.context, nullptr) != 0);
  CHECK(g_log.rfind("cudaStreamSynchronize: ", 0) == 0);
  CHECK(g_log.find("(CUDA error ") != std::string::npos);

  // An elementwise kernel runs as far as its launch, which fails and is reported.
  const weft_kernel_def& add = kernel_named("add", "cuda");
  void* state = nullptr;
  std::string reason_why;
  REQUIRE(create(add, OpCase{"add", {}, {{2, 3}, {3}}}, &state, reason_why) == 0);
  weft_tensor t[3] = {};
  for (auto& x : t) x.dtype = WEFT_F32, x.data = host;
  weft_call call{};
  call.size = sizeof call;
  call.host = &kTestHost;
  call.state = state;
  g_reported.clear();
  CHECK(add.run(&call, t, 2, t + 2, 1) != 0);
  CHECK_MESSAGE(g_reported.rfind("binary_kernel: ", 0) == 0, g_reported);
  CHECK(g_reported.find("(CUDA error ") != std::string::npos);
  add.destroy(state);
  // An update without its scalars says so before it launches anything.
  const weft_kernel_def& adam = kernel_named("adam_update", "cuda");
  REQUIRE(create(adam, OpCase{"adam_update", {}, {{5}, {5}, {1}, {5}, {5}}}, &state, reason_why) ==
          0);
  call.state = state;
  CHECK(adam.run(&call, t, 3, nullptr, 0) != 0);
  CHECK(g_reported == "expected 4 scalars, got 0");
  adam.destroy(state);
  // Nodes that need cuBLAS or cuDNN decline when the library cannot start, with its reason.
  OpCase conv{"conv2d", {{"pad", 1}}, {{2, 3, 5, 5}, {4, 3, 3, 3}}};
  CHECK(create(kernel_named("conv2d", "im2col"), conv, &state, reason_why) != 0);
  CHECK_MESSAGE(reason_why.rfind("cublasCreate: ", 0) == 0, reason_why);
  if (WEFT_CUDA_WITH_CUDNN) {
    CHECK(create(kernel_named("conv2d", "cudnn"), conv, &state, reason_why) != 0);
    CHECK_MESSAGE(reason_why.rfind("cudnnCreate: ", 0) == 0, reason_why);
  }
  CHECK(create(kernel_named("matmul", "cuda"), OpCase{"matmul", {}, {{2, 3}, {3, 4}}}, &state,
               reason_why) != 0);
  CHECK(reason_why.rfind("cublasCreate: ", 0) == 0);
}

TEST_CASE("the attribute reader reads weft's JSON, top-level keys only") {
  const wc::Attrs a(
      R"({"a":-2.5,"axes":[0,-1],"b":1e-05,"flag":true,"gamma_init":{"normal":{"mean":1,"std":0.02}},)"
      R"("mean":false,"name":"le\"aky","none":null,"stride":2,"pad":[1, 2]})");
  REQUIRE(a.ok());
  CHECK(a.number("a", 0) == -2.5);
  CHECK(a.number("b", 0) == 1e-05);
  CHECK(a.number("none", 7) == 7);
  CHECK(a.number("missing", 3) == 3);
  CHECK(a.flag("flag", false));
  CHECK_FALSE(a.flag("mean", true));  // the top-level "mean", not the initializer's
  CHECK(a.number("std", -1) == -1);
  CHECK(a.text("name", "") == "le\\\"aky");
  CHECK(a.ints("axes") == std::vector<int64_t>{0, -1});
  CHECK(a.ints("stride") == std::vector<int64_t>{2});
  CHECK(a.ints("pad") == std::vector<int64_t>{1, 2});
  CHECK(a.ints("none").empty());
  CHECK(wc::Attrs("{}").ok());
  CHECK_FALSE(wc::Attrs("{\"a\": [1, 2}").ok());
  CHECK_FALSE(wc::Attrs(nullptr).ok());
}

TEST_CASE("the noise port equals runtime/rng.h bit for bit, and draw_noise's values") {
  for (uint64_t key : {uint64_t(0), uint64_t(1), stream_key(1, 2, 3, 4), ~uint64_t(0)})
    for (uint64_t i = 0; i < 4096; i += 7) {
      CHECK(wc::mix64(key + i) == mix64(key + i));
      const double u = wc::uniform01(key, i), n = wc::normal01(key, i);
      const double want_u = uniform01(key, i), want_n = normal01(key, i);
      CHECK(std::memcmp(&u, &want_u, sizeof u) == 0);
      CHECK(std::memcmp(&n, &want_n, sizeof n) == 0);
    }
  const uint64_t key = stream_key(7, 11, 13);
  for (bool normal : {true, false}) {
    Tensor t(DType::f32, {999});
    draw_noise(normal, t, 0.5, 2.0, key);
    for (int64_t i = 0; i < t.numel(); ++i) {
      const float got = wc::noise_value(normal, 0.5, 2.0, key, uint64_t(i));
      CHECK(std::memcmp(&got, t.data<float>() + i, sizeof got) == 0);
    }
  }
}

TEST_CASE("the plugin's arithmetic on the CPU equals weft's f64 reference kernels") {
  load_cuda();
  int n = 0;
  for (const OpCase& c : op_cases()) {
    INFO(c.label(), " im2col budget ", c.im2col_budget);
    const std::vector<Tensor> inputs = random_inputs(c, 17 + uint64_t(n++));
    Outcome want;
    if (c.op == "noise_normal" || c.op == "noise_uniform") {
      // The reference is rng.h's stream itself (draw_noise's formula), from element `first`.
      want.out.push_back(Tensor(DType::f64, c.out[0]));
      const uint64_t first = c.scalars.empty() ? 0 : uint64_t(c.scalars[0]);
      const double a = c.attrs.at("a"), b = c.attrs.at("b");
      for (int64_t i = 0; i < want.out[0].numel(); ++i)
        want.out[0].set(
            i, double(float(c.op == "noise_normal"
                                ? a + b * normal01(c.node_key, first + uint64_t(i))
                                : a + (b - a) * uniform01(c.node_key, first + uint64_t(i)))));
    } else {
      want = run_weft(c, inputs, DType::f64, Device::cpu());
    }
    const Outcome got = emulate(c, inputs);
    std::string where;
    const double worst = worst_error(got, want, where);
    CHECK_MESSAGE(worst <= 1e-5, where);
  }
  CHECK(n > 150);
  MESSAGE(n, " cases checked");
}

// ---- on a GPU (test_cuda --gpu) ----------------------------------------------------------

TEST_SUITE("gpu") {
  TEST_CASE("every kernel on cuda equals weft's f64 reference on random inputs, within 1e-4") {
    const Device dev = cuda_device();
    const char* force = std::getenv("WEFT_CUDA_CONV");
    const bool im2col_only = !WEFT_CUDA_WITH_CUDNN || (force && std::string(force) == "im2col");
    int n = 0;
    for (const OpCase& c : op_cases()) {
      if (c.im2col_budget < (int64_t(1) << 40)) continue;  // the emulation's turns only
      INFO(c.label());
      const std::vector<Tensor> inputs = random_inputs(c, 17 + uint64_t(n++));
      Outcome want;
      if (c.op == "noise_normal" || c.op == "noise_uniform") {
        want = emulate(c, inputs);  // the host's values, checked against rng.h above
      } else {
        want = run_weft(c, inputs, DType::f64, Device::cpu());
      }
      const Outcome got = run_weft(c, inputs, DType::f32, dev);
      if (is_conv(c.op)) {
        const bool declined_by_cudnn =
            c.attrs.contains("output_padding") && c.attrs.contains("dilation");
        CHECK(got.kernel ==
              (im2col_only || declined_by_cudnn ? "weft-cuda:im2col" : "weft-cuda:cudnn"));
      } else {
        CHECK(got.kernel == "weft-cuda:cuda");
      }
      std::string where;
      const double worst = worst_error(got, want, where);
      // Noise: the device's log and cos may differ from glibc's in the last bit of a double,
      // which moves a float by at most one step (relative 6e-8).
      CHECK_MESSAGE(worst <= (c.op.rfind("noise_", 0) == 0 ? 1e-6 : 1e-4), where);
    }
  }

  TEST_CASE("weft's own device sweep (weft gradcheck --device cuda) passes") {
    const Device dev = cuda_device();
    int cases = 0;
    for (const OpDef* d : Registry::get().all()) {
      if (!has_kernel(*d, dev, DType::f32)) continue;
      for (auto& r : check_device(*d, dev)) {
        INFO(r.op, " ", r.what, " ", r.problem, " ", r.declined);
        CHECK(r.ok());
        // The one thing the plugin declines in the op sweep's cases: grouped convolutions.
        if (!r.declined.empty()) CHECK(r.declined.find("groups = ") != std::string::npos);
        ++cases;
      }
    }
    CHECK(cases > 60);
    for (auto& r : check_device_trainer_ops(dev)) {
      INFO(r.op, " ", r.what);
      CHECK(r.ok());
    }
  }

  TEST_CASE("device memory: upload, copy, zero and download round trip") {
    const Device dev = cuda_device();
    Tensor h(DType::f32, {1000});
    for (int64_t i = 0; i < h.numel(); ++i) h.set(i, double(i) * 0.5);
    Tensor a = zeros_on(dev, DType::f32, {1000}), b = zeros_on(dev, DType::f32, {1000});
    upload(h, a);
    h.fill(-1);  // the upload must have read h already
    copy_within(a, b);
    Tensor back = on_host(b);
    for (int64_t i = 0; i < back.numel(); ++i) CHECK(back.at(i) == double(i) * 0.5);
    zero_within(b);
    back = on_host(b);
    for (int64_t i = 0; i < back.numel(); ++i) CHECK(back.at(i) == 0);
  }

  TEST_CASE("dcgan and mlp_gan: three steps on cuda against three on the CPU") {
    // Tolerances: losses and gradient norms within 1e-3 relative (products and reductions
    // round in another order). Adam moves a parameter by about lr a step whatever its
    // gradient's size (by up to 16 lr with beta1 0.5), so an element whose gradient is
    // rounding noise may step another way: of each parameter at most 0.1% of the elements
    // (and at least one) may be more than 1e-4 from the CPU's, and the mean difference is
    // within 1e-5.
    const Device dev = cuda_device();
    for (const char* graph : {"mlp_gan.json", "dcgan.json"}) {
      INFO(graph);
      const Model m = load_model(std::string(WEFT_SOURCE_DIR) + "/graphs/" + graph);
      SessionOptions on_cpu, on_cuda;
      on_cuda.device = dev;
      Session cpu(m, on_cpu), gpu(m, on_cuda);
      for (auto& ph : gpu.phases) CHECK(ph.bound.plan->device == dev);
      const int steps = 3;
      for (int s = 0; s < steps; ++s) {
        const std::vector<double> a = cpu.train_step(), b = gpu.train_step();
        REQUIRE(a.size() == b.size());
        for (size_t i = 0; i < a.size(); ++i)
          CHECK_MESSAGE(std::abs(a[i] - b[i]) <= 1e-3 * std::max(1.0, std::abs(a[i])), "step ", s,
                        " value ", i, ": ", b[i], " on cuda, ", a[i], " on the CPU");
      }
      for (auto& [name, p] : cpu.params) {
        INFO(name);
        const Tensor want = on_host(p), got = on_host(gpu.params.at(name));
        double sum = 0;
        int64_t far = 0;
        for (int64_t k = 0; k < want.numel(); ++k) {
          const double e = std::abs(got.at(k) - want.at(k));
          sum += e;
          far += e > 1e-4;
        }
        CHECK(far <= std::max<int64_t>(1, want.numel() / 1000));
        CHECK(sum / double(want.numel()) <= 1e-5);
      }
      const Tensor a = on_host(cpu.evaluate("samples", 16, "test", 0)),
                   b = on_host(gpu.evaluate("samples", 16, "test", 0));
      double mean = 0;
      for (int64_t k = 0; k < a.numel(); ++k) mean += std::abs(a.at(k) - b.at(k));
      CHECK(mean / double(a.numel()) <= 1e-3);
    }
  }

  TEST_CASE("the runner trains dcgan on cuda and resumes on the CPU") {
    const std::string w = WEFT_BINARY, lib = WEFT_CUDA_PLUGIN,
                      graph = std::string(WEFT_SOURCE_DIR) + "/graphs/dcgan.json";
    const fs::path dir = fs::temp_directory_path() / "weft_cuda_runner";
    fs::remove_all(dir);
    std::string out;
    CHECK_MESSAGE(test::run_command(w + " train " + graph + " --plugin " + lib +
                                        " --device cuda --steps 2 --quiet --out " + dir.string(),
                                    out) == 0,
                  out);
    CHECK(fs::exists(dir / "checkpoint.safetensors"));
    CHECK_MESSAGE(
        test::run_command(
            w + " train " + graph + " --steps 3 --quiet --resume --out " + dir.string(), out) == 0,
        out);
  }
}

int main(int argc, char** argv) {
  weft::choose_openmp_wait_policy(argv);
  bool gpu = false;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--gpu") == 0)
      gpu = true;
    else
      args.push_back(argv[i]);
  }
  doctest::Context context(int(args.size()), args.data());
  if (gpu) {
    try {
      load_cuda();
      const std::string why = unavailable();
      if (!why.empty()) {
        std::printf("SKIPPED: the GPU tests of weft-cuda need a usable CUDA device: %s\n",
                    why.c_str());
        return kSkipped;
      }
    } catch (const std::exception& e) {
      std::printf("the plugin did not load: %s\n", e.what());
      return 1;
    }
    context.addFilter("test-suite", "gpu");
  } else {
    context.addFilter("test-suite-exclude", "gpu");
  }
  return context.run();
}

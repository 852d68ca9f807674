// What each kernel of the CUDA plugin computes, in code that nvcc and the host compiler both
// read: the plans a kernel's create() makes from the node's shapes and attributes, and the
// per-element functions its device code calls. tests/test_cuda.cpp runs these same
// functions on the CPU against weft's own kernels, which is how the arithmetic is tested on
// a machine without a GPU. Nothing here calls CUDA.
#pragma once

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include "../weft_plugin.h"

#if defined(__CUDACC__)
#define WEFT_HD __host__ __device__ inline
#else
#define WEFT_HD inline
#endif

namespace weft_cuda {

// ---- attributes ------------------------------------------------------------------------

// A node's attributes as weft passes them: one JSON object (nlohmann's dump) whose values
// are numbers, booleans, strings, null, lists, or objects (initializers), kept as raw
// text per top-level key. Only top-level keys are looked up, so that an initializer's
// {"normal": {"mean": 1}} is never read as broadcast_like's "mean".
class Attrs {
 public:
  explicit Attrs(const char* json) {
    const char* p = skip_space(json ? json : "");
    if (*p != '{') return;
    p = skip_space(p + 1);
    if (*p == '}') {
      ok_ = true;
      return;
    }
    for (;;) {
      if (*p != '"') return;
      const char* key_end = skip_value(p);
      if (!key_end) return;
      const std::string key(p + 1, key_end - 1);
      p = skip_space(key_end);
      if (*p != ':') return;
      const char* value = skip_space(p + 1);
      const char* value_end = skip_value(value);
      if (!value_end) return;
      entries_.push_back({key, std::string(value, value_end)});
      p = skip_space(value_end);
      if (*p == ',') {
        p = skip_space(p + 1);
        continue;
      }
      ok_ = *p == '}';
      return;
    }
  }
  bool ok() const { return ok_; }
  // The raw JSON text of a key's value; "" when absent.
  std::string raw(const char* key) const {
    for (const Entry& e : entries_)
      if (e.key == key) return e.value;
    return "";
  }
  double number(const char* key, double fallback) const {
    const std::string v = raw(key);
    if (v.empty() || v == "null" || v == "true" || v == "false" || v[0] == '"') return fallback;
    return strtod(v.c_str(), nullptr);
  }
  bool flag(const char* key, bool fallback) const {
    const std::string v = raw(key);
    return v == "true" ? true : v == "false" ? false : fallback;
  }
  std::string text(const char* key, const std::string& fallback) const {
    const std::string v = raw(key);
    return v.size() >= 2 && v[0] == '"' ? v.substr(1, v.size() - 2) : fallback;
  }
  // An integer or a list of integers ("stride": 2 or [2, 1]); empty when absent or null.
  std::vector<int64_t> ints(const char* key) const {
    std::vector<int64_t> r;
    const std::string v = raw(key);
    if (v.empty() || v == "null") return r;
    const char* p = v.c_str();
    if (*p == '[') ++p;
    for (;;) {
      p = skip_space(p);
      if (*p == ']' || *p == 0) return r;
      char* end = nullptr;
      r.push_back(strtoll(p, &end, 10));
      if (end == p) return r;
      p = skip_space(end);
      if (*p == ',') ++p;
    }
  }

 private:
  struct Entry {
    std::string key, value;
  };
  static const char* skip_space(const char* p) {
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') ++p;
    return p;
  }
  // The end of the JSON value starting at p, or null when it is malformed.
  static const char* skip_value(const char* p) {
    p = skip_space(p);
    if (*p == '"') {
      for (++p; *p && *p != '"'; ++p)
        if (*p == '\\' && p[1]) ++p;
      return *p == '"' ? p + 1 : nullptr;
    }
    if (*p == '{' || *p == '[') {
      const char close = *p == '{' ? '}' : ']';
      p = skip_space(p + 1);
      if (*p == close) return p + 1;
      for (;;) {
        if (close == '}') {  // a key and its colon first
          p = skip_value(p);
          if (!p) return nullptr;
          p = skip_space(p);
          if (*p != ':') return nullptr;
          ++p;
        }
        p = skip_value(p);
        if (!p) return nullptr;
        p = skip_space(p);
        if (*p == ',') {
          p = skip_space(p + 1);
          continue;
        }
        return *p == close ? p + 1 : nullptr;
      }
    }
    const char* start = p;  // a number, true, false or null
    while (*p && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n') ++p;
    return p == start ? nullptr : p;
  }
  std::vector<Entry> entries_;
  bool ok_ = false;
};

// ---- shapes ----------------------------------------------------------------------------

struct Shape {
  int ndim = 0;
  int64_t d[WEFT_MAX_DIMS] = {};
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= d[i];
    return n;
  }
};
inline Shape shape_of(int32_t ndim, const int64_t* dims) {
  Shape s;
  s.ndim = ndim;
  for (int i = 0; i < ndim && i < WEFT_MAX_DIMS; ++i) s.d[i] = dims[i];
  return s;
}
inline Shape in_shape(const weft_kernel_setup& s, int i) {
  return shape_of(s.in_ndim[i], s.in_shape[i]);
}
inline Shape out_shape(const weft_kernel_setup& s, int i) {
  return shape_of(s.out_ndim[i], s.out_shape[i]);
}
inline std::string shape_text(const Shape& s) {
  std::string r = "[";
  for (int i = 0; i < s.ndim; ++i) {
    if (i) r += ", ";
    r += std::to_string(s.d[i]);
  }
  return r + "]";
}

// The offset of element i of a row-major walk over `size` (n axes) when axis a advances
// by stride[a].
WEFT_HD int64_t walk_offset(const int64_t* size, const int64_t* stride, int n, int64_t i) {
  int64_t off = 0;
  for (int a = n - 1; a >= 0; --a) {
    const int64_t q = i / size[a];
    off += (i - q * size[a]) * stride[a];
    i = q;
  }
  return off;
}

// ---- broadcasting (add, sub, mul, div, broadcast_like) -----------------------------------

// Output element i reads input k at offset(k, i), numpy's broadcasting. The output's axes
// are merged where every input walks them as one axis and size-1 axes are dropped, so that
// the usual cases (same shape, a row vector, a scalar) walk one or two axes.
struct Broadcast {
  int ndim = 0;
  int n_in = 0;
  bool identity = false;  // every input has the output's elements in its order
  int64_t size[WEFT_MAX_DIMS] = {};
  int64_t stride[2][WEFT_MAX_DIMS] = {};  // 0 along an axis the input is broadcast on
};

inline Broadcast make_broadcast(const Shape& out, const Shape* in, int n_in) {
  Broadcast b;
  b.n_in = n_in;
  b.identity = true;
  for (int k = 0; k < n_in; ++k) b.identity = b.identity && in[k].numel() == out.numel();
  int64_t size[WEFT_MAX_DIMS], stride[2][WEFT_MAX_DIMS];
  for (int a = 0; a < out.ndim; ++a) {
    size[a] = out.d[a];
    for (int k = 0; k < n_in; ++k) {
      const int ia = a - (out.ndim - in[k].ndim);  // inputs align on their last axes
      int64_t step = 0;
      if (ia >= 0 && in[k].d[ia] != 1) {
        step = 1;
        for (int j = ia + 1; j < in[k].ndim; ++j) step *= in[k].d[j];
      }
      stride[k][a] = step;
    }
  }
  for (int a = 0; a < out.ndim; ++a) {
    if (size[a] == 1) continue;
    bool merge = b.ndim > 0;
    for (int k = 0; k < n_in && merge; ++k)
      merge = b.stride[k][b.ndim - 1] == stride[k][a] * size[a];
    if (merge) {
      b.size[b.ndim - 1] *= size[a];
      for (int k = 0; k < n_in; ++k) b.stride[k][b.ndim - 1] = stride[k][a];
    } else {
      b.size[b.ndim] = size[a];
      for (int k = 0; k < n_in; ++k) b.stride[k][b.ndim] = stride[k][a];
      ++b.ndim;
    }
  }
  return b;
}

WEFT_HD int64_t broadcast_offset(const Broadcast& b, int k, int64_t i) {
  return b.identity ? i : walk_offset(b.size, b.stride[k], b.ndim, i);
}

enum BinaryKind { kAdd, kSub, kMul, kDiv };

inline bool binary_kind(const std::string& op, int& kind) {
  const char* const names[] = {"add", "sub", "mul", "div"};
  for (int k = 0; k < 4; ++k)
    if (op == names[k]) {
      kind = k;
      return true;
    }
  return false;
}

// broadcast_like's factor: with mean, the input's elements over the output's (each copy's
// share), rounded to f32 once as ops/reduce.cpp's BroadcastRef does, then one f32 product.
inline float broadcast_like_scale(const Shape& in, const Shape& out, bool mean) {
  return mean ? float(double(in.numel()) / double(out.numel())) : 1.0f;
}

// In f32: the reference's float(double(a) op double(b)) is the same number, double having
// more than twice float's precision.
WEFT_HD float binary_value(int kind, float a, float b) {
  switch (kind) {
    case kAdd:
      return a + b;
    case kSub:
      return a - b;
    case kMul:
      return a * b;
    default:
      return a / b;
  }
}

// ---- reductions (sum, mean) ------------------------------------------------------------

// Output element o is the sum of the input at offset(o) + fold_offset(j), j < fold_count,
// times scale (1, or for mean the output's elements over the input's). Kept and folded axes
// are each merged where adjacent (the input is dense, so adjacent axes of one kind are one).
struct Reduce {
  int n_keep = 0, n_fold = 0;
  int64_t keep_size[WEFT_MAX_DIMS] = {}, keep_stride[WEFT_MAX_DIMS] = {};
  int64_t fold_size[WEFT_MAX_DIMS] = {}, fold_stride[WEFT_MAX_DIMS] = {};
  int64_t n_out = 1, fold_count = 1;
  double scale = 1;
};

// `axes` as the sum and mean ops take them (negative from the end, empty for all); false
// with the reason when one is out of range.
inline bool make_reduce(const Shape& in, const std::vector<int64_t>& axes, bool mean, Reduce& r,
                        std::string& why) {
  bool folded[WEFT_MAX_DIMS] = {};
  for (int64_t a : axes) {
    const int64_t k = a < 0 ? a + in.ndim : a;
    if (k < 0 || k >= in.ndim) {
      why = "axis " + std::to_string(a) + " is out of range for " + shape_text(in);
      return false;
    }
    folded[k] = true;
  }
  if (axes.empty())
    for (int a = 0; a < in.ndim; ++a) folded[a] = true;
  r = Reduce();
  int last = -1;  // 0 kept, 1 folded: the kind of the last axis added
  for (int a = 0; a < in.ndim; ++a) {
    int64_t stride = 1;
    for (int j = a + 1; j < in.ndim; ++j) stride *= in.d[j];
    if (in.d[a] == 1) continue;
    const int kind = folded[a] ? 1 : 0;
    int64_t* size = kind ? r.fold_size : r.keep_size;
    int64_t* strides = kind ? r.fold_stride : r.keep_stride;
    int& n = kind ? r.n_fold : r.n_keep;
    if (kind == last) {
      size[n - 1] *= in.d[a];
      strides[n - 1] = stride;
    } else {
      size[n] = in.d[a];
      strides[n] = stride;
      ++n;
    }
    last = kind;
    (kind ? r.fold_count : r.n_out) *= in.d[a];
  }
  r.scale = mean ? double(r.n_out) / double(in.numel()) : 1.0;
  return true;
}

WEFT_HD int64_t reduce_base(const Reduce& r, int64_t o) {
  return walk_offset(r.keep_size, r.keep_stride, r.n_keep, o);
}
WEFT_HD int64_t reduce_step(const Reduce& r, int64_t j) {
  return walk_offset(r.fold_size, r.fold_stride, r.n_fold, j);
}
// One output element, its elements summed in order in double: the device's kernel for
// outputs that fold few elements each, and the test's model of the block reduction.
WEFT_HD float reduce_serial(const Reduce& r, const float* x, int64_t o) {
  const int64_t base = reduce_base(r, o);
  double s = 0;
  for (int64_t j = 0; j < r.fold_count; ++j) s += double(x[base + reduce_step(r, j)]);
  return float(s * r.scale);
}

// ---- activations -----------------------------------------------------------------------

enum UnaryKind { kNeg, kRelu, kLeakyRelu, kTanh, kSigmoid, kSoftplus, kIdentity };
enum BackwardKind { kReluBackward, kLeakyReluBackward, kTanhBackward };

// The kind of an activation op or its backward; false for another op.
inline bool unary_kind(const std::string& op, int& kind, bool& backward) {
  static const struct {
    const char* op;
    int kind;
    bool backward;
  } kinds[] = {{"neg", kNeg, false},
               {"relu", kRelu, false},
               {"leaky_relu", kLeakyRelu, false},
               {"tanh", kTanh, false},
               {"sigmoid", kSigmoid, false},
               {"softplus", kSoftplus, false},
               {"relu_backward", kReluBackward, true},
               {"leaky_relu_backward", kLeakyReluBackward, true},
               {"tanh_backward", kTanhBackward, true}};
  for (const auto& k : kinds)
    if (op == k.op) {
      kind = k.kind;
      backward = k.backward;
      return true;
    }
  return false;
}

// In double, as ops/eltwise.cpp's reference kernels, rounded once to f32.
WEFT_HD double unary_double(int kind, double alpha, double x) {
  switch (kind) {
    case kNeg:
      return -x;
    case kRelu:
      return x > 0 ? x : 0.0;
    case kLeakyRelu:
      return x > 0 ? x : alpha * x;
    case kTanh:
      return tanh(x);
    case kSigmoid:
      return 1.0 / (1.0 + exp(-x));
    case kSoftplus:
      return fmax(x, 0.0) + log1p(exp(-fabs(x)));
    default:
      return x;
  }
}
WEFT_HD float unary_value(int kind, double alpha, float x) {
  return float(unary_double(kind, alpha, double(x)));
}
// dx from dy and the forward's output y.
WEFT_HD float backward_value(int kind, double alpha, float dy, float y) {
  switch (kind) {
    case kReluBackward:
      return y > 0 ? dy : 0.0f;
    case kLeakyReluBackward:
      return y > 0 ? dy : float(alpha * double(dy));
    default:
      return float(double(dy) * (1 - double(y) * double(y)));
  }
}
// linear_act's epilogue: act(product + bias), the sum in double as the reference's.
WEFT_HD float bias_act_value(int kind, double alpha, float product, const float* bias,
                             int64_t col) {
  const double s = double(product) + (bias ? double(bias[col]) : 0.0);
  return float(unary_double(kind, alpha, s));
}

// ---- batch norm ------------------------------------------------------------------------

// x [N, C, inner...] as [n, c, inner]; a channel's elements e < n * inner.
struct BatchNorm {
  int64_t n = 0, c = 0, inner = 1;
  WEFT_HD int64_t count() const { return n * inner; }
};
WEFT_HD int64_t bn_offset(const BatchNorm& q, int64_t k, int64_t e) {
  const int64_t i = e / q.inner;
  return (i * q.c + k) * q.inner + (e - i * q.inner);
}
WEFT_HD int64_t bn_channel(const BatchNorm& q, int64_t at) { return (at / q.inner) % q.c; }

// x [N, C] or [N, C, H, W] as [n, c, inner]; false with the reason otherwise.
inline bool batch_norm_geometry(const Shape& x, BatchNorm& q, std::string& why) {
  if (x.ndim != 2 && x.ndim != 4) {
    why = "batch norm takes [N, C] or [N, C, H, W], got " + shape_text(x);
    return false;
  }
  q.n = x.d[0];
  q.c = x.d[1];
  q.inner = x.ndim == 4 ? x.d[2] * x.d[3] : 1;
  return true;
}

// The slope below zero of what follows the normalization (ops/norm.cpp's negative_slope):
// 1 for batch_norm, 0 for batch_norm_act's relu, alpha for its leaky_relu.
inline bool bn_slope(const std::string& op, const Attrs& attrs, double& slope, std::string& why) {
  slope = 1;
  if (op != "batch_norm_act") return true;
  const std::string act = attrs.text("activation", "relu");
  if (act != "relu" && act != "leaky_relu") {
    why = "batch_norm_act with activation " + act;
    return false;
  }
  slope = act == "leaky_relu" ? attrs.number("alpha", 0.0) : 0.0;
  return true;
}

// A channel's statistics once its sum and sum of squared deviations are known (training),
// or the running ones (inference); then the scale normalization multiplies by. The running
// statistics follow ops/norm.cpp's update_running (PyTorch's: unbiased variance).
WEFT_HD void bn_finish_channel(bool training, double mu, double squares, int64_t count,
                               double momentum, double eps, float gamma, float* mean, float* var,
                               float* running_mean, float* running_var, float* scale) {
  if (training) {
    *mean = float(mu);
    *var = float(squares / double(count));
    const double unbias = count > 1 ? double(count) / double(count - 1) : 1.0;
    *running_mean = float((1 - momentum) * double(*running_mean) + momentum * double(*mean));
    *running_var = float((1 - momentum) * double(*running_var) + momentum * double(*var) * unbias);
  } else {
    *mean = *running_mean;
    *var = *running_var;
  }
  *scale = float(double(gamma) / sqrt(double(*var) + eps));
}
// slope: 1 for batch_norm, 0 for relu, alpha for leaky_relu (batch_norm_act).
WEFT_HD float bn_apply(float x, float mean, float scale, float shift, double slope) {
  const float v = (x - mean) * scale + shift;
  return v > 0 ? v : float(slope * double(v));
}
// From a channel's sum of dy and sum of dy (x - mean): dgamma, dbeta and the coefficients of
// dx = a dy + b (x - mean) + c (ops/norm.cpp's planar kernel).
WEFT_HD void bn_backward_channel(double sum_dy, double sum_dy_xc, int64_t count, float gamma,
                                 float var, double eps, float* dgamma, float* dbeta, float* coef) {
  const double inv = 1 / sqrt(double(var) + eps), g = double(gamma) * inv, n = double(count);
  const double sx = sum_dy_xc * inv;
  *dbeta = float(sum_dy);
  *dgamma = float(sx);
  coef[0] = float(g);
  coef[1] = float(-g / n * sx * inv);
  coef[2] = float(-g / n * sum_dy);
}
WEFT_HD float bn_backward_dx(const float* coef, float dy, float x, float mean) {
  return coef[0] * dy + coef[1] * (x - mean) + coef[2];
}

// ---- optimizers (ops/optim.cpp, in f32 as its f32 kernels) -------------------------------

// What every update shares: grad read as clamp(grad * grad_scale, -clip_value, clip_value)
// plus weight_decay * param, and the parameter clamped after when clip_weights > 0.
struct Update {
  int kind = 0;  // 0 sgd, 1 adam, 2 rmsprop
  float grad_scale = 1, clip_value = INFINITY, weight_decay = 0, clip_weights = 0;
  bool clip_after = false;
  float lr = 0, momentum = 0, beta1 = 0, beta2 = 0, eps = 0, alpha = 0;
  float step_size = 0, vscale = 0;  // adam's per-call scalars
  bool nesterov = false, first = false, has_buffer = false;
};

// An update from its op (sgd_update, adam_update, rmsprop_update), attributes and number of
// inputs (param, grad, sumsq, state...); n_state: how many state tensors follow sumsq.
inline bool make_update(const std::string& op, const Attrs& attrs, int32_t n_in, Update& u,
                        int& n_state, std::string& why) {
  u = Update();
  if (op == "sgd_update")
    u.kind = 0;
  else if (op == "adam_update")
    u.kind = 1;
  else if (op == "rmsprop_update")
    u.kind = 2;
  else {
    why = "not an optimizer update: " + op;
    return false;
  }
  n_state = u.kind == 0 ? (n_in > 3 ? 1 : 0) : 2;
  if (n_in < 3 + n_state) {
    why = op + " without its state inputs";
    return false;
  }
  const double clip_value = attrs.number("clip_value", 0);
  u.clip_value = clip_value > 0 ? float(clip_value) : INFINITY;
  u.weight_decay = float(attrs.number("weight_decay", 0));
  const double clip_weights = attrs.number("clip_weights", 0);
  u.clip_after = clip_weights > 0;
  u.clip_weights = float(clip_weights);
  u.lr = float(attrs.number("lr", 0.01));
  u.momentum = float(attrs.number("momentum", 0));
  u.nesterov = attrs.flag("nesterov", false);
  u.has_buffer = u.kind == 0 && n_state == 1;
  u.beta1 = float(attrs.number("beta1", 0.9));
  u.beta2 = float(attrs.number("beta2", 0.999));
  u.eps = float(attrs.number("eps", 1e-8));
  u.alpha = float(attrs.number("alpha", 0.99));
  return true;
}

// How many per-call scalars an update needs: [grad_scale, squares] and sgd's first,
// adam's step_size and vscale.
inline int update_scalar_count(const Update& u) { return u.kind == 1 ? 4 : u.kind == 0 ? 3 : 2; }

// The update for one call, its scalars filled in (at least update_scalar_count of them).
inline Update update_for_call(const Update& u, const double* scalars) {
  Update v = u;
  v.grad_scale = float(scalars[0]);
  if (u.kind == 0) v.first = scalars[2] != 0;
  if (u.kind == 1) {
    v.step_size = float(scalars[2]);
    v.vscale = float(scalars[3]);
  }
  return v;
}

WEFT_HD float clamp_value(float v, float lo, float hi) { return v < lo ? lo : hi < v ? hi : v; }

// Updates element k of param and its state (s0, s1: sgd's momentum buffer; adam's m, v;
// rmsprop's square_avg, momentum_buffer).
WEFT_HD void update_element(const Update& u, int64_t k, float* p, const float* g, float* s0,
                            float* s1) {
  const float d =
      clamp_value(g[k] * u.grad_scale, -u.clip_value, u.clip_value) + u.weight_decay * p[k];
  if (u.kind == 0) {
    float step = d;
    if (u.has_buffer) {
      s0[k] = u.first ? d : u.momentum * s0[k] + d;
      step = u.nesterov ? d + u.momentum * s0[k] : s0[k];
    }
    p[k] -= u.lr * step;
  } else if (u.kind == 1) {
    s0[k] = u.beta1 * s0[k] + (1 - u.beta1) * d;
    s1[k] = u.beta2 * s1[k] + (1 - u.beta2) * d * d;
    p[k] -= u.step_size * s0[k] / (sqrtf(s1[k]) * u.vscale + u.eps);
  } else {
    s0[k] = u.alpha * s0[k] + (1 - u.alpha) * d * d;
    const float step = d / (sqrtf(s0[k]) + u.eps);
    if (u.momentum != 0)
      p[k] -= u.lr * (s1[k] = u.momentum * s1[k] + step);
    else
      p[k] -= u.lr * step;
  }
  if (u.clip_after) p[k] = clamp_value(p[k], -u.clip_weights, u.clip_weights);
}

// ---- matrix products (matmul, linear, linear_act) ------------------------------------------

// y [m, n] = op(a) op(b) (matmul), or x [m, k] weight^T + bias with weight [n, k] and an
// activation (linear, linear_act).
struct Matmul {
  bool ta = false, tb = false, bias = false;
  int64_t m = 0, n = 0, k = 0;
  int act = kIdentity;
  double alpha = 0;
};

inline bool make_matmul(const weft_kernel_setup& s, Matmul& g, std::string& why) {
  const Attrs attrs(s.attrs);
  const std::string op = s.op;
  g = Matmul();
  const Shape a = in_shape(s, 0), b = in_shape(s, 1);
  if (a.ndim != 2 || b.ndim != 2) {
    why = "expected 2-D operands";
    return false;
  }
  if (op == "matmul") {
    g.ta = attrs.flag("transpose_a", false);
    g.tb = attrs.flag("transpose_b", false);
    g.m = g.ta ? a.d[1] : a.d[0];
    g.k = g.ta ? a.d[0] : a.d[1];
    g.n = g.tb ? b.d[0] : b.d[1];
    return true;
  }
  g.tb = true;
  g.bias = s.n_in > 2;
  g.m = a.d[0], g.k = a.d[1], g.n = b.d[0];
  if (op == "linear_act") {
    const std::string act = attrs.text("activation", "relu");
    g.alpha = attrs.number("alpha", 0.0);
    if (act == "relu")
      g.act = kRelu;
    else if (act == "leaky_relu")
      g.act = kLeakyRelu;
    else if (act == "sigmoid")
      g.act = kSigmoid;
    else if (act == "tanh")
      g.act = kTanh;
    else {
      why = "linear_act with activation " + act;
      return false;
    }
  }
  return true;
}

// cuBLAS's (column-major) arguments for the row-major product C [m, n] = op(A) op(B), A
// stored [m, k] or, transposed, [k, m], and B [k, n] or [n, k]. A row-major matrix is its
// own transpose in column-major order, so cuBLAS computes C^T = op(B)^T op(A)^T: its first
// operand is B, its second A.
struct BlasGemm {
  bool trans_first, trans_second;
  int64_t m, n, k, ld_first, ld_second, ldc;
};
inline BlasGemm blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k) {
  return {tb, ta, n, m, k, tb ? k : n, ta ? m : k, n};
}

// ---- noise (runtime/rng.h and draw_noise in runtime/sources.cpp) --------------------------

WEFT_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
WEFT_HD double uniform01(uint64_t key, uint64_t i) {
  return double(mix64(key ^ mix64(i + 0x9e3779b97f4a7c15ull)) >> 11) * 0x1.0p-53;
}
WEFT_HD double normal01(uint64_t key, uint64_t i) {
  double u1 = uniform01(key, 2 * i);
  const double u2 = uniform01(key, 2 * i + 1);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
// Element i of a noise input: a + b N(0, 1), or uniform in [a, b). On the device the
// products and sums are rounded one by one (no fused multiply-add), as the host's are.
WEFT_HD float noise_value(bool normal, double a, double b, uint64_t key, uint64_t i) {
#if defined(__CUDA_ARCH__)
  return normal ? float(__dadd_rn(a, __dmul_rn(b, normal01(key, i))))
                : float(__dadd_rn(a, __dmul_rn(__dsub_rn(b, a), uniform01(key, i))));
#else
  return normal ? float(a + b * normal01(key, i)) : float(a + (b - a) * uniform01(key, i));
#endif
}

// ---- convolution (ops/conv.cpp) ----------------------------------------------------------

// One convolution in the view of conv2d: x [n, c, h, w] the large side, weight
// [o, c, kh, kw], y [n, o, oh, ow] the small side. conv_transpose2d and
// conv2d_backward_data map y to x, conv2d_backward_weights (x, y) to the weight.
struct Conv {
  int64_t n = 0, c = 0, h = 0, w = 0, o = 0, oh = 0, ow = 0, kh = 0, kw = 0;
  int64_t sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  WEFT_HD int64_t patch() const { return c * kh * kw; }  // K: rows of a column matrix
  WEFT_HD int64_t pixels() const { return oh * ow; }     // P: its columns per image
};

enum ConvRole { kConvForward, kConvTranspose, kConvData, kConvWeights };

inline bool conv_role(const char* op, ConvRole& role) {
  const std::string s = op ? op : "";
  if (s == "conv2d")
    role = kConvForward;
  else if (s == "conv_transpose2d")
    role = kConvTranspose;
  else if (s == "conv2d_backward_data")
    role = kConvData;
  else if (s == "conv2d_backward_weights")
    role = kConvWeights;
  else
    return false;
  return true;
}

// The geometry of a conv node from its shapes (which tensor is x, the weight and y, by
// role, as ops/conv.cpp's geo_of) and attributes; false with the reason for what this
// plugin does not take (groups > 1).
inline bool make_conv(const weft_kernel_setup& s, ConvRole role, Conv& q, std::string& why) {
  const Attrs attrs(s.attrs);
  if (!attrs.ok()) {
    why = "unreadable attributes";
    return false;
  }
  const int64_t groups = int64_t(attrs.number("groups", 1));
  if (groups != 1) {
    why = "groups = " + std::to_string(groups) + ": the CUDA plugin takes groups = 1 only";
    return false;
  }
  if (s.n_in < 2 || s.n_out < 1) {
    why = "expected two inputs and an output";
    return false;
  }
  Shape x, wt, y;
  switch (role) {
    case kConvForward:
      x = in_shape(s, 0), wt = in_shape(s, 1), y = out_shape(s, 0);
      break;
    case kConvTranspose:
    case kConvData:
      x = out_shape(s, 0), wt = in_shape(s, 1), y = in_shape(s, 0);
      break;
    case kConvWeights:
      x = in_shape(s, 0), wt = out_shape(s, 0), y = in_shape(s, 1);
      break;
  }
  if (x.ndim != 4 || wt.ndim != 4 || y.ndim != 4) {
    why = "expected 4-D tensors";
    return false;
  }
  auto pair = [&](const char* key, int64_t fallback, int64_t& a, int64_t& b) {
    const std::vector<int64_t> v = attrs.ints(key);
    a = v.empty() ? fallback : v[0];
    b = v.size() > 1 ? v[1] : a;
  };
  q.n = x.d[0], q.c = x.d[1], q.h = x.d[2], q.w = x.d[3];
  q.o = y.d[1], q.oh = y.d[2], q.ow = y.d[3], q.kh = wt.d[2], q.kw = wt.d[3];
  pair("stride", 1, q.sh, q.sw);
  pair("pad", 0, q.ph, q.pw);
  pair("dilation", 1, q.dh, q.dw);
  if (wt.d[0] != q.o || wt.d[1] != q.c || y.d[0] != q.n) {
    why = "the weight " + shape_text(wt) + " does not join " + shape_text(x) + " and " +
          shape_text(y);
    return false;
  }
  return true;
}

// im2col: column matrix entry (k, image n, pixel p) of x, k = (channel, ky, kx), zero where
// the tap falls in the padding.
WEFT_HD float im2col_value(const Conv& q, const float* x, int64_t n, int64_t k, int64_t p) {
  const int64_t kx = k % q.kw, ky = (k / q.kw) % q.kh, ic = k / (q.kw * q.kh);
  const int64_t ox = p % q.ow, oy = p / q.ow;
  const int64_t iy = oy * q.sh - q.ph + ky * q.dh, ix = ox * q.sw - q.pw + kx * q.dw;
  if (iy < 0 || iy >= q.h || ix < 0 || ix >= q.w) return 0.0f;
  return x[((n * q.c + ic) * q.h + iy) * q.w + ix];
}

// col2im as a gather: element (n, ic, iy, ix) of x is the sum of the column entries whose
// taps land on it; the column matrix of image n is at col + n * n_stride, entry (k, p) at
// k * k_stride + p. Each element is written once, so no atomics and no zeroing.
WEFT_HD float col2im_value(const Conv& q, const float* col, int64_t k_stride, int64_t n_stride,
                           int64_t n, int64_t ic, int64_t iy, int64_t ix) {
  float s = 0;
  for (int64_t ky = 0; ky < q.kh; ++ky) {
    const int64_t ty = iy + q.ph - ky * q.dh;
    if (ty < 0 || ty % q.sh != 0 || ty / q.sh >= q.oh) continue;
    for (int64_t kx = 0; kx < q.kw; ++kx) {
      const int64_t tx = ix + q.pw - kx * q.dw;
      if (tx < 0 || tx % q.sw != 0 || tx / q.sw >= q.ow) continue;
      const int64_t k = (ic * q.kh + ky) * q.kw + kx, p = (ty / q.sh) * q.ow + tx / q.sw;
      s += col[n * n_stride + k * k_stride + p];
    }
  }
  return s;
}

// Where im2col puts entry (k, image n, pixel p) of a turn of `images` images: col[k *
// k_stride + n * n_stride + p]. Per image ([K, P] each, one batched product per image) for
// conv2d, and col2im reads that layout back for conv2d_backward_data and conv_transpose2d;
// per row across the turn's images ([K, images * P], one product over them all) for
// conv2d_backward_weights.
WEFT_HD int64_t col_k_stride(const Conv& q, ConvRole role, int64_t images) {
  return role == kConvWeights ? images * q.pixels() : q.pixels();
}
WEFT_HD int64_t col_n_stride(const Conv& q, ConvRole role) {
  return role == kConvWeights ? q.pixels() : q.patch() * q.pixels();
}

// Element i of images * K * P (image, then k, then p) of a turn's column matrices, images
// n0.. of x.
WEFT_HD void im2col_element(const Conv& q, const float* x, int64_t n0, int64_t k_stride,
                            int64_t n_stride, int64_t i, float* col) {
  const int64_t kk = q.patch(), pp = q.pixels();
  const int64_t p = i % pp, k = (i / pp) % kk, n = i / (pp * kk);
  col[k * k_stride + n * n_stride + p] = im2col_value(q, x, n0 + n, k, p);
}

// Element i of images * C * H * W of x's images n0.. from the turn's column matrices.
WEFT_HD void col2im_element(const Conv& q, const float* col, int64_t k_stride, int64_t n_stride,
                            int64_t n0, int64_t i, float* x) {
  const int64_t hw = q.h * q.w;
  const int64_t ix = i % q.w, iy = (i / q.w) % q.h, ic = (i / hw) % q.c, n = i / (hw * q.c);
  x[((n0 + n) * q.c + ic) * hw + iy * q.w + ix] =
      col2im_value(q, col, k_stride, n_stride, n, ic, iy, ix);
}

// Element i of images * O * P: dyt [o, images * P] from dy's images n0.. ([o, P] each), the
// left operand of the weights' product.
WEFT_HD void gather_rows_element(const Conv& q, const float* dy, int64_t n0, int64_t images,
                                 int64_t i, float* dyt) {
  const int64_t pp = q.pixels();
  const int64_t p = i % pp, o = (i / pp) % q.o, n = i / (pp * q.o);
  dyt[o * images * pp + n * pp + p] = dy[((n0 + n) * q.o + o) * pp + p];
}

// y [n, channels, hw] += bias[channel], element i.
WEFT_HD void channel_bias_element(const float* bias, int64_t channels, int64_t hw, int64_t i,
                                  float* y) {
  y[i] += bias[(i / hw) % channels];
}

// The row-major products of one turn: conv2d y_n [o, P] = w [o, K] col_n [K, P] (batched
// over the turn's images); conv2d_backward_data and conv_transpose2d col_n [K, P] = w^T dy_n
// (batched); conv2d_backward_weights dw [o, K] (+)= dyt [o, images P] col^T. stride_*: the
// elements between one image's operand and the next's (0: the same weight for all).
struct ConvGemm {
  bool ta, tb;
  int64_t m, n, k, stride_a, stride_b, stride_c, batch;
};
inline ConvGemm conv_gemm(const Conv& q, ConvRole role, int64_t images) {
  const int64_t kk = q.patch(), pp = q.pixels();
  switch (role) {
    case kConvForward:
      return {false, false, q.o, pp, kk, 0, kk * pp, q.o * pp, images};
    case kConvWeights:
      return {false, true, q.o, kk, images * pp, 0, 0, 0, 1};
    default:
      return {true, false, kk, pp, q.o, 0, q.o * pp, kk * pp, images};
  }
}

// Floats of workspace per image: its column matrix, and for the weights' gradient its rows
// of dy too.
inline int64_t im2col_floats_per_image(const Conv& q, ConvRole role) {
  return q.patch() * q.pixels() + (role == kConvWeights ? q.o * q.pixels() : 0);
}
// Images per turn, so that a turn's workspace stays within budget_bytes (at least one).
inline int64_t im2col_chunk(const Conv& q, ConvRole role, int64_t budget_bytes) {
  int64_t chunk = budget_bytes / (im2col_floats_per_image(q, role) * int64_t(sizeof(float)));
  if (chunk < 1) chunk = 1;
  return chunk < q.n ? chunk : q.n;
}

}  // namespace weft_cuda

// Optimizer updates as ops, so that a device provides them as it provides any kernel: the
// trainer's optimizers (runtime/optimizer.h) make one kernel of these per parameter on the
// parameters' device and run it after each backward pass. Graphs do not name them.
//
// Each takes (param, grad, sumsq, state...) and updates param and its state in place. The
// scalars of each call are [grad_scale, squares, ...]: the gradient is read as
// clamp(grad * grad_scale, -clip_value, clip_value) (grad_scale < 1 when the optimizer
// clips by global norm), and when squares is 1 the sum of the squared raw gradient is added
// to sumsq (f64 [1]), in the same pass (the gradient norm that is logged). clip_weights > 0
// clamps the parameter after the update (WGAN's critic). The formulas are PyTorch's.
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/common.h"

namespace weft::ops {

namespace {

// Sixteen partial sums, so that the loop vectorizes without reassociating a single sum
// (omp simd's reduction was not vectorized inside the parallel loop below).
template <class T>
double sum_squares(const T* g, int64_t b, int64_t e) {
  double part[16] = {};
  int64_t k = b;
  for (; k + 16 <= e; k += 16)
    for (int l = 0; l < 16; ++l) part[l] += double(g[k + l]) * double(g[k + l]);
  double s = 0;
  for (; k < e; ++k) s += double(g[k]) * double(g[k]);
  for (double v : part) s += v;
  return s;
}

// Runs body(k) for every element k in parallel chunks, on the OpenMP team oneDNN uses: its
// threads are still spinning from the last primitive, and a second (TBB) pool on the same
// cores would fight them (see runtime/threading.h). With `squares` it also returns the sum
// of the squared gradient, in the same pass. Bodies capture their pointers by value and the
// loops are `omp simd`: captured by reference, each pointer was reloaded from the closure
// after every store (it might alias), and GCC vectorized none of the update loops.
template <class T, class Body>
double for_elements(int64_t n, const T* g, bool squares, Body body) {
  const int64_t grain = 1 << 15, pieces = (n + grain - 1) / grain;
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (pieces > 1)
  for (int64_t c = 0; c < pieces; ++c) {
    const int64_t b = c * grain, e = std::min(n, b + grain);
    // The squares first, over a chunk small enough (128 KiB of f32) that the update reads
    // it again from cache: one loop doing both was not vectorized.
    if (squares) total += sum_squares(g, b, e);
#pragma omp simd
    for (int64_t k = b; k < e; ++k) body(k);
  }
  return total;
}

// What every update shares: the gradient transform and the weight clamp after it.
template <class T>
struct Update {
  const KernelInfo& info;
  const KernelArgs& a;
  int64_t n = a.in[0]->numel();
  T* p = a.in[0]->data<T>();
  const T* g = a.in[1]->data<T>();
  double* sumsq = a.in[2]->data<double>();
  T gs = T(a.scalars[0]);
  T gc = T(info.attrs.at("clip_value").get<double>() > 0 ? info.attrs.at("clip_value").get<double>()
                                                         : std::numeric_limits<double>::infinity());
  bool squares = a.scalars[1] != 0;
  T* state(int i) const { return a.in[size_t(3 + i)]->data<T>(); }
  double attr(const char* name) const { return info.attrs.at(name).get<double>(); }
  template <class Body>
  void run(Body body) const {
    const double s = for_elements(n, g, squares, body);
    if (squares) *sumsq += s;
    const double w = attr("clip_weights");
    if (w > 0) {
      T* q = p;
      const T c = T(w);
      for_elements(n, q, false, [=](int64_t k) { q[k] = std::clamp(q[k], -c, c); });
    }
  }
};

std::vector<Shape> update_shape(const ShapeContext& c) {
  for (size_t i = 3; i < c.in.size(); ++i)
    if (c.in[i] != c.in[0]) throw ShapeError("optimizer state must have the parameter's shape");
  if (c.in[1] != c.in[0]) throw ShapeError("the gradient must have the parameter's shape");
  return {};
}

// Kernels for f32 and f64 from one generic lambda, under the name "cpu".
template <class G>
std::vector<KernelEntry> cpu_kernels(G g) {
  std::vector<KernelEntry> r = reference(g);
  for (auto& e : r) e.name = "cpu";
  return r;
}

// What the three updates share: (param, grad, sumsq) first, weight decay and clipping.
OpDef& update_schema(OpDef& d) {
  return d.input("param")
      .input("grad")
      .input("sumsq")
      .shape(update_shape)
      .internal("run by the trainer's optimizers")
      .attr("weight_decay", AttrType::Float, 0.0, "added to the gradient times the parameter")
      .attr("clip_value", AttrType::Float, 0.0, "clamp each gradient element; 0 is off")
      .attr("clip_weights", AttrType::Float, 0.0, "clamp each parameter after; 0 is off")
      .attr("clip_norm", AttrType::Float, 0.0,
            "read by the optimizer, which passes the scale as grad_scale");
}

}  // namespace

WEFT_OP(sgd_update)
    .doc(
        "p -= lr * d (with momentum: buf = mom * buf + d, first step buf = d; Nesterov: "
        "d + mom * buf), d = clipped grad + weight_decay * p; scalars [grad_scale, squares, "
        "first]")
    .with(update_schema)
    .optional_input("momentum_buffer")
    .attr("lr", AttrType::Float, 0.01, "learning rate")
    .attr("momentum", AttrType::Float, 0.0, "momentum")
    .attr("nesterov", AttrType::Bool, false, "Nesterov momentum")
    .mutates({0, 2, 3})
    .kernels(cpu_kernels([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      const Update<T> u{info, a};
      T* p = u.p;
      const T* g = u.g;
      const T gs = u.gs, gc = u.gc;
      T* buf = a.in.size() > 3 ? u.state(0) : nullptr;
      const T lr = T(u.attr("lr")), mom = T(u.attr("momentum")), wd = T(u.attr("weight_decay"));
      const bool first = a.scalars[2] != 0, nesterov = info.attrs.at("nesterov").get<bool>();
      u.run([=](int64_t k) {
        T d = std::clamp(g[k] * gs, -gc, gc) + wd * p[k];
        if (buf) {
          buf[k] = first ? d : mom * buf[k] + d;
          d = nesterov ? d + mom * buf[k] : buf[k];
        }
        p[k] -= lr * d;
      });
    }));

WEFT_OP(adam_update)
    .doc(
        "m = b1 m + (1 - b1) d, v = b2 v + (1 - b2) d^2, p -= step_size * m / (sqrt(v) * "
        "vscale + eps), d = clipped grad + weight_decay * p; scalars [grad_scale, squares, "
        "step_size = lr / (1 - b1^t), vscale = 1 / sqrt(1 - b2^t)]")
    .with(update_schema)
    .input("m")
    .input("v")
    .attr("lr", AttrType::Float, 1e-3, "learning rate (the step size carries it)")
    .attr("beta1", AttrType::Float, 0.9, "decay of the first moment")
    .attr("beta2", AttrType::Float, 0.999, "decay of the second moment")
    .attr("eps", AttrType::Float, 1e-8, "added to the denominator")
    .mutates({0, 2, 3, 4})
    .kernels(cpu_kernels([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      const Update<T> u{info, a};
      T* p = u.p;
      const T* g = u.g;
      const T gs = u.gs, gc = u.gc;
      T *m = u.state(0), *v = u.state(1);
      const T b1 = T(u.attr("beta1")), b2 = T(u.attr("beta2")), wd = T(u.attr("weight_decay")),
              eps = T(u.attr("eps"));
      // lr * mhat / (sqrt(vhat) + eps) with the bias corrections folded into two scalars.
      const T step = T(a.scalars[2]), vscale = T(a.scalars[3]);
      u.run([=](int64_t k) {
        const T d = std::clamp(g[k] * gs, -gc, gc) + wd * p[k];
        m[k] = b1 * m[k] + (1 - b1) * d;
        v[k] = b2 * v[k] + (1 - b2) * d * d;
        p[k] -= step * m[k] / (std::sqrt(v[k]) * vscale + eps);
      });
    }));

WEFT_OP(rmsprop_update)
    .doc(
        "sq = alpha sq + (1 - alpha) d^2, p -= lr * d / (sqrt(sq) + eps) (with momentum: buf = "
        "mom * buf + d / (sqrt(sq) + eps), p -= lr * buf), d = clipped grad + weight_decay * "
        "p; scalars [grad_scale, squares]")
    .with(update_schema)
    .input("square_avg")
    .input("momentum_buffer")
    .attr("lr", AttrType::Float, 1e-2, "learning rate")
    .attr("alpha", AttrType::Float, 0.99, "decay of the squared average")
    .attr("eps", AttrType::Float, 1e-8, "added to the denominator")
    .attr("momentum", AttrType::Float, 0.0, "momentum")
    .mutates({0, 2, 3, 4})
    .kernels(cpu_kernels([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      const Update<T> u{info, a};
      T* p = u.p;
      const T* g = u.g;
      const T gs = u.gs, gc = u.gc;
      T *sq = u.state(0), *buf = u.state(1);
      const T lr = T(u.attr("lr")), al = T(u.attr("alpha")), eps = T(u.attr("eps")),
              mom = T(u.attr("momentum")), wd = T(u.attr("weight_decay"));
      auto step = [=](int64_t k) {
        const T d = std::clamp(g[k] * gs, -gc, gc) + wd * p[k];
        sq[k] = al * sq[k] + (1 - al) * d * d;
        return d / (std::sqrt(sq[k]) + eps);
      };
      // Two bodies: a branch inside one kept the loop from being vectorized.
      if (mom != 0)
        u.run([=](int64_t k) { p[k] -= lr * (buf[k] = mom * buf[k] + step(k)); });
      else
        u.run([=](int64_t k) { p[k] -= lr * step(k); });
    }));

WEFT_OP(sum_squares)
    .doc(
        "sumsq += the sum of grad's squared elements (f64): the global norm that clip_norm "
        "needs before any update")
    .input("grad")
    .input("sumsq")
    .shape([](const ShapeContext&) { return std::vector<Shape>{}; })
    .mutates({1})
    .internal("run by the trainer's optimizers")
    .kernels(cpu_kernels([](auto t, const KernelInfo&, const KernelArgs& a) {
      using T = decltype(t);
      *a.in[1]->data<double>() +=
          for_elements(a.in[0]->numel(), a.in[0]->data<T>(), true, [](int64_t) {});
    }));

}  // namespace weft::ops

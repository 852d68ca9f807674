// Reductions and their adjoints. sum/mean reduce over axes; sum_to_like reduces to the
// shape of another value (undoing a broadcast) and broadcast_like expands to it. Each is
// the other's gradient; with mean=true both divide by the number of elements folded, so
// they stay adjoint and mean's gradient needs no batch size at graph-building time.
#include <algorithm>

#include "ops/common.h"

namespace weft::ops {
namespace {

std::vector<int> norm_axes(const json& axes, size_t rank) {
  std::vector<int> r;
  for (auto& a : axes) r.push_back(norm_axis(a.get<int64_t>(), rank));
  if (axes.empty())
    for (size_t i = 0; i < rank; ++i) r.push_back(int(i));
  std::sort(r.begin(), r.end());
  r.erase(std::unique(r.begin(), r.end()), r.end());
  return r;
}

// The reduced shape with the reduced axes kept as 1.
Dims keepdims_of(const Dims& in, const json& axes) {
  Dims kd = in;
  for (int a : norm_axes(axes, in.size())) kd[a] = 1;
  return kd;
}

// Positions along some axes of a tensor, in row-major order: their count, the offset of the
// i-th, and a walk over all of them without a division per position (its odometer `pos` is
// the caller's, so that a kernel allocates it once per thread rather than once per walk).
struct AxisWalk {
  std::vector<int64_t> len, stride;
  int64_t count = 1;

  void add(int64_t l, int64_t s) {
    len.push_back(l);
    stride.push_back(s);
    count *= l;
  }
  int64_t offset(int64_t i) const {
    int64_t off = 0;
    for (int a = int(len.size()) - 1; a >= 0; --a) {
      off += i % len[a] * stride[a];
      i /= len[a];
    }
    return off;
  }
  template <class F>
  void each(std::vector<int64_t>& pos, F f) const {
    pos.assign(len.size(), 0);
    int64_t off = 0;
    for (int64_t i = 0; i < count; ++i) {
      f(off);
      for (int a = int(len.size()) - 1; a >= 0; --a) {  // odometer
        off += stride[a];
        if (++pos[a] < len[a]) break;
        off -= stride[a] * len[a];
        pos[a] = 0;
      }
    }
  }
};

// A row's sum in sixteen independent lanes, so that the compiler may vectorize it without
// reassociating one sum.
template <class T>
T row_sum(const T* s, int64_t len) {
  constexpr int L = 16;
  T lane[L] = {};
  int64_t j = 0;
  for (; j + L <= len; j += L)
    for (int l = 0; l < L; ++l) lane[l] += s[j + l];
  T acc = 0;
  for (; j < len; ++j) acc += s[j];
  for (int l = 0; l < L; ++l) acc += lane[l];
  return acc;
}

// Reduce `in` (any shape) onto `kd` (same rank, 1 on folded axes): sum or mean. Neighbouring
// axes that are both folded or both kept merge first, so that a convolution's bias gradient
// [N,C,H,W] -> [1,C,1,1] sums rows of H*W rather than of W. The output elements are shared
// out on the OpenMP team that runs oneDNN's primitives (see ops/optim.cpp), and each element
// sums its inputs in one fixed order: results do not depend on the thread count.
template <class T>
class ReduceRef : public Kernel {
 public:
  ReduceRef(const Dims& in, const Dims& kd, bool mean)
      : n_in_(numel(in)), n_out_(numel(kd)), mean_(mean) {
    std::vector<std::pair<int64_t, bool>> axes;  // merged: length, folded
    for (size_t i = 0; i < in.size(); ++i) {
      if (in[i] == 1) continue;
      const bool folded = kd[i] != in[i];
      if (!axes.empty() && axes.back().second == folded)
        axes.back().first *= in[i];
      else
        axes.push_back({in[i], folded});
    }
    if (!axes.empty()) {
      len_ = axes.back().first;
      folded_last_ = axes.back().second;
      axes.pop_back();
    }
    int64_t stride = len_;
    for (int a = int(axes.size()) - 1; a >= 0; --a) {
      (axes[a].second ? folded_ : kept_).add(axes[a].first, stride);
      stride *= axes[a].first;
    }
    // add() appended innermost first; the walks want the outermost first.
    for (AxisWalk* w : {&kept_, &folded_}) {
      std::reverse(w->len.begin(), w->len.end());
      std::reverse(w->stride.begin(), w->stride.end());
    }
  }
  void run(const KernelArgs& a) override {
    const T* x = in_ptr<T>(a, 0);
    T* y = out_ptr<T>(a, 0);
    const T scale = mean_ ? T(double(n_out_) / double(n_in_)) : T(1);
    const int64_t len = len_;
    const bool parallel = n_in_ >= (int64_t(1) << 15);
    if (folded_last_) {  // each output element sums rows of `len`
#pragma omp parallel if (parallel && n_out_ > 1)
      {
        std::vector<int64_t> pos;
#pragma omp for schedule(static)
        for (int64_t o = 0; o < n_out_; ++o) {
          const T* base = x + kept_.offset(o);
          T acc = 0;
          folded_.each(pos, [&](int64_t f) { acc += row_sum(base + f, len); });
          y[o] = mean_ ? acc * scale : acc;
        }
      }
      return;
    }
    // The last axis is kept: blocks of `len` output elements add whole rows.
    constexpr int64_t kBlock = 512;
    const int64_t blocks = (len + kBlock - 1) / kBlock, groups = kept_.count;
#pragma omp parallel if (parallel && groups * blocks > 1)
    {
      std::vector<int64_t> pos;
#pragma omp for schedule(static)
      for (int64_t t = 0; t < groups * blocks; ++t) {
        const int64_t g = t / blocks, j0 = t % blocks * kBlock, j1 = std::min(len, j0 + kBlock);
        T* dst = y + g * len;
        std::fill(dst + j0, dst + j1, T(0));
        const T* base = x + kept_.offset(g);
        folded_.each(pos, [&](int64_t f) {
          const T* s = base + f;
          for (int64_t j = j0; j < j1; ++j) dst[j] += s[j];
        });
        if (mean_)
          for (int64_t j = j0; j < j1; ++j) dst[j] *= scale;
      }
    }
  }

 private:
  AxisWalk kept_, folded_;  // the merged axes before the last
  int64_t len_ = 1;         // the last merged axis
  bool folded_last_ = false;
  int64_t n_in_, n_out_;
  bool mean_;
};

// Expand `src` (kd form) onto `out`, dividing by the fold count when mean.
template <class T>
class BroadcastRef : public Kernel {
 public:
  BroadcastRef(const Dims& src, const Dims& out, bool mean)
      : map_(src, out),
        n_(numel(out)),
        scale_(mean ? double(numel(src)) / double(numel(out)) : 1.0) {}
  void run(const KernelArgs& a) override {
    const T* x = in_ptr<T>(a, 0);
    T* y = out_ptr<T>(a, 0);
    const T scale = T(scale_);
    map_.rows([&](int64_t row, int64_t src, int64_t step, int64_t len) {
      T* dst = y + row;
      if (step == 0) {
        const T v = x[src] * scale;
        for (int64_t j = 0; j < len; ++j) dst[j] = v;
      } else {
        for (int64_t j = 0; j < len; ++j) dst[j] = x[src + j] * scale;
      }
    });
  }

 private:
  Broadcast map_;
  int64_t n_;
  double scale_;
};

using KdFn = std::function<Dims(const KernelInfo&)>;

std::vector<KernelEntry> reduce_kernels(KdFn kd, bool mean_always, bool mean_attr) {
  auto mean_of = [=](const KernelInfo& info) {
    return mean_always || (mean_attr && info.attrs.at("mean").get<bool>());
  };
  auto ref = [=](auto t) {
    using T = decltype(t);
    return [=](const KernelInfo& info, std::string&) -> std::unique_ptr<Kernel> {
      return std::make_unique<ReduceRef<T>>(info.in[0], kd(info), mean_of(info));
    };
  };
  // No oneDNN path: its reduction primitive took 57-86 us for the [64..128, 256..784] column
  // sums of bias gradients that the row walk above does in 2-37 us (weft bench, 2 threads).
  return {{0, DType::f32, "reference", ref(float{}), 0},
          {0, DType::f64, "reference", ref(double{}), 0}};
}

std::vector<KernelEntry> broadcast_kernels() {
  auto make = [](auto t) {
    using T = decltype(t);
    return [](const KernelInfo& info, std::string&) -> std::unique_ptr<Kernel> {
      return std::make_unique<BroadcastRef<T>>(info.in[0], info.out[0],
                                               info.attrs.at("mean").get<bool>());
    };
  };
  return {{0, DType::f32, "reference", make(float{}), 0},
          {0, DType::f64, "reference", make(double{}), 0}};
}

std::vector<Shape> reduce_rule(const ShapeContext& c) {
  const Shape& in = c.in[0];
  auto axes = norm_axes(c.attrs.at("axes"), in.size());
  bool keep = c.attrs.at("keepdims");
  Shape out;
  for (int i = 0; i < int(in.size()); ++i) {
    bool folded = std::find(axes.begin(), axes.end(), i) != axes.end();
    if (!folded)
      out.push_back(in[i]);
    else if (keep)
      out.push_back(Dim(1));
  }
  return {out};
}

// The gradient of sum/mean: put the folded axes back, then broadcast.
std::vector<Val> reduce_grad(GradContext& g, bool mean) {
  Val d = g.grad_output(), x = g.input(0);
  auto axes = norm_axes(g.attrs().at("axes"), x.shape().size());
  if (!g.attrs().at("keepdims").get<bool>() && !d.shape().empty())
    d = g.op("expand_dims", {d}, {{"axes", axes}});
  return {g.op("broadcast_like", {d, x}, {{"mean", mean}})};
}

Dims kd_from_axes(const KernelInfo& info) { return keepdims_of(info.in[0], info.attrs.at("axes")); }

Dims kd_from_ref(const KernelInfo& info) {
  Dims kd = info.in[1];
  kd.insert(kd.begin(), info.in[0].size() - kd.size(), 1);
  return kd;
}

const std::vector<std::vector<Dims>> kReduceCases = {{{3, 4}}, {{2, 3, 4}}, {{5}}};

}  // namespace

WEFT_OP(sum)
    .doc("sum over axes (all axes when empty)")
    .input("x")
    .output("y")
    .attr("axes", AttrType::Ints, json::array(), "axes to fold; [] folds all")
    .attr("keepdims", AttrType::Bool, false, "keep folded axes as size 1")
    .shape(reduce_rule)
    .kernels(reduce_kernels(kd_from_axes, false, false))
    .grad([](GradContext& g) { return reduce_grad(g, false); })
    .flops([](const KernelInfo& i) { return double(numel(i.in[0])); })
    .test({.cases = kReduceCases, .attrs = {{"axes", {0}}}, .order = 2});

WEFT_OP(mean)
    .doc("mean over axes (all axes when empty)")
    .input("x")
    .output("y")
    .attr("axes", AttrType::Ints, json::array(), "axes to fold; [] folds all")
    .attr("keepdims", AttrType::Bool, false, "keep folded axes as size 1")
    .shape(reduce_rule)
    .kernels(reduce_kernels(kd_from_axes, true, false))
    .grad([](GradContext& g) { return reduce_grad(g, true); })
    .flops([](const KernelInfo& i) { return double(numel(i.in[0])); })
    .test({.cases = kReduceCases, .attrs = {{"axes", {-1}}, {"keepdims", true}}, .order = 2});

WEFT_OP(sum_to_like)
    .doc("reduce x to the shape of `like` (undoes a broadcast); mean divides by the fold count")
    .input("x")
    .input("like")
    .output("y")
    .attr("mean", AttrType::Bool, false, "average instead of sum")
    .shape([](const ShapeContext& c) {
      if (broadcast_shapes(c.in[1], c.in[0]) != c.in[0])
        throw ShapeError("cannot reduce " + shape_str(c.in[0]) + " to " + shape_str(c.in[1]));
      return std::vector<Shape>{c.in[1]};
    })
    .kernels(reduce_kernels(kd_from_ref, false, true))
    .grad([](GradContext& g) {
      return std::vector<Val>{
          g.op("broadcast_like", {g.grad_output(), g.input(0)}, {{"mean", g.attrs().at("mean")}}),
          Val{}};
    })
    .flops([](const KernelInfo& i) { return double(numel(i.in[0])); })
    .test({.cases = {{{3, 4}, {4}}, {{3, 4}, {3, 1}}, {{2, 3}, {}}},
           .attrs = {{"mean", true}},
           .order = 2,
           .no_grad_inputs = {1}});

WEFT_OP(broadcast_like)
    .doc("broadcast x to the shape of `like`; mean divides by the fold count")
    .input("x")
    .input("like")
    .output("y")
    .attr("mean", AttrType::Bool, false, "divide by the number of copies")
    .shape([](const ShapeContext& c) {
      if (broadcast_shapes(c.in[0], c.in[1]) != c.in[1])
        throw ShapeError("cannot broadcast " + shape_str(c.in[0]) + " to " + shape_str(c.in[1]));
      return std::vector<Shape>{c.in[1]};
    })
    .kernels(broadcast_kernels())
    .grad([](GradContext& g) {
      return std::vector<Val>{
          g.op("sum_to_like", {g.grad_output(), g.input(0)}, {{"mean", g.attrs().at("mean")}}),
          Val{}};
    })
    .test({.cases = {{{4}, {3, 4}}, {{3, 1}, {3, 4}}, {{}, {2, 3}}},
           .attrs = {{"mean", true}},
           .order = 2,
           .no_grad_inputs = {1}});

}  // namespace weft::ops

// Binary arithmetic with numpy broadcasting. Each gradient undoes the broadcast with
// sum_to (Builder::sum_to), the one place that does so.
#include "ops/common.h"

namespace weft::ops {
namespace {

std::vector<Shape> broadcast_rule(const ShapeContext& c) {
  return {broadcast_shapes(c.in[0], c.in[1])};
}

// Reference: the rows of the broadcast (the output's last axis) with each input's offset
// and step, found once when the plan is compiled, so no element pays for index arithmetic.
template <class T, class F>
class BinaryRef : public Kernel {
 public:
  BinaryRef(const KernelInfo& info, F f) : f_(f) {
    Broadcast a(info.in[0], info.out[0]), b(info.in[1], info.out[0]);
    identity_ = a.identity && b.identity;
    if (identity_) return;
    a.rows([&](int64_t start, int64_t off, int64_t step, int64_t len) {
      rows_.push_back({start, off, step, 0, 0, len});
    });
    size_t r = 0;
    b.rows([&](int64_t, int64_t off, int64_t step, int64_t) {
      rows_[r].b_off = off;
      rows_[r++].b_step = step;
    });
  }
  void run(const KernelArgs& a) override {
    const T *x = in_ptr<T>(a, 0), *z = in_ptr<T>(a, 1);
    T* y = out_ptr<T>(a, 0);
    if (identity_) {
      for (int64_t i = 0, n = a.out[0]->numel(); i < n; ++i) y[i] = f_(x[i], z[i]);
      return;
    }
    for (const Row& r : rows_)
      for (int64_t k = 0; k < r.len; ++k)
        y[r.start + k] = f_(x[r.a_off + k * r.a_step], z[r.b_off + k * r.b_step]);
  }

 private:
  struct Row {
    int64_t start, a_off, a_step, b_off, b_step, len;
  };
  std::vector<Row> rows_;
  bool identity_ = false;
  F f_;
};

template <class F>
std::vector<KernelEntry> binary_ref(F f) {
  auto make = [f](auto t) {
    using T = decltype(t);
    return [f](const KernelInfo& info, std::string&) -> std::unique_ptr<Kernel> {
      auto g = [f](T x, T z) { return T(f(double(x), double(z))); };
      return std::make_unique<BinaryRef<T, decltype(g)>>(info, g);
    };
  };
  return {{0, DType::f32, "reference", make(float{}), 0},
          {0, DType::f64, "reference", make(double{}), 0}};
}

// oneDNN binary takes src0 at the output's full shape and broadcasts src1 only; a
// commutative op may swap its inputs to get there.
KernelMaker onednn_binary(dnnl::algorithm alg, bool commutative) {
  return [=](const KernelInfo& info, std::string& why) -> std::unique_ptr<Kernel> {
    const Dims& out = info.out[0];
    int first = 0;
    if (info.in[0] != out) {
      if (commutative && info.in[1] == out) {
        first = 1;
      } else {
        why = "the first input is broadcast";
        return nullptr;
      }
    }
    Dims other = info.in[1 - first];
    other.insert(other.begin(), out.size() - other.size(), 1);
    Dims full = out.empty() ? Dims{1} : out;
    if (other.empty()) other = {1};
    return try_onednn(why, [&]() -> std::unique_ptr<Kernel> {
      auto d0 = md(full, info.dtype), d1 = md(other, info.dtype);
      dnnl::binary::primitive_desc pd({alg, d0, d1, d0}, cpu_engine());
      // oneDNN's reference implementation is slower than weft's own: for a per-example
      // scalar broadcast over [64, 128, 7, 7] (layer norm) it took 45 ms where weft's takes
      // under 1. Only a jit implementation is worth taking.
      const std::string impl = pd.impl_info_str();
      if (impl.rfind("ref", 0) == 0) {
        why = "oneDNN offers only its reference implementation (" + impl + ") for this broadcast";
        return nullptr;
      }
      return std::make_unique<OnednnKernel>(
          dnnl::binary(pd),
          std::vector<std::pair<int, dnnl::memory::desc>>{
              {DNNL_ARG_SRC_0, d0}, {DNNL_ARG_SRC_1, d1}, {DNNL_ARG_DST, d0}},
          std::vector<std::pair<int, int>>{
              {DNNL_ARG_SRC_0, 1 + first}, {DNNL_ARG_SRC_1, 2 - first}, {DNNL_ARG_DST, -1}});
    });
  };
}

const std::vector<std::vector<Dims>> kBinaryCases = {
    {{3, 4}, {3, 4}}, {{3, 4}, {4}}, {{3, 1}, {1, 4}}, {{}, {2, 3}}, {{2, 3}, {}}};

}  // namespace

WEFT_OP(add)
    .doc("a + b, broadcasting")
    .input("a")
    .input("b")
    .output("y")
    .shape(broadcast_rule)
    .kernel(0, DType::f32, "onednn", onednn_binary(dnnl::algorithm::binary_add, true), 1)
    .kernels(binary_ref([](double x, double z) { return x + z; }))
    .grad([](GradContext& g) {
      Val d = g.grad_output();
      return std::vector<Val>{g.b.sum_to(d, g.input(0)), g.b.sum_to(d, g.input(1))};
    })
    .test({.cases = kBinaryCases, .order = 2, .expect_kernel = "onednn", .declined_cases = {2}});

WEFT_OP(sub)
    .doc("a - b, broadcasting")
    .input("a")
    .input("b")
    .output("y")
    .shape(broadcast_rule)
    .kernel(0, DType::f32, "onednn", onednn_binary(dnnl::algorithm::binary_sub, false), 1)
    .kernels(binary_ref([](double x, double z) { return x - z; }))
    .grad([](GradContext& g) {
      Val d = g.grad_output();
      return std::vector<Val>{g.b.sum_to(d, g.input(0)),
                              g.needs(1) ? g.b.sum_to(-d, g.input(1)) : Val{}};
    })
    .test({.cases = kBinaryCases, .order = 2, .expect_kernel = "onednn", .declined_cases = {2, 3}});

WEFT_OP(mul)
    .doc("a * b, broadcasting")
    .input("a")
    .input("b")
    .output("y")
    .shape(broadcast_rule)
    .kernel(0, DType::f32, "onednn", onednn_binary(dnnl::algorithm::binary_mul, true), 1)
    .kernels(binary_ref([](double x, double z) { return x * z; }))
    .grad([](GradContext& g) {
      Val d = g.grad_output(), a = g.input(0), b = g.input(1);
      return std::vector<Val>{g.needs(0) ? g.b.sum_to(d * b, a) : Val{},
                              g.needs(1) ? g.b.sum_to(d * a, b) : Val{}};
    })
    .test({.cases = kBinaryCases, .order = 2, .expect_kernel = "onednn", .declined_cases = {2}});

WEFT_OP(div)
    .doc("a / b, broadcasting")
    .input("a")
    .input("b")
    .output("y")
    .shape(broadcast_rule)
    .kernel(0, DType::f32, "onednn", onednn_binary(dnnl::algorithm::binary_div, false), 1)
    .kernels(binary_ref([](double x, double z) { return x / z; }))
    .grad([](GradContext& g) {
      Val d = g.grad_output(), a = g.input(0), b = g.input(1);
      return std::vector<Val>{g.needs(0) ? g.b.sum_to(d / b, a) : Val{},
                              g.needs(1) ? g.b.sum_to(-(d * a) / (b * b), b) : Val{}};
    })
    .test({.cases = kBinaryCases,
           .ranges = {{-2, 2}, {0.5, 2}},
           .order = 2,
           .expect_kernel = "onednn",
           .declined_cases = {2, 3}});

}  // namespace weft::ops

// Elementwise functions of one tensor, and the backward ops of the activations.
// The activations' gradients are written in terms of their output y (relu, leaky_relu,
// sigmoid, tanh): then a linear layer's output is read by its activation alone, and the
// two fuse into one oneDNN primitive in training as well as in inference.
#include "ops/common.h"

namespace weft::ops {
namespace {

using dnnl::algorithm;

// oneDNN eltwise forward on the tensor seen as a flat vector.
KernelMaker onednn_eltwise(algorithm alg, float alpha = 0.f, float beta = 0.f,
                           const char* alpha_attr = nullptr) {
  return [=](const KernelInfo& info, std::string& why) {
    return try_onednn(why, [&]() -> std::unique_ptr<Kernel> {
      float al = alpha_attr ? info.attrs.at(alpha_attr).get<float>() : alpha;
      auto d = md({numel(info.out[0])}, info.dtype);
      dnnl::eltwise_forward::primitive_desc pd(
          {dnnl::prop_kind::forward_training, alg, d, al, beta}, cpu_engine());
      return std::make_unique<OnednnKernel>(
          dnnl::eltwise_forward(pd),
          std::vector<std::pair<int, dnnl::memory::desc>>{{DNNL_ARG_SRC, d}, {DNNL_ARG_DST, d}},
          std::vector<std::pair<int, int>>{{DNNL_ARG_SRC, 1}, {DNNL_ARG_DST, -1}});
    });
  };
}

// oneDNN eltwise backward from the forward output: inputs (dy, y), output dx.
KernelMaker onednn_eltwise_bwd_dst(algorithm alg, const char* alpha_attr = nullptr) {
  return [=](const KernelInfo& info, std::string& why) {
    return try_onednn(why, [&]() -> std::unique_ptr<Kernel> {
      float al = alpha_attr ? info.attrs.at(alpha_attr).get<float>() : 0.f;
      auto d = md({numel(info.out[0])}, info.dtype);
      dnnl::eltwise_forward::primitive_desc fpd(
          {dnnl::prop_kind::forward_training, alg, d, al, 0.f}, cpu_engine());
      dnnl::eltwise_backward::primitive_desc pd({alg, d, d, al, 0.f}, cpu_engine(), fpd);
      return std::make_unique<OnednnKernel>(
          dnnl::eltwise_backward(pd),
          std::vector<std::pair<int, dnnl::memory::desc>>{
              {DNNL_ARG_DIFF_DST, d}, {DNNL_ARG_DST, d}, {DNNL_ARG_DIFF_SRC, d}},
          std::vector<std::pair<int, int>>{
              {DNNL_ARG_DIFF_DST, 1}, {DNNL_ARG_DST, 2}, {DNNL_ARG_DIFF_SRC, -1}});
    });
  };
}

const std::vector<std::vector<Dims>> kUnaryCases = {{{4, 7}}, {{3}}, {{}}};

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }

}  // namespace

WEFT_OP(relu)
    .doc("max(x, 0)")
    .input("x")
    .output("y")
    .shape(same_as_input0)
    .kernel(0, DType::f32, "onednn", onednn_eltwise(algorithm::eltwise_relu), 1)
    .kernels(reference(unary_ref([](double x) { return x > 0 ? x : 0.0; })))
    .grad([](GradContext& g) {  // dx = dy * [y > 0]
      return std::vector<Val>{g.op("relu_backward", {g.grad_output(), g.output()})};
    })
    .test({.cases = kUnaryCases, .avoid = 0.05, .order = 2, .expect_kernel = "onednn"});

WEFT_OP(relu_backward)
    .doc("dx of relu from dy and the forward output y: dy * [y > 0]")
    .input("dy")
    .input("y")
    .output("dx")
    .shape(same_shapes2)
    .kernel(0, DType::f32, "onednn",
            onednn_eltwise_bwd_dst(algorithm::eltwise_relu_use_dst_for_bwd), 1)
    .kernels(reference(binary_same_ref([](double dy, double y) { return y > 0 ? dy : 0.0; })))
    .grad([](GradContext& g) {  // linear in dy; piecewise constant in y
      return std::vector<Val>{g.op("relu_backward", {g.grad_output(), g.input(1)}), Val{}};
    })
    .test({.cases = {{{4, 7}, {4, 7}}},
           .avoid = 0.05,
           .order = 2,
           .no_grad_inputs = {1},
           .expect_kernel = "onednn"});

WEFT_OP(leaky_relu)
    .doc("x if x > 0 else alpha * x")
    .input("x")
    .output("y")
    .attr("alpha", AttrType::Float, 0.01, "slope for x < 0 (>= 0)")
    .shape([](const ShapeContext& c) {
      if (c.attrs.at("alpha").get<double>() < 0) throw AttrError("alpha", "expected alpha >= 0");
      return std::vector<Shape>{c.in[0]};
    })
    .kernel(0, DType::f32, "onednn", onednn_eltwise(algorithm::eltwise_relu, 0, 0, "alpha"), 1)
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      const double al = info.attrs.at("alpha");
      const T* x = in_ptr<T>(a, 0);
      T* y = out_ptr<T>(a, 0);
      for (int64_t i = 0, n = a.out[0]->numel(); i < n; ++i) y[i] = x[i] > 0 ? x[i] : T(al * x[i]);
    }))
    .grad([](GradContext& g) {  // dx = dy * (y > 0 ? 1 : alpha); alpha >= 0 keeps sign(y) = sign(x)
      return std::vector<Val>{g.op("leaky_relu_backward", {g.grad_output(), g.output()},
                                   {{"alpha", g.attrs().at("alpha")}})};
    })
    .test({.cases = kUnaryCases,
           .attrs = {{"alpha", 0.2}},
           .avoid = 0.05,
           .order = 2,
           .expect_kernel = "onednn"});

WEFT_OP(leaky_relu_backward)
    .doc("dx of leaky_relu from dy and the forward output y: dy * (y > 0 ? 1 : alpha)")
    .input("dy")
    .input("y")
    .output("dx")
    .attr("alpha", AttrType::Float, 0.01, "slope for x < 0")
    .shape(same_shapes2)
    .kernel(0, DType::f32, "onednn",
            onednn_eltwise_bwd_dst(algorithm::eltwise_relu_use_dst_for_bwd, "alpha"), 1)
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      const double al = info.attrs.at("alpha");
      const T *dy = in_ptr<T>(a, 0), *y = in_ptr<T>(a, 1);
      T* dx = out_ptr<T>(a, 0);
      for (int64_t i = 0, n = a.out[0]->numel(); i < n; ++i)
        dx[i] = y[i] > 0 ? dy[i] : T(al * dy[i]);
    }))
    .grad([](GradContext& g) {
      return std::vector<Val>{g.op("leaky_relu_backward", {g.grad_output(), g.input(1)},
                                   {{"alpha", g.attrs().at("alpha")}}),
                              Val{}};
    })
    .test({.cases = {{{4, 7}, {4, 7}}},
           .attrs = {{"alpha", 0.2}},
           .avoid = 0.05,
           .order = 2,
           .no_grad_inputs = {1},
           .expect_kernel = "onednn"});

WEFT_OP(sigmoid)
    .doc("1 / (1 + exp(-x))")
    .input("x")
    .output("y")
    .shape(same_as_input0)
    .kernel(0, DType::f32, "onednn", onednn_eltwise(algorithm::eltwise_logistic), 1)
    .kernels(reference(unary_ref(sigmoid)))
    .grad([](GradContext& g) {  // dx = dy * y * (1 - y)
      return std::vector<Val>{g.op("sigmoid_backward", {g.grad_output(), g.output()})};
    })
    .test({.cases = kUnaryCases, .low = -4, .high = 4, .order = 2, .expect_kernel = "onednn"});

WEFT_OP(sigmoid_backward)
    .doc("dx of sigmoid from dy and the forward output y: dy * y * (1 - y)")
    .input("dy")
    .input("y")
    .output("dx")
    .shape(same_shapes2)
    .kernel(0, DType::f32, "onednn",
            onednn_eltwise_bwd_dst(algorithm::eltwise_logistic_use_dst_for_bwd), 1)
    .kernels(reference(binary_same_ref([](double dy, double y) { return dy * y * (1 - y); })))
    .grad([](GradContext& g) {
      Val gg = g.grad_output(), dy = g.input(0), y = g.input(1);
      return std::vector<Val>{g.op("sigmoid_backward", {gg, y}),
                              g.needs(1) ? gg * dy * (1.0 - 2.0 * y) : Val{}};
    })
    .test({.cases = {{{4, 7}, {4, 7}}}, .order = 2, .expect_kernel = "onednn"});

WEFT_OP(tanh)
    .doc("tanh(x)")
    .input("x")
    .output("y")
    .shape(same_as_input0)
    .kernel(0, DType::f32, "onednn", onednn_eltwise(algorithm::eltwise_tanh), 1)
    .kernels(reference(unary_ref([](double x) { return std::tanh(x); })))
    .grad([](GradContext& g) {  // dx = dy * (1 - y^2)
      return std::vector<Val>{g.op("tanh_backward", {g.grad_output(), g.output()})};
    })
    .test({.cases = kUnaryCases, .order = 2, .expect_kernel = "onednn"});

WEFT_OP(tanh_backward)
    .doc("dx of tanh from dy and the forward output y: dy * (1 - y^2)")
    .input("dy")
    .input("y")
    .output("dx")
    .shape(same_shapes2)
    .kernel(0, DType::f32, "onednn",
            onednn_eltwise_bwd_dst(algorithm::eltwise_tanh_use_dst_for_bwd), 1)
    .kernels(reference(binary_same_ref([](double dy, double y) { return dy * (1 - y * y); })))
    .grad([](GradContext& g) {
      Val gg = g.grad_output(), dy = g.input(0), y = g.input(1);
      return std::vector<Val>{g.op("tanh_backward", {gg, y}),
                              g.needs(1) ? -2.0 * (gg * dy * y) : Val{}};
    })
    .test({.cases = {{{4, 7}, {4, 7}}}, .order = 2, .expect_kernel = "onednn"});

WEFT_OP(exp)
    .doc("exp(x)")
    .input("x")
    .output("y")
    .shape(same_as_input0)
    .kernel(0, DType::f32, "onednn", onednn_eltwise(algorithm::eltwise_exp), 1)
    .kernels(reference(unary_ref([](double x) { return std::exp(x); })))
    .grad([](GradContext& g) { return std::vector<Val>{g.grad_output() * g.output()}; })
    .test({.cases = kUnaryCases, .order = 2, .expect_kernel = "onednn"});

WEFT_OP(log)
    .doc("natural logarithm")
    .input("x")
    .output("y")
    .shape(same_as_input0)
    .kernel(0, DType::f32, "onednn", onednn_eltwise(algorithm::eltwise_log), 1)
    .kernels(reference(unary_ref([](double x) { return std::log(x); })))
    .grad([](GradContext& g) { return std::vector<Val>{g.grad_output() / g.input(0)}; })
    .test({.cases = kUnaryCases, .low = 0.5, .high = 3, .order = 2, .expect_kernel = "onednn"});

WEFT_OP(square)
    .doc("x * x")
    .input("x")
    .output("y")
    .shape(same_as_input0)
    .kernel(0, DType::f32, "onednn", onednn_eltwise(algorithm::eltwise_square), 1)
    .kernels(reference(unary_ref([](double x) { return x * x; })))
    .grad([](GradContext& g) { return std::vector<Val>{2.0 * (g.grad_output() * g.input(0))}; })
    .test({.cases = kUnaryCases, .order = 2, .expect_kernel = "onednn"});

WEFT_OP(sqrt)
    .doc("square root")
    .input("x")
    .output("y")
    .shape(same_as_input0)
    .kernel(0, DType::f32, "onednn", onednn_eltwise(algorithm::eltwise_sqrt), 1)
    .kernels(reference(unary_ref([](double x) { return std::sqrt(x); })))
    .grad([](GradContext& g) { return std::vector<Val>{(g.grad_output() * 0.5) / g.output()}; })
    .test({.cases = kUnaryCases, .low = 0.5, .high = 3, .order = 2, .expect_kernel = "onednn"});

WEFT_OP(abs)
    .doc("|x|")
    .input("x")
    .output("y")
    .shape(same_as_input0)
    .kernel(0, DType::f32, "onednn", onednn_eltwise(algorithm::eltwise_abs), 1)
    .kernels(reference(unary_ref([](double x) { return std::abs(x); })))
    .grad([](GradContext& g) {
      return std::vector<Val>{g.grad_output() * g.op("sign", {g.input(0)})};
    })
    .test({.cases = kUnaryCases, .avoid = 0.05, .order = 2, .expect_kernel = "onednn"});

WEFT_OP(sign)
    .doc("-1, 0 or 1; its gradient is zero")
    .input("x")
    .output("y")
    .shape(same_as_input0)
    .kernels(reference(unary_ref([](double x) { return double((x > 0) - (x < 0)); })))
    .grad([](GradContext&) { return std::vector<Val>{Val{}}; })
    .test({.cases = kUnaryCases, .avoid = 0.05});

WEFT_OP(neg)
    .doc("-x")
    .input("x")
    .output("y")
    .shape(same_as_input0)
    .kernel(0, DType::f32, "onednn", onednn_eltwise(algorithm::eltwise_linear, -1.f, 0.f), 1)
    .kernels(reference(unary_ref([](double x) { return -x; })))
    .grad([](GradContext& g) { return std::vector<Val>{-g.grad_output()}; })
    .test({.cases = kUnaryCases, .order = 2, .expect_kernel = "onednn"});

WEFT_OP(softplus)
    .doc("log(1 + exp(x)), computed stably")
    .input("x")
    .output("y")
    .shape(same_as_input0)
    .kernels(reference(unary_ref(softplus)))
    .grad([](GradContext& g) {
      return std::vector<Val>{g.grad_output() * g.op("sigmoid", {g.input(0)})};
    })
    .test({.cases = kUnaryCases, .low = -5, .high = 5, .order = 2});

}  // namespace weft::ops

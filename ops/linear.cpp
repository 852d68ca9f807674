// Dense layers. linear(x, weight, bias): y = x weight^T + bias, weight [out, in] (oneDNN's
// inner product). As a layer in a net it owns its weight and bias. matmul is the plain
// product with optional transposes; linear's gradients are matmuls and a sum.
#include "ops/common.h"

namespace weft::ops {
namespace {

double apply_act(const std::string& act, double alpha, double v) {
  if (act == "relu") return v > 0 ? v : 0;
  if (act == "leaky_relu") return v > 0 ? v : alpha * v;
  if (act == "sigmoid") return 1 / (1 + std::exp(-v));
  if (act == "tanh") return std::tanh(v);
  return v;
}

// y = act(x w^T + b); act is "" for a plain linear.
auto linear_ref = [](auto t, const KernelInfo& info, const KernelArgs& a) {
  using T = decltype(t);
  const int64_t n = info.in[0][0], f = info.in[0][1], o = info.in[1][0];
  const T *x = in_ptr<T>(a, 0), *w = in_ptr<T>(a, 1);
  const T* b = a.in.size() > 2 ? in_ptr<T>(a, 2) : nullptr;
  std::string act = info.attrs.value("activation", "");
  double alpha = info.attrs.value("alpha", 0.0);
  T* y = out_ptr<T>(a, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < o; ++j) {
      double s = b ? double(b[j]) : 0.0;
      for (int64_t k = 0; k < f; ++k) s += double(x[i * f + k]) * double(w[j * f + k]);
      y[i * o + j] = T(apply_act(act, alpha, s));
    }
};

KernelMaker onednn_linear() {
  return [](const KernelInfo& info, std::string& why) {
    return try_onednn(why, [&]() -> std::unique_ptr<Kernel> {
      bool bias = info.in.size() > 2;
      auto src = md(info.in[0], info.dtype), wei = md(info.in[1], info.dtype),
           dst = md(info.out[0], info.dtype);
      dnnl::memory::desc b = bias ? md(info.in[2], info.dtype) : dnnl::memory::desc();
      dnnl::primitive_attr attr;
      std::string act = info.attrs.value("activation", "");
      if (!act.empty()) {
        static const std::map<std::string, dnnl::algorithm> algs = {
            {"relu", dnnl::algorithm::eltwise_relu},
            {"leaky_relu", dnnl::algorithm::eltwise_relu},
            {"sigmoid", dnnl::algorithm::eltwise_logistic},
            {"tanh", dnnl::algorithm::eltwise_tanh}};
        dnnl::post_ops po;
        po.append_eltwise(1.f, algs.at(act), info.attrs.value("alpha", 0.f), 0.f);
        attr.set_post_ops(po);
      }
      // Under --precision bf16 x and the weight are read as bf16 (rounded by a reorder).
      const auto src_in = maybe_bf16(src, info.bf16), wei_in = maybe_bf16(wei, info.bf16);
      dnnl::inner_product_forward::primitive_desc pd(
          bias ? dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_training, src_in,
                                                   wei_in, b, dst)
               : dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_training, src_in,
                                                   wei_in, dst),
          attr, cpu_engine());
      if (pd.src_desc() != src_in || pd.weights_desc() != wei_in || pd.dst_desc() != dst)
        throw dnnl::error(dnnl_unimplemented, "the primitive wants a blocked layout");
      // A LayoutKernel whose wanted formats equal the plain ones adds no reorder (f32).
      std::vector<LayoutKernel::Arg> la = {{DNNL_ARG_SRC, src, src_in, 1},
                                           {DNNL_ARG_WEIGHTS, wei, wei_in, 2},
                                           {DNNL_ARG_DST, dst, dst, -1}};
      if (bias) la.push_back({DNNL_ARG_BIAS, b, b, 3});
      return std::make_unique<LayoutKernel>(dnnl::inner_product_forward(pd), la);
    });
  };
}

std::vector<Shape> linear_rule(const ShapeContext& c) {
  const Shape &x = c.in[0], &w = c.in[1];
  if (x.size() != 2)
    throw ShapeError("linear takes a [batch, features] input, got " + shape_str(x) +
                     " (flatten it first)");
  if (w.size() != 2) throw ShapeError("weight must be [out, in], got " + shape_str(w));
  if (x[1] != w[1])
    throw ShapeError("input has " + x[1].str() + " features, weight expects " + w[1].str());
  if (c.in.size() > 2 && (c.in[2].size() != 1 || c.in[2][0] != w[0]))
    throw ShapeError("bias has shape " + shape_str(c.in[2]) + ", expected [" + w[0].str() + "]");
  return {{x[0], w[0]}};
}

double linear_flops(const KernelInfo& i) {
  return 2.0 * double(i.in[0][0]) * double(i.in[0][1]) * double(i.in[1][0]);
}

// op(a) op(b), op = transpose where asked; a and b 2-D.
struct MatmulDims {
  int64_t m, k, n;
};
MatmulDims matmul_dims(const Dims& a, const Dims& b, bool ta, bool tb) {
  return {ta ? a[1] : a[0], ta ? a[0] : a[1], tb ? b[0] : b[1]};
}

auto matmul_ref = [](auto t, const KernelInfo& info, const KernelArgs& a) {
  using T = decltype(t);
  bool ta = info.attrs.at("transpose_a"), tb = info.attrs.at("transpose_b");
  auto d = matmul_dims(info.in[0], info.in[1], ta, tb);
  const T *x = in_ptr<T>(a, 0), *z = in_ptr<T>(a, 1);
  T* y = out_ptr<T>(a, 0);
  for (int64_t i = 0; i < d.m; ++i)
    for (int64_t j = 0; j < d.n; ++j) {
      double s = 0;
      for (int64_t k = 0; k < d.k; ++k)
        s += double(ta ? x[k * d.m + i] : x[i * d.k + k]) *
             double(tb ? z[j * d.k + k] : z[k * d.n + j]);
      y[i * d.n + j] = T(s);
    }
};

// matmul_add: the product plus c, c of the product's shape.
auto matmul_add_ref = [](auto t, const KernelInfo& info, const KernelArgs& a) {
  using T = decltype(t);
  matmul_ref(t, info, a);
  const T* c = in_ptr<T>(a, 2);
  T* y = out_ptr<T>(a, 0);
  for (int64_t i = 0, n = numel(info.out[0]); i < n; ++i) y[i] = T(double(y[i]) + double(c[i]));
};

// matmul, and matmul_add when the node has a third input: oneDNN adds it to the product in
// the primitive's last pass (a binary post-op), before the result is stored.
KernelMaker onednn_matmul() {
  return [](const KernelInfo& info, std::string& why) {
    return try_onednn(why, [&]() -> std::unique_ptr<Kernel> {
      bool ta = info.attrs.at("transpose_a"), tb = info.attrs.at("transpose_b");
      auto d = matmul_dims(info.in[0], info.in[1], ta, tb);
      auto a = md_strided({d.m, d.k}, ta ? Dims{1, d.m} : Dims{d.k, 1}, info.dtype);
      auto b = md_strided({d.k, d.n}, tb ? Dims{1, d.k} : Dims{d.n, 1}, info.dtype);
      auto c = md({d.m, d.n}, info.dtype);
      // Under --precision bf16 a and b are read as bf16, rounded by the LayoutKernel's reorder.
      const auto a_in = maybe_bf16(a, info.bf16), b_in = maybe_bf16(b, info.bf16);
      std::vector<LayoutKernel::Arg> args = {
          {DNNL_ARG_SRC, a, a_in, 1}, {DNNL_ARG_WEIGHTS, b, b_in, 2}, {DNNL_ARG_DST, c, c, -1}};
      dnnl::primitive_attr attr;
      if (info.in.size() > 2) {
        dnnl::post_ops po;
        po.append_binary(dnnl::algorithm::binary_add, c);
        attr.set_post_ops(po);
        args.push_back({DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, c, c, 3});
      }
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_in, b_in, c), attr, cpu_engine());
      return std::make_unique<LayoutKernel>(dnnl::matmul(pd), args);
    });
  };
}

std::vector<Shape> matmul_rule(const ShapeContext& c) {
  const Shape &a = c.in[0], &b = c.in[1];
  if (a.size() != 2 || b.size() != 2)
    throw ShapeError("matmul takes 2-D inputs, got " + shape_str(a) + " and " + shape_str(b));
  bool ta = c.attrs.at("transpose_a"), tb = c.attrs.at("transpose_b");
  Dim k1 = ta ? a[0] : a[1], k2 = tb ? b[1] : b[0];
  if (k1 != k2)
    throw ShapeError("inner dimensions differ: " + shape_str(a) + " and " + shape_str(b));
  return {{ta ? a[1] : a[0], tb ? b[0] : b[1]}};
}

double matmul_flops(const KernelInfo& i) {
  auto d = matmul_dims(i.in[0], i.in[1], i.attrs.at("transpose_a"), i.attrs.at("transpose_b"));
  return 2.0 * double(d.m) * double(d.n) * double(d.k);
}

}  // namespace

WEFT_OP(linear)
    .doc("x weight^T + bias; as a layer, `units` outputs with its own weight [units, in] and bias")
    .input("x")
    .input("weight")
    .optional_input("bias")
    .output("y")
    .attr("units", AttrType::PosInt, nullptr, "outputs (as a layer)")
    .attr("bias", AttrType::Bool, true, "whether the layer has a bias")
    .attr("weight_init", AttrType::Initializer, "default", "initializer of the weight")
    .attr("bias_init", AttrType::Initializer, "default", "initializer of the bias")
    .attr("spectral_norm", AttrType::Bool, false,
          "as a layer: divide the weight by its largest singular value (spectral_norm op)")
    .shape(linear_rule)
    .params([](const std::vector<Shape>& in, const json& attrs) {
      if (attrs.at("units").is_null())
        throw AttrError("units", "op linear as a layer needs attribute 'units' (outputs)");
      if (in[0].size() != 2)
        throw ShapeError("linear takes a [batch, features] input, got " + shape_str(in[0]) +
                         " (flatten it first)");
      Dim units(attrs.at("units").get<int64_t>()), features = in[0][1];
      if (features.batch) throw ShapeError("the feature axis cannot depend on the batch");
      std::vector<ParamSpec> p = {{"weight",
                                   {units, features},
                                   attrs.at("weight_init"),
                                   double(features.n),
                                   double(units.n)}};
      if (attrs.at("bias"))
        p.push_back({"bias", {units}, attrs.at("bias_init"), double(features.n), double(units.n)});
      return p;
    })
    .kernel(0, DType::f32, "onednn", onednn_linear(), 1)
    .kernels(reference(linear_ref))
    .grad([](GradContext& g) {
      Val d = g.grad_output(), x = g.input(0), w = g.input(1);
      std::vector<Val> r = {g.needs(0) ? g.op("matmul", {d, w}) : Val{},
                            g.needs(1) ? g.op("matmul", {d, x}, {{"transpose_a", true}}) : Val{}};
      if (g.num_inputs() > 2) r.push_back(g.needs(2) ? g.op("sum", {d}, {{"axes", {0}}}) : Val{});
      return r;
    })
    .dense_flops(linear_flops)
    .test({.cases = {{{4, 3}, {5, 3}, {5}}, {{2, 6}, {3, 6}}},
           .order = 2,
           .expect_kernel = "onednn"});

WEFT_OP(linear_act)
    .doc("linear followed by an activation, made by the fusion pass (one oneDNN primitive)")
    .internal("produced by the fusion pass; differentiate linear and the activation instead")
    .input("x")
    .input("weight")
    .optional_input("bias")
    .output("y")
    .attr("units", AttrType::PosInt, nullptr, "unused")
    .attr("bias", AttrType::Bool, true, "unused")
    .attr("weight_init", AttrType::Initializer, "default", "unused")
    .attr("bias_init", AttrType::Initializer, "default", "unused")
    .choice("activation", {"relu", "leaky_relu", "sigmoid", "tanh"}, "relu", "the activation")
    .attr("alpha", AttrType::Float, 0.0, "leaky_relu's slope")
    .shape(linear_rule)
    .kernel(0, DType::f32, "onednn", onednn_linear(), 1)
    .kernels(reference(linear_ref))
    .dense_flops(linear_flops)
    .test({.cases = {{{4, 3}, {5, 3}, {5}}},
           .attrs = {{"activation", "leaky_relu"}, {"alpha", 0.2}},
           .expect_kernel = "onednn"});

WEFT_OP(matmul)
    .doc("op(a) op(b) for 2-D a and b, op transposing where asked")
    .input("a")
    .input("b")
    .output("y")
    .attr("transpose_a", AttrType::Bool, false, "use a^T")
    .attr("transpose_b", AttrType::Bool, false, "use b^T")
    .shape(matmul_rule)
    .kernel(0, DType::f32, "onednn", onednn_matmul(), 1)
    .kernels(reference(matmul_ref))
    .grad([](GradContext& g) {
      bool ta = g.attrs().at("transpose_a"), tb = g.attrs().at("transpose_b");
      Val d = g.grad_output(), a = g.input(0), b = g.input(1);
      Val da, db;
      if (g.needs(0))
        da = ta ? g.op("matmul", {b, d}, {{"transpose_a", tb}, {"transpose_b", true}})
                : g.op("matmul", {d, b}, {{"transpose_b", !tb}});
      if (g.needs(1))
        db = tb ? g.op("matmul", {d, a}, {{"transpose_a", true}, {"transpose_b", ta}})
                : g.op("matmul", {a, d}, {{"transpose_a", !ta}});
      return std::vector<Val>{da, db};
    })
    .dense_flops(matmul_flops)
    .test({.cases = {{{3, 4}, {4, 5}}},
           .order = 2,
           .extra = {{{{4, 3}, {4, 5}}, {{"transpose_a", true}}},
                     {{{3, 4}, {5, 4}}, {{"transpose_b", true}}},
                     {{{4, 3}, {5, 4}}, {{"transpose_a", true}, {"transpose_b", true}}}},
           .expect_kernel = "onednn"});

WEFT_OP(matmul_add)
    .doc(
        "op(a) op(b) + c, made by the fusion pass from an add that reads a matmul (one oneDNN "
        "primitive): gradients of a weight used twice, a penalty's gradient added to a product")
    .internal("produced by the fusion pass; differentiate matmul and add instead")
    .input("a")
    .input("b")
    .input("c")
    .output("y")
    .attr("transpose_a", AttrType::Bool, false, "use a^T")
    .attr("transpose_b", AttrType::Bool, false, "use b^T")
    .shape([](const ShapeContext& c) {
      std::vector<Shape> y = matmul_rule(c);
      if (c.in[2] != y[0])
        throw ShapeError("c has shape " + shape_str(c.in[2]) + ", the product " + shape_str(y[0]));
      return y;
    })
    .kernel(0, DType::f32, "onednn", onednn_matmul(), 1)
    .kernels(reference(matmul_add_ref))
    .dense_flops(matmul_flops)
    .test({.cases = {{{3, 4}, {4, 5}, {3, 5}}},
           .extra = {{{{4, 3}, {4, 5}, {3, 5}}, {{"transpose_a", true}}},
                     {{{3, 4}, {5, 4}, {3, 5}}, {{"transpose_b", true}}},
                     {{{4, 3}, {5, 4}, {3, 5}}, {{"transpose_a", true}, {"transpose_b", true}}}},
           .expect_kernel = "onednn"});

}  // namespace weft::ops

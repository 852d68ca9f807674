// Spatial ops on [N, C, H, W] tensors: convolutions and pooling.
//
// Convolution is three bilinear maps, each the others' adjoint:
//   C(x, w)   conv2d                   x [N,C,H,W], w [O,C/g,kh,kw] -> y [N,O,OH,OW]
//   D(dy, w)  conv2d_backward_data     <D(dy,w), x> = <dy, C(x,w)>
//   W(x, dy)  conv2d_backward_weights  <W(x,dy), w> = <dy, C(x,w)>
// so every gradient rule below is written with these three ops and any of them can be
// differentiated again. conv_transpose2d is D with its output size set by attributes
// (weight [C_in, C_out/g, kh, kw], as in PyTorch).
#include "ops/common.h"

namespace weft::ops {
namespace {

std::pair<int64_t, int64_t> pair_of(const json& attrs, const char* key) {
  const json& v = attrs.at(key);
  if (v.is_array()) return {v[0].get<int64_t>(), v[1].get<int64_t>()};
  return {v.get<int64_t>(), v.get<int64_t>()};
}

// One convolution's geometry, in the view of C: x is the large side, y the small one.
struct Geo {
  int64_t n, c, h, w, o, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, g;
};

Geo geo(const Dims& x, const Dims& w, const Dims& y, const json& attrs) {
  auto [sh, sw] = pair_of(attrs, "stride");
  auto [ph, pw] = pair_of(attrs, "pad");
  auto [dh, dw] = pair_of(attrs, "dilation");
  return {x[0], x[1], x[2], x[3], y[1], y[2], y[3], w[2],
          w[3], sh,   sw,   ph,   pw,   dh,   dw,   attrs.at("groups").get<int64_t>()};
}

// Accumulates one of C, D or W. mode 0: out=y from (a=x, b=w); 1: out=x from (a=dy, b=w);
// 2: out=w from (a=x, b=dy).
template <class T>
void conv_ref(int mode, const Geo& q, const T* a, const T* b, T* out, int64_t out_n) {
  std::fill(out, out + out_n, T(0));
  const int64_t cg = q.c / q.g, og = q.o / q.g;
  for (int64_t n = 0; n < q.n; ++n)
    for (int64_t g = 0; g < q.g; ++g)
      for (int64_t ocg = 0; ocg < og; ++ocg) {
        const int64_t oc = g * og + ocg;
        for (int64_t oy = 0; oy < q.oh; ++oy)
          for (int64_t ox = 0; ox < q.ow; ++ox) {
            const int64_t yi = ((n * q.o + oc) * q.oh + oy) * q.ow + ox;
            for (int64_t icg = 0; icg < cg; ++icg) {
              const int64_t ic = g * cg + icg;
              for (int64_t ky = 0; ky < q.kh; ++ky) {
                const int64_t iy = oy * q.sh - q.ph + ky * q.dh;
                if (iy < 0 || iy >= q.h) continue;
                for (int64_t kx = 0; kx < q.kw; ++kx) {
                  const int64_t ix = ox * q.sw - q.pw + kx * q.dw;
                  if (ix < 0 || ix >= q.w) continue;
                  const int64_t xi = ((n * q.c + ic) * q.h + iy) * q.w + ix;
                  const int64_t wi = ((oc * cg + icg) * q.kh + ky) * q.kw + kx;
                  if (mode == 0)
                    out[yi] += a[xi] * b[wi];
                  else if (mode == 1)
                    out[xi] += a[yi] * b[wi];
                  else
                    out[wi] += a[xi] * b[yi];
                }
              }
            }
          }
      }
}

template <class T>
void add_channel_bias(T* y, const T* bias, int64_t n, int64_t c, int64_t hw) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < c; ++k)
      for (int64_t j = 0; j < hw; ++j) y[(i * c + k) * hw + j] += bias[k];
}

// Which tensors play x, w, y for each op, by kernel info.
enum class Role { conv, transpose, data, weights };
Geo geo_of(Role r, const KernelInfo& i) {
  switch (r) {
    case Role::conv:
      return geo(i.in[0], i.in[1], i.out[0], i.attrs);
    case Role::transpose:
      return geo(i.out[0], i.in[1], i.in[0], i.attrs);
    case Role::data:
      return geo(i.out[0], i.in[1], i.in[0], i.attrs);
    case Role::weights:
      return geo(i.in[0], i.out[0], i.in[1], i.attrs);
  }
  return {};
}

std::vector<KernelEntry> conv_reference(Role r) {
  return reference([r](auto t, const KernelInfo& info, const KernelArgs& a) {
    using T = decltype(t);
    Geo q = geo_of(r, info);
    T* out = out_ptr<T>(a, 0);
    const int64_t n = a.out[0]->numel();
    if (r == Role::conv) conv_ref<T>(0, q, in_ptr<T>(a, 0), in_ptr<T>(a, 1), out, n);
    if (r == Role::transpose || r == Role::data)
      conv_ref<T>(1, q, in_ptr<T>(a, 0), in_ptr<T>(a, 1), out, n);
    if (r == Role::weights) conv_ref<T>(2, q, in_ptr<T>(a, 0), in_ptr<T>(a, 1), out, n);
    if ((r == Role::conv || r == Role::transpose) && a.in.size() > 2)
      add_channel_bias(out, in_ptr<T>(a, 2), info.out[0][0], info.out[0][1],
                       info.out[0][2] * info.out[0][3]);
  });
}

// --- oneDNN ---------------------------------------------------------------------------

// The primitives are made with format "any", so oneDNN picks its blocked layouts (direct
// jit convolutions); LayoutKernel reorders at the kernel's edges. Measured on DCGAN's
// 64->128 convolution at batch 64 on 2 threads: forward 3.72 -> 1.79 ms, backward data
// 8.22 -> 1.88 ms, backward weights 3.11 -> 1.79 ms, against 0.02-0.04 ms per reorder.
// Under --precision bf16 the tensors a primitive reads are bf16 (rounded by the reorder in)
// and those it writes f32: any_src, any_wei and any_dst_in are what it reads,
// any_src_out, any_wei_out and any_dst what it writes.
struct OnednnConv {
  dnnl::memory::desc src, wei, dst, bias, any_src, any_wei, any_dst, any_src_out, any_wei_out,
      any_dst_in;
  dnnl::memory::dims strides, dil, pl, pr;
  dnnl::convolution_forward::primitive_desc fwd;
  OnednnConv(const Geo& q, bool with_bias, DType dt, bool bf16) {
    src = md({q.n, q.c, q.h, q.w}, dt);
    dst = md({q.n, q.o, q.oh, q.ow}, dt);
    dnnl::memory::dims wd = q.g == 1 ? dnnl::memory::dims{q.o, q.c, q.kh, q.kw}
                                     : dnnl::memory::dims{q.g, q.o / q.g, q.c / q.g, q.kh, q.kw};
    wei = md(Dims(wd.begin(), wd.end()), dt);
    const auto any = dnnl::memory::format_tag::any;
    const auto f32 = dnnl::memory::data_type::f32;
    any_src_out = dnnl::memory::desc({q.n, q.c, q.h, q.w}, f32, any);
    any_dst = dnnl::memory::desc({q.n, q.o, q.oh, q.ow}, f32, any);
    any_wei_out = dnnl::memory::desc(wd, f32, any);
    any_src = maybe_bf16(any_src_out, bf16);
    any_wei = maybe_bf16(any_wei_out, bf16);
    any_dst_in = maybe_bf16(any_dst, bf16);
    if (with_bias) bias = md({q.o}, dt);
    strides = {q.sh, q.sw};
    dil = {q.dh - 1, q.dw - 1};
    pl = {q.ph, q.pw};
    pr = {(q.oh - 1) * q.sh + (q.kh - 1) * q.dh + 1 - q.h - q.ph,
          (q.ow - 1) * q.sw + (q.kw - 1) * q.dw + 1 - q.w - q.pw};
    auto d = with_bias
                 ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                                   dnnl::algorithm::convolution_direct, any_src,
                                                   any_wei, bias, any_dst, strides, dil, pl, pr)
                 : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                                   dnnl::algorithm::convolution_direct, any_src,
                                                   any_wei, any_dst, strides, dil, pl, pr);
    fwd = dnnl::convolution_forward::primitive_desc(d, cpu_engine());
  }
};

// A kernel that runs a oneDNN primitive and then adds a per-channel bias.
class WithBias : public Kernel {
 public:
  explicit WithBias(std::unique_ptr<Kernel> k) : k_(std::move(k)) {}
  void run(const KernelArgs& a) override {
    k_->run(a);
    const Dims& d = a.out[0]->shape();
    add_channel_bias(out_ptr<float>(a, 0), in_ptr<float>(a, 2), d[0], d[1], d[2] * d[3]);
  }

 private:
  std::unique_ptr<Kernel> k_;
};

using LArgs = std::vector<LayoutKernel::Arg>;

KernelMaker onednn_conv(Role r) {
  return [r](const KernelInfo& info, std::string& why) {
    return try_onednn(why, [&]() -> std::unique_ptr<Kernel> {
      Geo q = geo_of(r, info);
      const bool bias = (r == Role::conv || r == Role::transpose) && info.in.size() > 2;
      OnednnConv c(q, r == Role::conv && bias, info.dtype, info.bf16);
      if (r == Role::conv) {
        LArgs args = {{DNNL_ARG_SRC, c.src, c.fwd.src_desc(), 1},
                      {DNNL_ARG_WEIGHTS, c.wei, c.fwd.weights_desc(), 2},
                      {DNNL_ARG_DST, c.dst, c.fwd.dst_desc(), -1}};
        if (bias) args.push_back({DNNL_ARG_BIAS, c.bias, c.fwd.bias_desc(), 3});
        return std::make_unique<LayoutKernel>(dnnl::convolution_forward(c.fwd), args);
      }
      if (r == Role::weights) {
        dnnl::convolution_backward_weights::primitive_desc pd(
            {dnnl::algorithm::convolution_direct, c.any_src, c.any_wei_out, c.any_dst_in, c.strides,
             c.dil, c.pl, c.pr},
            cpu_engine(), c.fwd);
        return std::make_unique<LayoutKernel>(
            dnnl::convolution_backward_weights(pd),
            LArgs{{DNNL_ARG_SRC, c.src, pd.src_desc(), 1},
                  {DNNL_ARG_DIFF_DST, c.dst, pd.diff_dst_desc(), 2},
                  {DNNL_ARG_DIFF_WEIGHTS, c.wei, pd.diff_weights_desc(), -1}});
      }
      // Into few channels per group (an image's 1 or 3), oneDNN's direct kernels pad the
      // channels to a vector block and ran 3-7x slower than its GEMM-based kernel, which plain
      // formats select: dcgan's 64 -> 1 transposed convolution 1.18 -> 0.18 ms (batch 64, 2
      // threads), 3 -> 64 channels 1.56 -> 0.53 ms; from 8 channels on the two are even.
      const bool few = q.c / q.g < 8;
      dnnl::convolution_backward_data::primitive_desc pd(
          {dnnl::algorithm::convolution_direct, few ? c.src : c.any_src_out,
           few ? maybe_bf16(c.wei, info.bf16) : c.any_wei,
           few ? maybe_bf16(c.dst, info.bf16) : c.any_dst_in, c.strides, c.dil, c.pl, c.pr},
          cpu_engine(), c.fwd);
      std::unique_ptr<Kernel> k =
          std::make_unique<LayoutKernel>(dnnl::convolution_backward_data(pd),
                                         LArgs{{DNNL_ARG_DIFF_DST, c.dst, pd.diff_dst_desc(), 1},
                                               {DNNL_ARG_WEIGHTS, c.wei, pd.weights_desc(), 2},
                                               {DNNL_ARG_DIFF_SRC, c.src, pd.diff_src_desc(), -1}});
      return bias ? std::make_unique<WithBias>(std::move(k)) : std::move(k);
    });
  };
}

// --- shapes -----------------------------------------------------------------------------

json geo_attrs(const json& a) {
  return {{"stride", a.at("stride")},
          {"pad", a.at("pad")},
          {"dilation", a.at("dilation")},
          {"groups", a.at("groups")}};
}

void check_spatial(const Shape& x, const char* what) {
  if (x.size() != 4)
    throw ShapeError(std::string(what) + " takes [batch, channels, height, width], got " +
                     shape_str(x));
  for (int i = 1; i < 4; ++i)
    if (x[i].batch)
      throw ShapeError("only the first axis may depend on the batch, got " + shape_str(x));
}

void check_geometry(const json& a) {
  auto [sh, sw] = pair_of(a, "stride");
  auto [dh, dw] = pair_of(a, "dilation");
  if (sh < 1 || sw < 1) throw AttrError("stride", "expected a stride >= 1");
  if (dh < 1 || dw < 1) throw AttrError("dilation", "expected a dilation >= 1");
  if (a.at("groups").get<int64_t>() < 1) throw AttrError("groups", "expected groups >= 1");
}

// Output size of a convolution along one axis; s >= 1 and k >= 1 (check_geometry).
int64_t conv_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  const int64_t span = checked_add(checked_mul(d, k - 1), 1);
  return checked_sub(checked_add(in, checked_mul(2, p)), span) / s + 1;
}

std::vector<Shape> conv2d_rule(const ShapeContext& c) {
  const Shape &x = c.in[0], &w = c.in[1];
  check_spatial(x, "conv2d");
  check_geometry(c.attrs);
  if (w.size() != 4)
    throw ShapeError("weight must be [out, in/groups, kh, kw], got " + shape_str(w));
  const int64_t g = c.attrs.at("groups");
  const int64_t in_c = checked_mul(w[1].n, g);
  if (x[1].n != in_c)
    throw ShapeError("input has " + x[1].str() + " channels, weight expects " +
                     std::to_string(in_c));
  if (w[0].n % g) throw ShapeError("output channels are not divisible by groups");
  if (c.in.size() > 2 && (c.in[2].size() != 1 || c.in[2][0] != w[0]))
    throw ShapeError("bias has shape " + shape_str(c.in[2]) + ", expected [" + w[0].str() + "]");
  auto [sh, sw] = pair_of(c.attrs, "stride");
  auto [ph, pw] = pair_of(c.attrs, "pad");
  auto [dh, dw] = pair_of(c.attrs, "dilation");
  int64_t oh = conv_out(x[2].n, w[2].n, sh, ph, dh), ow = conv_out(x[3].n, w[3].n, sw, pw, dw);
  if (oh < 1 || ow < 1)
    throw ShapeError("a " + w[2].str() + "x" + w[3].str() + " kernel does not fit input " +
                     shape_str(x));
  return {{x[0], w[0], Dim(oh), Dim(ow)}};
}

std::vector<Shape> conv_transpose2d_rule(const ShapeContext& c) {
  const Shape &x = c.in[0], &w = c.in[1];
  check_spatial(x, "conv_transpose2d");
  check_geometry(c.attrs);
  if (w.size() != 4)
    throw ShapeError("weight must be [in, out/groups, kh, kw], got " + shape_str(w));
  const int64_t g = c.attrs.at("groups");
  if (x[1] != w[0])
    throw ShapeError("input has " + x[1].str() + " channels, weight expects " + w[0].str());
  if (w[0].n % g) throw ShapeError("input channels are not divisible by groups");
  Dim out_c(checked_mul(w[1].n, g));
  if (c.in.size() > 2 && (c.in[2].size() != 1 || c.in[2][0] != out_c))
    throw ShapeError("bias has shape " + shape_str(c.in[2]) + ", expected [" + out_c.str() + "]");
  auto [sh, sw] = pair_of(c.attrs, "stride");
  auto [ph, pw] = pair_of(c.attrs, "pad");
  auto [dh, dw] = pair_of(c.attrs, "dilation");
  auto [oph, opw] = pair_of(c.attrs, "output_padding");
  if (oph >= std::max(sh, dh) || opw >= std::max(sw, dw))
    throw AttrError("output_padding",
                    "output_padding must be smaller than the stride or the dilation");
  // The adjoint of conv_out: (in - 1) s - 2 p + d (k - 1) + output_padding + 1.
  auto out = [](int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, int64_t op) {
    int64_t r = checked_sub(checked_mul(in - 1, s), checked_mul(2, p));
    return checked_add(checked_add(r, checked_mul(d, k - 1)), op + 1);
  };
  int64_t oh = out(x[2].n, w[2].n, sh, ph, dh, oph), ow = out(x[3].n, w[3].n, sw, pw, dw, opw);
  if (oh < 1 || ow < 1) throw ShapeError("the output would be empty");
  return {{x[0], out_c, Dim(oh), Dim(ow)}};
}

double conv_flops(Role r, const KernelInfo& i) {
  Geo q = geo_of(r, i);
  return 2.0 * double(q.n * q.o * q.oh * q.ow) * double(q.c / q.g * q.kh * q.kw);
}

OpDef& conv_attrs(OpDef& d) {
  return d.attr("stride", AttrType::Pair, 1, "stride, or [height, width]")
      .attr("pad", AttrType::Pair, 0, "zero padding on each side, or [height, width]")
      .attr("dilation", AttrType::Pair, 1, "spacing of kernel taps")
      .attr("groups", AttrType::PosInt, 1, "channel groups")
      .attr("filters", AttrType::PosInt, nullptr, "output channels (as a layer)")
      .attr("kernel", AttrType::Pair, nullptr, "kernel size (as a layer)")
      .attr("bias", AttrType::Bool, true, "whether the layer has a bias")
      .attr("weight_init", AttrType::Initializer, "default", "initializer of the weight")
      .attr("bias_init", AttrType::Initializer, "default", "initializer of the bias");
}

ParamRule conv_params(bool transpose) {
  return [transpose](const std::vector<Shape>& in, const json& a) {
    if (a.at("filters").is_null())
      throw AttrError("filters", "as a layer it needs attribute 'filters' (output channels)");
    if (a.at("kernel").is_null())
      throw AttrError("kernel", "as a layer it needs attribute 'kernel'");
    check_spatial(in[0], transpose ? "conv_transpose2d" : "conv2d");
    auto [kh, kw] = pair_of(a, "kernel");
    if (kh < 1 || kw < 1) throw AttrError("kernel", "expected a kernel size >= 1");
    const int64_t f = a.at("filters"), c = in[0][1].n, g = a.at("groups");
    if (c % g || f % g) throw AttrError("groups", "channels are not divisible by groups");
    Shape w = transpose ? Shape{Dim(c), Dim(f / g), Dim(kh), Dim(kw)}
                        : Shape{Dim(f), Dim(c / g), Dim(kh), Dim(kw)};
    double fan_in = double(w[1].n) * double(kh) * double(kw),
           fan_out = double(w[0].n) * double(kh) * double(kw);
    std::vector<ParamSpec> p = {{"weight", w, a.at("weight_init"), fan_in, fan_out}};
    if (a.at("bias")) p.push_back({"bias", {Dim(f)}, a.at("bias_init"), fan_in, fan_out});
    return p;
  };
}

Val channel_sum(GradContext& g, Val d) { return g.op("sum", {d}, {{"axes", {0, 2, 3}}}); }

const json kPad1 = {{"pad", 1}};

}  // namespace

WEFT_OP(conv2d)
    .doc(
        "2-D convolution (cross-correlation) of x [N,C,H,W] with weight [O,C/groups,kh,kw], plus "
        "bias [O]")
    .input("x")
    .input("weight")
    .optional_input("bias")
    .output("y")
    .with(conv_attrs)
    .attr("spectral_norm", AttrType::Bool, false,
          "as a layer: divide the weight by its largest singular value (spectral_norm op)")
    .shape(conv2d_rule)
    .params(conv_params(false))
    .kernel(0, DType::f32, "onednn", onednn_conv(Role::conv), 1)
    .kernels(conv_reference(Role::conv))
    .grad([](GradContext& g) {
      Val d = g.grad_output(), x = g.input(0), w = g.input(1);
      json a = geo_attrs(g.attrs());
      std::vector<Val> r = {g.needs(0) ? g.op("conv2d_backward_data", {d, w, x}, a) : Val{},
                            g.needs(1) ? g.op("conv2d_backward_weights", {x, d, w}, a) : Val{}};
      if (g.num_inputs() > 2) r.push_back(g.needs(2) ? channel_sum(g, d) : Val{});
      return r;
    })
    .dense_flops([](const KernelInfo& i) { return conv_flops(Role::conv, i); })
    .test({.cases = {{{2, 3, 5, 5}, {4, 3, 3, 3}, {4}}},
           .attrs = kPad1,
           .order = 2,
           .extra = {{{{2, 3, 7, 6}, {2, 3, 3, 2}}, {{"stride", 2}}},
                     {{{1, 4, 5, 5}, {6, 2, 3, 3}, {6}}, {{"groups", 2}, {"pad", 1}}},
                     {{{1, 2, 7, 7}, {3, 2, 3, 3}},
                      {{"dilation", 2}, {"pad", {1, 2}}, {"stride", {2, 1}}}},
                     {{{2, 1, 8, 8}, {4, 1, 4, 4}, {4}}, {{"stride", 2}, {"pad", 1}}}},
           .expect_kernel = "onednn"});

WEFT_OP(conv_transpose2d)
    .doc(
        "transposed 2-D convolution of x [N,C_in,H,W] with weight [C_in,C_out/groups,kh,kw], plus "
        "bias [C_out]")
    .input("x")
    .input("weight")
    .optional_input("bias")
    .output("y")
    .with(conv_attrs)
    .attr("output_padding", AttrType::Pair, 0, "extra rows and columns on one side of the output")
    .shape(conv_transpose2d_rule)
    .params(conv_params(true))
    .kernel(0, DType::f32, "onednn", onednn_conv(Role::transpose), 1)
    .kernels(conv_reference(Role::transpose))
    .grad([](GradContext& g) {
      Val d = g.grad_output(), x = g.input(0), w = g.input(1);
      json a = geo_attrs(g.attrs());
      std::vector<Val> r = {g.needs(0) ? g.op("conv2d", {d, w}, a) : Val{},
                            g.needs(1) ? g.op("conv2d_backward_weights", {d, x, w}, a) : Val{}};
      if (g.num_inputs() > 2) r.push_back(g.needs(2) ? channel_sum(g, d) : Val{});
      return r;
    })
    .dense_flops([](const KernelInfo& i) { return conv_flops(Role::transpose, i); })
    .test({.cases = {{{2, 3, 4, 4}, {3, 2, 4, 4}, {2}}},
           .attrs = {{"stride", 2}, {"pad", 1}},
           .order = 2,
           .extra = {{{{1, 2, 3, 3}, {2, 3, 3, 3}},
                      {{"stride", 2}, {"pad", 1}, {"output_padding", 1}}},
                     {{{1, 4, 3, 3}, {4, 1, 3, 3}, {2}}, {{"groups", 2}}},
                     {{{2, 3, 5, 5}, {3, 2, 3, 3}}, {{"pad", 1}}},
                     {{{1, 3, 4, 4}, {3, 8, 3, 3}, {8}}, {{"pad", 1}}}},
           .expect_kernel = "onednn"});

WEFT_OP(conv2d_backward_data)
    .doc("the adjoint of conv2d in x: dx from dy [N,O,OH,OW] and weight, shaped like `like`")
    .input("dy")
    .input("weight")
    .input("like")
    .output("dx")
    .attr("stride", AttrType::Pair, 1, "the convolution's stride")
    .attr("pad", AttrType::Pair, 0, "the convolution's padding")
    .attr("dilation", AttrType::Pair, 1, "the convolution's dilation")
    .attr("groups", AttrType::PosInt, 1, "the convolution's groups")
    .shape([](const ShapeContext& c) {
      ShapeContext fwd{{c.in[2], c.in[1]}, c.attrs};
      if (conv2d_rule(fwd)[0] != c.in[0])
        throw ShapeError("dy does not match the convolution of `like`");
      return std::vector<Shape>{c.in[2]};
    })
    .kernel(0, DType::f32, "onednn", onednn_conv(Role::data), 1)
    .kernels(conv_reference(Role::data))
    .grad([](GradContext& g) {
      Val gg = g.grad_output(), dy = g.input(0), w = g.input(1);
      json a = geo_attrs(g.attrs());
      return std::vector<Val>{g.needs(0) ? g.op("conv2d", {gg, w}, a) : Val{},
                              g.needs(1) ? g.op("conv2d_backward_weights", {gg, dy, w}, a) : Val{},
                              Val{}};
    })
    .dense_flops([](const KernelInfo& i) { return conv_flops(Role::data, i); })
    .test({.cases = {{{2, 4, 5, 5}, {4, 3, 3, 3}, {2, 3, 5, 5}}},
           .attrs = kPad1,
           .order = 2,
           .no_grad_inputs = {2},
           // Fewer than 8 channels in dx take oneDNN's GEMM-based kernel, 8 its direct one.
           .extra = {{{{1, 4, 3, 3}, {4, 1, 3, 3}, {1, 2, 7, 7}}, {{"stride", 2}, {"groups", 2}}},
                     {{{1, 4, 5, 5}, {4, 8, 3, 3}, {1, 8, 5, 5}}, {{"pad", 1}}}},
           .expect_kernel = "onednn"});

WEFT_OP(conv2d_backward_weights)
    .doc("the adjoint of conv2d in the weight: dw from x and dy, shaped like `like`")
    .input("x")
    .input("dy")
    .input("like")
    .output("dw")
    .attr("stride", AttrType::Pair, 1, "the convolution's stride")
    .attr("pad", AttrType::Pair, 0, "the convolution's padding")
    .attr("dilation", AttrType::Pair, 1, "the convolution's dilation")
    .attr("groups", AttrType::PosInt, 1, "the convolution's groups")
    .shape([](const ShapeContext& c) {
      ShapeContext fwd{{c.in[0], c.in[2]}, c.attrs};
      if (conv2d_rule(fwd)[0] != c.in[1])
        throw ShapeError("dy does not match the convolution of x");
      return std::vector<Shape>{c.in[2]};
    })
    .kernel(0, DType::f32, "onednn", onednn_conv(Role::weights), 1)
    .kernels(conv_reference(Role::weights))
    .grad([](GradContext& g) {
      Val gg = g.grad_output(), x = g.input(0), dy = g.input(1);
      json a = geo_attrs(g.attrs());
      return std::vector<Val>{g.needs(0) ? g.op("conv2d_backward_data", {dy, gg, x}, a) : Val{},
                              g.needs(1) ? g.op("conv2d", {x, gg}, a) : Val{}, Val{}};
    })
    .dense_flops([](const KernelInfo& i) { return conv_flops(Role::weights, i); })
    .test({.cases = {{{2, 3, 5, 5}, {2, 4, 5, 5}, {4, 3, 3, 3}}},
           .attrs = kPad1,
           .order = 2,
           .no_grad_inputs = {2},
           .extra = {{{{1, 2, 7, 7}, {1, 4, 3, 3}, {4, 1, 3, 3}}, {{"stride", 2}, {"groups", 2}}}},
           .expect_kernel = "onednn"});

}  // namespace weft::ops

// Pooling, nearest-neighbour upsampling and padding on [N, C, H, W]. The linear ones come
// in adjoint pairs (avg_pool2d and its backward, upsample and its backward, pad and its
// crop), each the other's gradient, so they are differentiable to any order.
#include "ops/common.h"

namespace weft::ops {
namespace {

std::pair<int64_t, int64_t> pair_or(const json& attrs, const char* key, const char* fallback) {
  const json& v = attrs.at(key).is_null() ? attrs.at(fallback) : attrs.at(key);
  if (v.is_array()) return {v[0].get<int64_t>(), v[1].get<int64_t>()};
  return {v.get<int64_t>(), v.get<int64_t>()};
}

struct Window {
  int64_t n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw;
};

Window window(const Dims& x, const Dims& y, const json& a) {
  auto [kh, kw] = pair_or(a, "kernel", "kernel");
  auto [sh, sw] = pair_or(a, "stride", "kernel");
  auto [ph, pw] = pair_or(a, "pad", "pad");
  return {x[0], x[1], x[2], x[3], y[2], y[3], kh, kw, sh, sw, ph, pw};
}

// Calls f(x_index, y_index) for every tap of every window that falls inside x.
template <class F>
void for_taps(const Window& q, F f) {
  for (int64_t nc = 0; nc < q.n * q.c; ++nc)
    for (int64_t oy = 0; oy < q.oh; ++oy)
      for (int64_t ox = 0; ox < q.ow; ++ox) {
        const int64_t yi = (nc * q.oh + oy) * q.ow + ox;
        for (int64_t ky = 0; ky < q.kh; ++ky) {
          const int64_t iy = oy * q.sh - q.ph + ky;
          if (iy < 0 || iy >= q.h) continue;
          for (int64_t kx = 0; kx < q.kw; ++kx) {
            const int64_t ix = ox * q.sw - q.pw + kx;
            if (ix >= 0 && ix < q.w) f((nc * q.h + iy) * q.w + ix, yi);
          }
        }
      }
}

std::vector<Shape> pool_rule(const ShapeContext& c) {
  const Shape& x = c.in[0];
  if (x.size() != 4)
    throw ShapeError("pooling takes [batch, channels, height, width], got " + shape_str(x));
  auto [kh, kw] = pair_or(c.attrs, "kernel", "kernel");
  auto [sh, sw] = pair_or(c.attrs, "stride", "kernel");
  auto [ph, pw] = pair_or(c.attrs, "pad", "pad");
  if (kh < 1 || kw < 1 || sh < 1 || sw < 1)
    throw AttrError("kernel", "kernel and stride must be >= 1");
  if (ph > kh / 2 || pw > kw / 2) throw AttrError("pad", "padding may be at most half the kernel");
  int64_t oh = checked_sub(checked_add(x[2].n, 2 * ph), kh) / sh + 1,
          ow = checked_sub(checked_add(x[3].n, 2 * pw), kw) / sw + 1;
  if (oh < 1 || ow < 1) throw ShapeError("the window does not fit input " + shape_str(x));
  return {{x[0], x[1], Dim(oh), Dim(ow)}};
}

OpDef& pool_attrs(OpDef& d) {
  return d.required("kernel", AttrType::Pair, "window size, or [height, width]")
      .attr("stride", AttrType::Pair, nullptr, "step between windows (default: the kernel)")
      .attr("pad", AttrType::Pair, 0, "implicit padding on each side");
}

// avg_pool2d (dst = y) and its adjoint (dst = x): each tap moves src * 1/(kh kw).
template <class T>
void average_taps(const Window& q, const T* src, T* dst, int64_t dst_n, bool adjoint) {
  const T inv = T(1.0 / double(q.kh * q.kw));
  std::fill(dst, dst + dst_n, T(0));
  for_taps(q, [&](int64_t xi, int64_t yi) {
    if (adjoint)
      dst[xi] += src[yi] * inv;
    else
      dst[yi] += src[xi] * inv;
  });
}

// The shape of `like`, for the backward ops.
std::vector<Shape> like_input1(const ShapeContext& c) { return {c.in[1]}; }

const std::vector<std::vector<Dims>> kPoolCases = {{{2, 3, 6, 6}}, {{1, 2, 5, 7}}};

}  // namespace

WEFT_OP(max_pool2d)
    .doc("maximum over each window")
    .input("x")
    .output("y")
    .with(pool_attrs)
    .shape(pool_rule)
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      const T* x = in_ptr<T>(a, 0);
      T* y = out_ptr<T>(a, 0);
      std::fill(y, y + a.out[0]->numel(), -std::numeric_limits<T>::infinity());
      for_taps(window(info.in[0], info.out[0], info.attrs),
               [&](int64_t xi, int64_t yi) { y[yi] = std::max(y[yi], x[xi]); });
    }))
    .grad([](GradContext& g) {
      return std::vector<Val>{
          g.op("max_pool2d_backward", {g.grad_output(), g.input(0), g.output()}, g.attrs())};
    })
    .test({.cases = kPoolCases,
           .attrs = {{"kernel", 2}},
           .extra = {{{{1, 2, 5, 5}}, {{"kernel", 3}, {"stride", 2}, {"pad", 1}}}}});

WEFT_OP(max_pool2d_backward)
    .doc("routes dy to the first maximum of each window of x (y is max_pool2d's output)")
    .input("dy")
    .input("x")
    .input("y")
    .output("dx")
    .with(pool_attrs)
    .shape([](const ShapeContext& c) { return std::vector<Shape>{c.in[1]}; })
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      const T *dy = in_ptr<T>(a, 0), *x = in_ptr<T>(a, 1), *y = in_ptr<T>(a, 2);
      T* dx = out_ptr<T>(a, 0);
      std::fill(dx, dx + a.out[0]->numel(), T(0));
      std::vector<char> taken(size_t(a.in[0]->numel()), 0);  // one winner per window
      for_taps(window(info.in[1], info.in[0], info.attrs), [&](int64_t xi, int64_t yi) {
        if (!taken[size_t(yi)] && x[xi] == y[yi]) dx[xi] += dy[yi], taken[size_t(yi)] = 1;
      });
    }))
    .test({.cases = {{{2, 3, 3, 3}, {2, 3, 6, 6}, {2, 3, 3, 3}}}, .attrs = {{"kernel", 2}}});

WEFT_OP(avg_pool2d)
    .doc("mean over each window (padding counts as zeros)")
    .input("x")
    .output("y")
    .with(pool_attrs)
    .shape(pool_rule)
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      average_taps<T>(window(info.in[0], info.out[0], info.attrs), in_ptr<T>(a, 0),
                      out_ptr<T>(a, 0), a.out[0]->numel(), false);
    }))
    .grad([](GradContext& g) {
      return std::vector<Val>{
          g.op("avg_pool2d_backward", {g.grad_output(), g.input(0)}, g.attrs())};
    })
    .test({.cases = kPoolCases,
           .attrs = {{"kernel", 2}},
           .order = 2,
           .extra = {{{{1, 2, 5, 5}}, {{"kernel", 3}, {"stride", 2}, {"pad", 1}}}}});

WEFT_OP(avg_pool2d_backward)
    .doc("the adjoint of avg_pool2d: spreads dy evenly over each window, shaped like `like`")
    .input("dy")
    .input("like")
    .output("dx")
    .with(pool_attrs)
    .shape(like_input1)
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      average_taps<T>(window(info.in[1], info.in[0], info.attrs), in_ptr<T>(a, 0), out_ptr<T>(a, 0),
                      a.out[0]->numel(), true);
    }))
    .grad([](GradContext& g) {
      json a = g.attrs();
      return std::vector<Val>{g.op("avg_pool2d", {g.grad_output()}, a), Val{}};
    })
    .test({.cases = {{{2, 3, 3, 3}, {2, 3, 6, 6}}},
           .attrs = {{"kernel", 2}},
           .order = 2,
           .no_grad_inputs = {1}});

WEFT_OP(upsample_nearest2d)
    .doc("repeat each pixel scale x scale times")
    .input("x")
    .output("y")
    .attr("scale", AttrType::PosInt, 2, "the factor")
    .shape([](const ShapeContext& c) {
      const Shape& x = c.in[0];
      if (x.size() != 4)
        throw ShapeError("upsample_nearest2d takes [batch, channels, height, width], got " +
                         shape_str(x));
      int64_t s = c.attrs.at("scale");
      return std::vector<Shape>{
          {x[0], x[1], Dim(checked_mul(x[2].n, s)), Dim(checked_mul(x[3].n, s))}};
    })
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      const int64_t s = info.attrs.at("scale"), h = info.in[0][2], w = info.in[0][3],
                    nc = info.in[0][0] * info.in[0][1];
      const T* x = in_ptr<T>(a, 0);
      T* y = out_ptr<T>(a, 0);
      for (int64_t p = 0; p < nc; ++p)
        for (int64_t i = 0; i < h * s; ++i)
          for (int64_t j = 0; j < w * s; ++j)
            y[(p * h * s + i) * w * s + j] = x[(p * h + i / s) * w + j / s];
    }))
    .grad([](GradContext& g) {
      return std::vector<Val>{
          g.op("upsample_nearest2d_backward", {g.grad_output(), g.input(0)}, g.attrs())};
    })
    .test({.cases = {{{2, 3, 3, 4}}}, .attrs = {{"scale", 2}}, .order = 2});

WEFT_OP(upsample_nearest2d_backward)
    .doc("the adjoint of upsample_nearest2d: sums each scale x scale block, shaped like `like`")
    .input("dy")
    .input("like")
    .output("dx")
    .attr("scale", AttrType::PosInt, 2, "the factor")
    .shape(like_input1)
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      const int64_t s = info.attrs.at("scale"), h = info.out[0][2], w = info.out[0][3],
                    nc = info.out[0][0] * info.out[0][1];
      const T* dy = in_ptr<T>(a, 0);
      T* dx = out_ptr<T>(a, 0);
      std::fill(dx, dx + a.out[0]->numel(), T(0));
      for (int64_t p = 0; p < nc; ++p)
        for (int64_t i = 0; i < h * s; ++i)
          for (int64_t j = 0; j < w * s; ++j)
            dx[(p * h + i / s) * w + j / s] += dy[(p * h * s + i) * w * s + j];
    }))
    .grad([](GradContext& g) {
      return std::vector<Val>{g.op("upsample_nearest2d", {g.grad_output()}, g.attrs()), Val{}};
    })
    .test({.cases = {{{2, 3, 6, 8}, {2, 3, 3, 4}}},
           .attrs = {{"scale", 2}},
           .order = 2,
           .no_grad_inputs = {1}});

}  // namespace weft::ops

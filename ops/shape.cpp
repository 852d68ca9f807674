// Ops that move data without arithmetic: reshapes (views, no copy), concat, slice, and
// stop_gradient. Gradients of views are views again (reshape_like).
#include <array>
#include <cstring>

#include "ops/common.h"

namespace weft::ops {
namespace {

std::vector<Shape> reshape_rule(const ShapeContext& c) {
  const json& spec = c.attrs.at("shape");
  Dim total = shape_numel(c.in[0]);
  Shape out;
  int infer = -1;
  Dim known(1);
  for (size_t i = 0; i < spec.size(); ++i) {
    if (spec[i] == -1) {
      if (infer >= 0) throw AttrError("shape", "at most one -1 in a shape");
      infer = int(i);
      out.push_back(Dim(1));
    } else {
      out.push_back(spec[i] == "B" ? Dim::B() : Dim(spec[i].get<int64_t>()));
      known = dim_mul(known, out.back());
    }
  }
  if (infer >= 0) out[infer] = dim_div(total, known);
  if (shape_numel(out) != total)
    throw ShapeError("cannot reshape " + shape_str(c.in[0]) + " (" + total.str() +
                     " elements) to " + shape_str(out));
  return {out};
}

std::vector<Val> reshape_grad(GradContext& g) {
  return {g.op("reshape_like", {g.grad_output(), g.input(0)})};
}

// A view's kernel does nothing; the planner never runs it (the op is an alias). The
// reference kernel copies, so the op sweep can still run it through a plan of its own.
auto copy_ref = [](auto t, const KernelInfo&, const KernelArgs& a) {
  using T = decltype(t);
  std::memcpy(out_ptr<T>(a, 0), in_ptr<T>(a, 0), sizeof(T) * size_t(a.out[0]->numel()));
};

// Copies block `src` of shape `part` into `dst` of shape `whole` at offset `off` along `axis`
// (or the reverse when `gather`).
template <class T>
void copy_block(const T* src, T* dst, const Dims& part, const Dims& whole, int axis, int64_t off,
                bool gather) {
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < axis; ++i) outer *= whole[i];
  for (size_t i = axis + 1; i < whole.size(); ++i) inner *= whole[i];
  const int64_t pa = part[axis] * inner, wa = whole[axis] * inner;
  for (int64_t o = 0; o < outer; ++o) {
    if (gather)
      std::memcpy(dst + o * pa, src + o * wa + off * inner, sizeof(T) * size_t(pa));
    else
      std::memcpy(dst + o * wa + off * inner, src + o * pa, sizeof(T) * size_t(pa));
  }
}

}  // namespace

WEFT_OP(reshape)
    .doc("view x with another shape; \"B\" is the batch, -1 is inferred")
    .input("x")
    .output("y")
    .required("shape", AttrType::ShapeSpec, "the new shape")
    .shape(reshape_rule)
    .alias()
    .kernels(reference(copy_ref))
    .grad(reshape_grad)
    .test({.cases = {{{2, 6}}}, .attrs = {{"shape", {3, -1}}}, .order = 2});

WEFT_OP(flatten)
    .doc("view x as [x.shape[0], everything else]")
    .input("x")
    .output("y")
    .shape([](const ShapeContext& c) {
      if (c.in[0].empty()) throw ShapeError("cannot flatten a scalar");
      Shape rest(c.in[0].begin() + 1, c.in[0].end());
      return std::vector<Shape>{{c.in[0][0], shape_numel(rest)}};
    })
    .alias()
    .kernels(reference(copy_ref))
    .grad(reshape_grad)
    .test({.cases = {{{2, 3, 4}}}, .order = 2});

WEFT_OP(reshape_like)
    .doc("view x with the shape of `like` (same element count)")
    .input("x")
    .input("like")
    .output("y")
    .shape([](const ShapeContext& c) {
      if (shape_numel(c.in[0]) != shape_numel(c.in[1]))
        throw ShapeError("cannot reshape " + shape_str(c.in[0]) + " like " + shape_str(c.in[1]));
      return std::vector<Shape>{c.in[1]};
    })
    .alias()
    .kernels(reference(copy_ref))
    .grad([](GradContext& g) {
      return std::vector<Val>{g.op("reshape_like", {g.grad_output(), g.input(0)}), Val{}};
    })
    .test({.cases = {{{2, 6}, {3, 4}}}, .order = 2, .no_grad_inputs = {1}});

WEFT_OP(expand_dims)
    .doc("view x with size-1 axes inserted at `axes` (positions in the output)")
    .input("x")
    .output("y")
    .required("axes", AttrType::Ints, "where the new axes go")
    .shape([](const ShapeContext& c) {
      auto axes = c.attrs.at("axes").get<std::vector<int64_t>>();
      Shape out = c.in[0];
      for (auto a : axes) {
        if (a < 0 || a > int64_t(out.size())) throw AttrError("axes", "axis out of range");
        out.insert(out.begin() + a, Dim(1));
      }
      return std::vector<Shape>{out};
    })
    .alias()
    .kernels(reference(copy_ref))
    .grad(reshape_grad)
    .test({.cases = {{{3, 4}}}, .attrs = {{"axes", {1}}}, .order = 2});

WEFT_OP(stop_gradient)
    .doc("x, through which no gradient flows")
    .input("x")
    .output("y")
    .shape(same_as_input0)
    .alias()
    .kernels(reference(copy_ref))
    .grad([](GradContext&) { return std::vector<Val>{Val{}}; })
    // Its gradient is zero by definition, not by arithmetic: tests/test_autodiff.cpp checks it.
    .test({.cases = {{{3, 4}}}, .no_grad_inputs = {0}});

WEFT_OP(zeros_like)
    .doc("zeros of x's shape")
    .input("x")
    .output("y")
    .shape(same_as_input0)
    .kernels(reference([](auto t, const KernelInfo&, const KernelArgs& a) {
      using T = decltype(t);
      std::memset(out_ptr<T>(a, 0), 0, sizeof(T) * size_t(a.out[0]->numel()));
    }))
    .grad([](GradContext&) { return std::vector<Val>{Val{}}; })
    .test({.cases = {{{3, 4}}}});

WEFT_OP(concat)
    .doc("join inputs along `axis`")
    .variadic_input("x")
    .output("y")
    .attr("axis", AttrType::Int, 1, "the axis to join along")
    .shape([](const ShapeContext& c) {
      int axis = norm_axis(c.attrs.at("axis").get<int64_t>(), c.in[0].size());
      Shape out = c.in[0];
      for (size_t k = 1; k < c.in.size(); ++k) {
        const Shape& s = c.in[k];
        bool ok = s.size() == out.size();
        for (size_t i = 0; ok && i < s.size(); ++i) ok = int(i) == axis || s[i] == out[i];
        if (!ok)
          throw ShapeError("input " + std::to_string(k) + " has shape " + shape_str(s) +
                           ", which does not fit " + shape_str(c.in[0]) + " along axis " +
                           std::to_string(axis));
        out[axis] = dim_add(out[axis], s[axis]);
      }
      return std::vector<Shape>{out};
    })
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      int axis = norm_axis(info.attrs.at("axis").get<int64_t>(), info.out[0].size());
      int64_t off = 0;
      for (size_t k = 0; k < a.in.size(); ++k) {
        copy_block(in_ptr<T>(a, int(k)), out_ptr<T>(a, 0), info.in[k], info.out[0], axis, off,
                   false);
        off += info.in[k][axis];
      }
    }))
    .grad([](GradContext& g) {
      std::vector<Val> parts;
      for (int k = 0; k < g.num_inputs(); ++k) parts.push_back(g.input(k));
      std::vector<Val> out;
      for (int k = 0; k < g.num_inputs(); ++k) {
        std::vector<Val> in{g.grad_output()};
        in.insert(in.end(), parts.begin(), parts.end());
        out.push_back(
            g.needs(k) ? g.op("concat_backward", in, {{"axis", g.attrs().at("axis")}, {"index", k}})
                       : Val{});
      }
      return out;
    })
    .test({.cases = {{{2, 3}, {2, 4}}, {{2, 3}, {2, 1}, {2, 2}}},
           .attrs = {{"axis", 1}},
           .order = 2});

WEFT_OP(concat_backward)
    .doc("the part of dy (a concat's gradient) that belongs to input `index`")
    .input("dy")
    .variadic_input("parts")
    .output("dx")
    .attr("axis", AttrType::Int, 1, "the concat's axis")
    .required("index", AttrType::NonNegInt, "which part")
    .shape([](const ShapeContext& c) {
      size_t k = c.attrs.at("index").get<size_t>();
      if (k + 1 >= c.in.size()) throw AttrError("index", "index out of range");
      return std::vector<Shape>{c.in[k + 1]};
    })
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      int axis = norm_axis(info.attrs.at("axis").get<int64_t>(), info.in[0].size());
      size_t k = info.attrs.at("index").get<size_t>();
      int64_t off = 0;
      for (size_t j = 0; j < k; ++j) off += info.in[j + 1][axis];
      copy_block(in_ptr<T>(a, 0), out_ptr<T>(a, 0), info.out[0], info.in[0], axis, off, true);
    }))
    .grad([](GradContext& g) {  // put the part back among zeros
      std::vector<Val> parts;
      size_t k = g.attrs().at("index").get<size_t>();
      for (int j = 1; j < g.num_inputs(); ++j)
        parts.push_back(size_t(j - 1) == k ? g.grad_output() : g.op("zeros_like", {g.input(j)}));
      std::vector<Val> out(g.num_inputs());
      out[0] = g.op("concat", parts, {{"axis", g.attrs().at("axis")}});
      return out;
    })
    .test({.cases = {{{2, 7}, {2, 3}, {2, 4}}},
           .attrs = {{"axis", 1}, {"index", 1}},
           .order = 2,
           .no_grad_inputs = {1, 2}});

WEFT_OP(slice)
    .doc("x[start:end] along `axis` (not the batch axis)")
    .input("x")
    .output("y")
    .attr("axis", AttrType::Int, 1, "the axis")
    .required("start", AttrType::NonNegInt, "first index")
    .required("end", AttrType::PosInt, "one past the last index")
    .shape([](const ShapeContext& c) {
      int axis = norm_axis(c.attrs.at("axis").get<int64_t>(), c.in[0].size());
      int64_t s = c.attrs.at("start"), e = c.attrs.at("end");
      Dim d = c.in[0][axis];
      if (d.batch) throw AttrError("axis", "cannot slice the batch axis");
      if (s >= e || e > d.n)
        throw AttrError("end", "slice [" + std::to_string(s) + ":" + std::to_string(e) +
                                   ") does not fit an axis of " + d.str());
      Shape out = c.in[0];
      out[axis] = Dim(e - s);
      return std::vector<Shape>{out};
    })
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      int axis = norm_axis(info.attrs.at("axis").get<int64_t>(), info.in[0].size());
      copy_block(in_ptr<T>(a, 0), out_ptr<T>(a, 0), info.out[0], info.in[0], axis,
                 info.attrs.at("start").get<int64_t>(), true);
    }))
    .grad([](GradContext& g) {
      json at = {{"axis", g.attrs().at("axis")}, {"start", g.attrs().at("start")}};
      return std::vector<Val>{g.op("slice_backward", {g.grad_output(), g.input(0)}, at)};
    })
    .test({.cases = {{{3, 6}}}, .attrs = {{"axis", 1}, {"start", 1}, {"end", 4}}, .order = 2});

WEFT_OP(slice_backward)
    .doc("zeros shaped like `like` with dy placed at `start` along `axis` (a slice's gradient)")
    .input("dy")
    .input("like")
    .output("dx")
    .attr("axis", AttrType::Int, 1, "the axis")
    .required("start", AttrType::NonNegInt, "where dy goes")
    .shape([](const ShapeContext& c) { return std::vector<Shape>{c.in[1]}; })
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      int axis = norm_axis(info.attrs.at("axis").get<int64_t>(), info.out[0].size());
      T* y = out_ptr<T>(a, 0);
      std::memset(y, 0, sizeof(T) * size_t(a.out[0]->numel()));
      copy_block(in_ptr<T>(a, 0), y, info.in[0], info.out[0], axis,
                 info.attrs.at("start").get<int64_t>(), false);
    }))
    .grad([](GradContext& g) {
      int64_t start = g.attrs().at("start");
      int axis = norm_axis(g.attrs().at("axis").get<int64_t>(), g.input(0).shape().size());
      int64_t len = g.input(0).shape()[axis].n;
      return std::vector<Val>{g.op("slice", {g.grad_output()},
                                   {{"axis", axis}, {"start", start}, {"end", start + len}}),
                              Val{}};
    })
    .test({.cases = {{{3, 3}, {3, 6}}},
           .attrs = {{"axis", 1}, {"start", 2}},
           .order = 2,
           .no_grad_inputs = {1}});

}  // namespace weft::ops

namespace weft::ops {
namespace {

// pads: one number for all four sides, or [top, bottom, left, right].
std::array<int64_t, 4> pads_of(const json& a) {
  const json& p = a.at("pads");
  if (p.is_number_integer())
    return {p.get<int64_t>(), p.get<int64_t>(), p.get<int64_t>(), p.get<int64_t>()};
  return {p[0].get<int64_t>(), p[1].get<int64_t>(), p[2].get<int64_t>(), p[3].get<int64_t>()};
}

void check_pads(const json& a) {
  const json& p = a.at("pads");
  bool ok = p.is_number_integer() ? p.get<int64_t>() >= 0 : p.is_array() && p.size() == 4;
  if (ok && p.is_array())
    for (auto& v : p) ok = ok && v.is_number_integer() && v.get<int64_t>() >= 0;
  if (!ok)
    throw AttrError(
        "pads", "expected a non-negative integer or [top, bottom, left, right], got " + p.dump());
}

// Copies between the [h, w] planes of x and the [h + t + b, w + l + r] planes of y.
template <class T>
void pad_copy(const T* x, T* y, const Dims& xd, std::array<int64_t, 4> p, bool crop) {
  const int64_t nc = xd[0] * xd[1], h = xd[2], w = xd[3], H = h + p[0] + p[1], W = w + p[2] + p[3];
  for (int64_t q = 0; q < nc; ++q)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j) {
        const int64_t xi = (q * h + i) * w + j, yi = (q * H + i + p[0]) * W + j + p[2];
        if (crop)
          y[xi] = x[yi];
        else
          y[yi] = x[xi];
      }
}

}  // namespace

WEFT_OP(pad)
    .doc("pad the height and width of [N, C, H, W] with a constant")
    .input("x")
    .output("y")
    .required("pads", AttrType::Any, "a non-negative integer or [top, bottom, left, right]")
    .attr("value", AttrType::Float, 0.0, "the fill value")
    .shape([](const ShapeContext& c) {
      check_pads(c.attrs);
      const Shape& x = c.in[0];
      if (x.size() != 4)
        throw ShapeError("pad takes [batch, channels, height, width], got " + shape_str(x));
      auto p = pads_of(c.attrs);
      return std::vector<Shape>{{x[0], x[1], Dim(checked_add(checked_add(x[2].n, p[0]), p[1])),
                                 Dim(checked_add(checked_add(x[3].n, p[2]), p[3]))}};
    })
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      T* y = out_ptr<T>(a, 0);
      std::fill(y, y + a.out[0]->numel(), T(info.attrs.at("value").get<double>()));
      pad_copy(in_ptr<T>(a, 0), y, info.in[0], pads_of(info.attrs), false);
    }))
    .grad([](GradContext& g) {
      return std::vector<Val>{
          g.op("pad_backward", {g.grad_output(), g.input(0)}, {{"pads", g.attrs().at("pads")}})};
    })
    .test({.cases = {{{2, 3, 3, 4}}},
           .attrs = {{"pads", {1, 0, 2, 1}}, {"value", 0.5}},
           .order = 2});

WEFT_OP(pad_backward)
    .doc("the adjoint of pad: crops dy back to the shape of `like`")
    .input("dy")
    .input("like")
    .output("dx")
    .required("pads", AttrType::Any, "the pad's pads")
    .shape([](const ShapeContext& c) {
      check_pads(c.attrs);
      return std::vector<Shape>{c.in[1]};
    })
    .kernels(reference([](auto t, const KernelInfo& info, const KernelArgs& a) {
      using T = decltype(t);
      pad_copy(in_ptr<T>(a, 0), out_ptr<T>(a, 0), info.out[0], pads_of(info.attrs), true);
    }))
    .grad([](GradContext& g) {
      return std::vector<Val>{g.op("pad", {g.grad_output()}, {{"pads", g.attrs().at("pads")}}),
                              Val{}};
    })
    .test({.cases = {{{2, 3, 4, 7}, {2, 3, 3, 4}}},
           .attrs = {{"pads", {1, 0, 2, 1}}},
           .order = 2,
           .no_grad_inputs = {1}});

}  // namespace weft::ops

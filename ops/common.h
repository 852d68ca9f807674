// Small helpers shared by the op family files.
#pragma once

#include <cmath>

#include "runtime/autodiff.h"
#include "runtime/kernels.h"

namespace weft::ops {

inline std::vector<Shape> same_as_input0(const ShapeContext& c) { return {c.in.at(0)}; }

// Reference kernel of an elementwise function of one input, computed in double.
template <class F>
auto unary_ref(F f) {
  return [f](auto t, const KernelInfo&, const KernelArgs& a) {
    using T = decltype(t);
    const T* x = in_ptr<T>(a, 0);
    T* y = out_ptr<T>(a, 0);
    const int64_t n = a.out[0]->numel();
    for (int64_t i = 0; i < n; ++i) y[i] = T(f(double(x[i])));
  };
}

// Reference kernel of an elementwise function of two same-shaped inputs.
template <class F>
auto binary_same_ref(F f) {
  return [f](auto t, const KernelInfo&, const KernelArgs& a) {
    using T = decltype(t);
    const T* x = in_ptr<T>(a, 0);
    const T* z = in_ptr<T>(a, 1);
    T* y = out_ptr<T>(a, 0);
    const int64_t n = a.out[0]->numel();
    for (int64_t i = 0; i < n; ++i) y[i] = T(f(double(x[i]), double(z[i])));
  };
}

inline std::vector<Shape> same_shapes2(const ShapeContext& c) {
  if (c.in[0] != c.in[1])
    throw ShapeError("inputs must have the same shape, got " + shape_str(c.in[0]) + " and " +
                     shape_str(c.in[1]));
  return {c.in[0]};
}

inline int norm_axis(int64_t axis, size_t rank) {
  int64_t a = axis < 0 ? axis + int64_t(rank) : axis;
  if (a < 0 || a >= int64_t(rank))
    throw ShapeError("axis " + std::to_string(axis) + " is out of range for rank " +
                     std::to_string(rank));
  return int(a);
}

}  // namespace weft::ops

// Symbolic shapes. A graph is typed once, before the batch size is known: each dimension
// is either a constant n or n*B, B being the batch size. That covers what generative
// models do with the batch (B, B*784 after a flatten of everything, 2B after a concat)
// and keeps shape rules free of special cases. Plans bind B to a number.
#pragma once

#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace weft {

struct Dim {
  int64_t n = 0;       // the constant, or the multiple of B
  bool batch = false;  // true: the dimension is n*B
  Dim() = default;
  Dim(int64_t v) : n(v) {}  // NOLINT: a plain number is a constant dimension
  static Dim B(int64_t k = 1) { return Dim{k, true}; }
  bool operator==(const Dim&) const = default;
  int64_t bind(int64_t b) const { return batch ? n * b : n; }
  std::string str() const;

 private:
  Dim(int64_t v, bool b) : n(v), batch(b) {}
};

using Shape = std::vector<Dim>;

std::string shape_str(const Shape& s);
Dims bind_batch(const Shape& s, int64_t batch);
// The product of all dimensions; throws ShapeError if it would be B*B.
Dim shape_numel(const Shape& s);
Dim dim_mul(Dim a, Dim b);
// a / b, exactly; throws ShapeError if it does not divide.
Dim dim_div(Dim a, Dim b);
Dim dim_add(Dim a, Dim b);
// numpy broadcasting of two shapes; throws ShapeError with both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b);

}  // namespace weft

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
  int64_t bind(int64_t b) const;  // throws ShapeError when n*b overflows
  std::string str() const;

 private:
  Dim(int64_t v, bool b) : n(v), batch(b) {}
};

using Shape = std::vector<Dim>;

// Checked size arithmetic. Sizes come from files and the command line (a width or a batch
// of 2^62), so every product and sum of sizes goes through these: a result that does not
// fit in int64_t throws ShapeError instead of wrapping around into a small or negative
// size that would be allocated and indexed.
int64_t checked_mul(int64_t a, int64_t b);
int64_t checked_add(int64_t a, int64_t b);
int64_t checked_sub(int64_t a, int64_t b);
// The product of the dimensions, checked.
int64_t checked_numel(const Dims& d);

std::string shape_str(const Shape& s);
// Throws ShapeError when a dimension times the batch overflows.
Dims bind_batch(const Shape& s, int64_t batch);
// The product of all dimensions; throws ShapeError if it would be B*B or overflows.
Dim shape_numel(const Shape& s);
Dim dim_mul(Dim a, Dim b);
// a / b, exactly; throws ShapeError if it does not divide.
Dim dim_div(Dim a, Dim b);
Dim dim_add(Dim a, Dim b);
// numpy broadcasting of two shapes; throws ShapeError with both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b);

}  // namespace weft

#include "runtime/shape.h"

#include <algorithm>

namespace weft {

std::string Dim::str() const {
  if (!batch) return std::to_string(n);
  return n == 1 ? "B" : std::to_string(n) + "B";
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + s[i].str();
  return r + "]";
}

Dims bind_batch(const Shape& s, int64_t batch) {
  Dims d;
  d.reserve(s.size());
  for (auto& x : s) d.push_back(x.bind(batch));
  return d;
}

Dim dim_mul(Dim a, Dim b) {
  if (a.batch && b.batch) throw ShapeError("a dimension would be B*B");
  if (a.batch || b.batch) return Dim::B(a.n * b.n);
  return Dim(a.n * b.n);
}

Dim dim_div(Dim a, Dim b) {
  if (b.n == 0 || a.n % b.n != 0 || (b.batch && !a.batch))
    throw ShapeError(a.str() + " is not divisible by " + b.str());
  if (a.batch && !b.batch) return Dim::B(a.n / b.n);
  return Dim(a.n / b.n);
}

Dim dim_add(Dim a, Dim b) {
  if (a.batch != b.batch && a.n != 0 && b.n != 0)
    throw ShapeError("cannot add dimensions " + a.str() + " and " + b.str());
  if (a.n == 0) return b;
  if (b.n == 0) return a;
  return a.batch ? Dim::B(a.n + b.n) : Dim(a.n + b.n);
}

Dim shape_numel(const Shape& s) {
  Dim n(1);
  for (auto& d : s) n = dim_mul(n, d);
  return n;
}

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    Dim x = i < r - a.size() ? Dim(1) : a[i - (r - a.size())];
    Dim y = i < r - b.size() ? Dim(1) : b[i - (r - b.size())];
    if (x == y || y == Dim(1))
      out[i] = x;
    else if (x == Dim(1))
      out[i] = y;
    else
      throw ShapeError("shapes " + shape_str(a) + " and " + shape_str(b) + " do not broadcast");
  }
  return out;
}

}  // namespace weft

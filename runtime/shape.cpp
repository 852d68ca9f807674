#include "runtime/shape.h"

#include <fmt/format.h>

#include <algorithm>

namespace weft {

namespace {
[[noreturn]] void overflow(int64_t a, const char* op, int64_t b) {
  throw ShapeError(
      fmt::format("the size {} {} {} is too large (sizes must stay below 2^63)", a, op, b));
}
}  // namespace

int64_t checked_mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) overflow(a, "*", b);
  return r;
}

int64_t checked_add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) overflow(a, "+", b);
  return r;
}

int64_t checked_sub(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) overflow(a, "-", b);
  return r;
}

int64_t checked_numel(const Dims& d) {
  int64_t n = 1;
  for (int64_t x : d) n = checked_mul(n, x);
  return n;
}

int64_t Dim::bind(int64_t b) const { return batch ? checked_mul(n, b) : n; }

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
  if (a.batch || b.batch) return Dim::B(checked_mul(a.n, b.n));
  return Dim(checked_mul(a.n, b.n));
}

Dim dim_div(Dim a, Dim b) {
  if (b.n <= 0 || a.n % b.n != 0 || (b.batch && !a.batch))
    throw ShapeError(a.str() + " is not divisible by " + b.str());
  if (a.batch && !b.batch) return Dim::B(a.n / b.n);
  return Dim(a.n / b.n);
}

Dim dim_add(Dim a, Dim b) {
  if (a.batch != b.batch && a.n != 0 && b.n != 0)
    throw ShapeError("cannot add dimensions " + a.str() + " and " + b.str());
  if (a.n == 0) return b;
  if (b.n == 0) return a;
  return a.batch ? Dim::B(checked_add(a.n, b.n)) : Dim(checked_add(a.n, b.n));
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

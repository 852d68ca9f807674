#include "runtime/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace weft {

const char* dtype_name(DType t) { return t == DType::f32 ? "f32" : "f64"; }

int64_t numel(const Dims& d) {
  int64_t n = 1;
  for (auto x : d) n *= x;
  return n;
}

std::string dims_str(const Dims& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

Storage::Storage(size_t n, Device dev) : bytes(n), device(dev) {
  WEFT_ASSERT(dev.kind == 0, "host storage for a non-CPU device");
  size_t rounded = (n + 63) / 64 * 64;
  data = std::aligned_alloc(64, rounded ? rounded : 64);
  if (!data) throw std::bad_alloc();
  std::memset(data, 0, rounded ? rounded : 64);
}

Storage::Storage(void* d, size_t n, Device dev, std::function<void(void*)> rel)
    : data(d), bytes(n), device(dev), release(std::move(rel)), owned(false) {}

Storage::~Storage() {
  if (owned)
    std::free(data);
  else if (release)
    release(data);
}

Tensor::Tensor(DType dtype, Dims shape, Device device)
    : storage_(std::make_shared<Storage>(size_t(weft::numel(shape)) * dtype_size(dtype), device)),
      dtype_(dtype),
      shape_(std::move(shape)) {}

Tensor Tensor::view(Dims shape) const {
  WEFT_ASSERT(weft::numel(shape) == numel(), "view " + dims_str(shape) + " of " + dims_str(shape_));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::over(std::shared_ptr<Storage> s, DType dtype, Dims shape) {
  Tensor t;
  WEFT_ASSERT(size_t(weft::numel(shape)) * dtype_size(dtype) <= s->bytes, "storage too small");
  t.storage_ = std::move(s);
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  return t;
}

double Tensor::at(int64_t i) const {
  WEFT_ASSERT(i >= 0 && i < numel());
  WEFT_ASSERT(device().kind == 0, "reading device memory on the host (copy it first)");
  return dtype_ == DType::f32 ? double(data<float>()[i]) : data<double>()[i];
}

void Tensor::set(int64_t i, double v) {
  WEFT_ASSERT(i >= 0 && i < numel());
  WEFT_ASSERT(device().kind == 0, "writing device memory on the host (copy it first)");
  if (dtype_ == DType::f32)
    data<float>()[i] = float(v);
  else
    data<double>()[i] = v;
}

void Tensor::fill(double v) {
  WEFT_ASSERT(device().kind == 0, "filling device memory on the host");
  int64_t n = numel();
  if (dtype_ == DType::f32) {
    float* p = data<float>();
    for (int64_t i = 0; i < n; ++i) p[i] = float(v);
  } else {
    double* p = data<double>();
    for (int64_t i = 0; i < n; ++i) p[i] = v;
  }
}

void Tensor::copy_from(const Tensor& o) {
  WEFT_ASSERT(o.numel() == numel(), "copy " + dims_str(o.shape()) + " into " + dims_str(shape_));
  WEFT_ASSERT(device().kind == 0 && o.device().kind == 0, "a host copy of device memory");
  if (o.dtype() == dtype_) {
    std::memcpy(raw(), o.raw(), bytes());
    return;
  }
  int64_t n = numel();
  for (int64_t i = 0; i < n; ++i) set(i, o.at(i));
}

Tensor Tensor::to(DType dtype) const {
  Tensor t(dtype, shape_);
  t.copy_from(*this);
  return t;
}

}  // namespace weft

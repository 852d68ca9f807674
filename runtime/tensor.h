// Tensors: a dtype, a concrete shape, a device and 64-byte aligned storage. Storage is
// shared, so reshapes are views. Every tensor belongs to a device; the CPU is built in and
// plugins may register others (the device id is an index into the device table).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace weft {

enum class DType : uint8_t { f32, f64 };
const char* dtype_name(DType t);
inline size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 8; }

// A device is a kind name and an index; kind 0 is the CPU.
struct Device {
  int kind = 0;
  int index = 0;
  static Device cpu() { return {}; }
  bool operator==(const Device&) const = default;
};
// "cpu", or the name a plugin registered the device under.
std::string device_name(Device d);

using Dims = std::vector<int64_t>;
int64_t numel(const Dims& d);
std::string dims_str(const Dims& d);

struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device;
  explicit Storage(size_t bytes, Device device = Device::cpu());
  // Memory allocated elsewhere (a device's allocator), released by `release` (which may
  // be empty: memory the storage does not own).
  Storage(void* data, size_t bytes, Device device, std::function<void(void*)> release);
  ~Storage();
  std::function<void(void*)> release;
  bool owned = true;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, Dims shape, Device device = Device::cpu());  // zero-filled
  // A view of the same storage with another shape of the same element count.
  Tensor view(Dims shape) const;
  // A view of `shape` over existing storage (which must be large enough).
  static Tensor over(std::shared_ptr<Storage> s, DType dtype, Dims shape);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Dims& shape() const { return shape_; }
  int64_t numel() const { return weft::numel(shape_); }
  size_t bytes() const { return size_t(numel()) * dtype_size(dtype_); }
  Device device() const { return storage_ ? storage_->device : Device::cpu(); }
  void* raw() const { return storage_ ? storage_->data : nullptr; }
  template <class T>
  T* data() const {
    WEFT_ASSERT(sizeof(T) == dtype_size(dtype_), "tensor dtype mismatch");
    return static_cast<T*>(raw());
  }
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  double at(int64_t i) const;  // element i as double (tests, logging)
  void set(int64_t i, double v);
  void fill(double v);
  void copy_from(const Tensor& other);  // same numel, converts dtype
  Tensor to(DType dtype) const;         // a converted copy

 private:
  std::shared_ptr<Storage> storage_;
  DType dtype_ = DType::f32;
  Dims shape_;
};

}  // namespace weft

#include "runtime/device.h"

#include <fmt/format.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>

#include "runtime/plugin.h"

namespace weft {

namespace {

std::atomic<int64_t> g_copies_in{0}, g_copies_out{0}, g_bytes_in{0}, g_bytes_out{0}, g_syncs{0};

const DeviceDef& def_of(Device d) {
  const DeviceDef* def = find_device(d.kind);
  WEFT_ASSERT(def, fmt::format("no device of kind {} is registered", d.kind));
  return *def;
}

// Throws Error when a device function returned non-zero.
void check(int rc, const DeviceDef& def, const char* what) {
  if (rc != 0) throw Error(fmt::format("device {}: {} failed (error {})", def.name, what, rc));
}

}  // namespace

std::string device_name(Device d) { return d.kind == 0 ? "cpu" : def_of(d).name; }

Device device_named(const std::string& name) {
  if (name == "cpu") return Device::cpu();
  std::vector<std::string> known{"cpu"};
  for (const DeviceDef& d : devices()) {
    if (d.name != name) {
      known.push_back(d.name);
      continue;
    }
    char why[512] = {0};
    if (d.fns.available && d.fns.available(d.fns.context, why, sizeof why) != 0)
      throw Error("", "",
                  fmt::format("device {} (plugin {}) cannot be used: {}", name, d.plugin,
                              why[0] ? why : "its plugin gave no reason"));
    return Device{d.kind, 0};
  }
  throw Error("", "",
              fmt::format("no device named \"{}\" (there are: {}); a plugin that registers it "
                          "must be loaded with --plugin",
                          name, fmt::join(known, ", ")));
}

void* device_context(Device d) { return d.kind == 0 ? nullptr : def_of(d).fns.context; }

void* device_stream(Device d) {
  if (d.kind == 0) return nullptr;
  static std::mutex m;
  static std::map<int, void*> streams;  // kept for the life of the process
  std::lock_guard<std::mutex> lock(m);
  void*& s = streams[d.kind];
  if (!s) {
    const DeviceDef& def = def_of(d);
    s = def.fns.stream_create ? def.fns.stream_create(def.fns.context) : nullptr;
    if (!s) throw Error(fmt::format("device {}: could not make a stream", def.name));
  }
  return s;
}

Tensor zeros_on(Device d, DType dtype, Dims shape) {
  if (d.kind == 0) return Tensor(dtype, std::move(shape));
  const DeviceDef& def = def_of(d);
  const size_t bytes = size_t(numel(shape)) * dtype_size(dtype);
  void* p = def.fns.alloc(def.fns.context, bytes ? bytes : 1);
  if (!p) throw Error(fmt::format("device {} could not allocate {} bytes", def.name, bytes));
  void* ctx = def.fns.context;
  auto free_fn = def.fns.free;
  Tensor t = Tensor::over(
      std::make_shared<Storage>(p, bytes, d, [ctx, free_fn](void* q) { free_fn(ctx, q); }), dtype,
      std::move(shape));
  zero_within(t);
  return t;
}

void upload(const Tensor& src, const Tensor& dst) {
  WEFT_ASSERT(src.device().kind == 0 && src.bytes() == dst.bytes() && src.dtype() == dst.dtype());
  const Device d = dst.device();
  if (d.kind == 0) {
    std::memcpy(dst.raw(), src.raw(), src.bytes());
    return;
  }
  const DeviceDef& def = def_of(d);
  check(
      def.fns.copy_from_host(def.fns.context, device_stream(d), dst.raw(), src.raw(), src.bytes()),
      def, "a copy from the host");
  g_copies_in++;
  g_bytes_in += int64_t(src.bytes());
}

void download_async(const Tensor& src, const Tensor& dst) {
  WEFT_ASSERT(dst.device().kind == 0 && src.bytes() == dst.bytes() && src.dtype() == dst.dtype());
  const Device d = src.device();
  if (d.kind == 0) {
    std::memcpy(dst.raw(), src.raw(), src.bytes());
    return;
  }
  const DeviceDef& def = def_of(d);
  check(def.fns.copy_to_host(def.fns.context, device_stream(d), dst.raw(), src.raw(), src.bytes()),
        def, "a copy to the host");
  g_copies_out++;
  g_bytes_out += int64_t(src.bytes());
}

void sync_device(Device d) {
  if (d.kind == 0) return;
  const DeviceDef& def = def_of(d);
  check(def.fns.sync(def.fns.context, device_stream(d)), def, "waiting for its stream");
  g_syncs++;
}

Tensor on_host(const Tensor& t) {
  if (!t.defined() || t.device().kind == 0) return t;
  Tensor h(t.dtype(), t.shape());
  download_async(t, h);
  sync_device(t.device());
  return h;
}

void copy_within(const Tensor& src, const Tensor& dst) {
  WEFT_ASSERT(src.device() == dst.device() && src.bytes() == dst.bytes());
  const Device d = dst.device();
  if (d.kind == 0) {
    std::memmove(dst.raw(), src.raw(), src.bytes());
    return;
  }
  const DeviceDef& def = def_of(d);
  check(def.fns.copy(def.fns.context, device_stream(d), dst.raw(), src.raw(), src.bytes()), def,
        "a copy on the device");
}

void zero_within(const Tensor& t) {
  const Device d = t.device();
  if (d.kind == 0) {
    std::memset(t.raw(), 0, t.bytes());
    return;
  }
  const DeviceDef& def = def_of(d);
  check(def.fns.zero(def.fns.context, device_stream(d), t.raw(), t.bytes()), def, "zeroing");
}

Traffic device_traffic() {
  return {g_copies_in.load(), g_copies_out.load(), g_bytes_in.load(), g_bytes_out.load(),
          g_syncs.load()};
}

}  // namespace weft

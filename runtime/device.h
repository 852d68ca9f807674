// Devices at run time. The CPU is built in; plugins register others (runtime/plugin.h).
// A plugin device has one stream, made when first needed, on which every kernel, copy and
// zeroing is queued in order; the host waits (sync) only where it reads device memory.
// Copies between the host and a device are counted, so that tests and `weft bench` can
// say what crossed in a step.
#pragma once

#include <string>

#include "runtime/tensor.h"

namespace weft {

// "cpu", or a device a loaded plugin registered. Throws Error naming the devices there are,
// or the device's own reason it cannot be used (no driver, no GPU).
Device device_named(const std::string& name);

void* device_stream(Device d);   // null on the CPU
void* device_context(Device d);  // null on the CPU

// Zeroed memory on `d`.
Tensor zeros_on(Device d, DType dtype, Dims shape);
// Host memory into `dst` (on any device); `host_src` may be reused as soon as this returns.
void upload(const Tensor& host_src, const Tensor& dst);
// `src` into host memory; on a plugin device complete only after sync_device.
void download_async(const Tensor& src, const Tensor& host_dst);
void sync_device(Device d);
// `t` itself when it is on the host, else a host copy (waited for).
Tensor on_host(const Tensor& t);
// Copies and zeroing inside one device (the host's memcpy and memset on the CPU).
void copy_within(const Tensor& src, const Tensor& dst);
void zero_within(const Tensor& t);

struct Traffic {
  int64_t copies_in = 0, copies_out = 0, bytes_in = 0, bytes_out = 0, syncs = 0;
};
// Everything that crossed between the host and plugin devices since the process started.
Traffic device_traffic();

}  // namespace weft

// Files weft writes and reads: safetensors checkpoints, .npy arrays, PNG image grids.
// Every write is atomic: a temporary file in the same folder, fsync, then rename, so a
// crash never leaves a half-written file under the real name.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace weft {

void write_atomic(const std::string& path, const std::string& bytes);

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
// safetensors: a little-endian u64 header length, a JSON header of dtype/shape/offsets
// and "__metadata__" (strings), then the raw data. Readable by Python's safetensors.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata);
struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};
// Strict: the header length lies within the file; the header is a JSON object with no
// repeated keys; each tensor has a known dtype (weft reads F32 and F64), a shape of
// non-negative integers whose byte size fits in 64 bits, and data_offsets [begin, end]
// holding exactly that size, begin aligned to the element size; sorted by offset the
// tensors tile the data region with no gap, overlap or trailing byte; metadata values
// are strings. Throws Error naming the file, the tensor and the byte offset. Nothing is
// allocated beyond what the file holds.
SafetensorsFile load_safetensors(const std::string& path);

// .npy version 1.0; f32/f64 tensors, or bytes as |u1.
void save_npy(const std::string& path, const Tensor& t);
void save_npy_u8(const std::string& path, const std::vector<uint8_t>& data, const Dims& shape);
// Reads a .npy (version 1 or 2, C order) of little-endian f4, f8 or u1; `shape` gets its
// shape and the values come back as doubles. Strict as load_safetensors: the header parses,
// the data is exactly what it describes. Throws Error naming the file and what is wrong.
std::vector<double> load_npy(const std::string& path, Dims& shape);

// A grid of grayscale images: `images` is [n, h*w] (or [n, 1, h, w]) valued in
// [low, high], written as 8-bit PNG with a 2-pixel border.
void save_png_grid(const std::string& path, const Tensor& images, int64_t h, int64_t w, double low,
                   double high);

// A scatter plot of n 2-D points `xy` (blue) over circles of radius `radius` around
// `centres` (red), on [-extent, extent] in both axes, as an RGB PNG of 512 x 512 pixels.
void save_scatter_png(const std::string& path, const float* xy, int64_t n,
                      const std::vector<std::pair<double, double>>& centres, double radius,
                      double extent);

// A plot of every loss column of a metrics CSV against the step, as SVG: the raw values
// faint, an exponential moving average over them bold.
void save_loss_plot(const std::string& csv_path, const std::string& svg_path);

}  // namespace weft

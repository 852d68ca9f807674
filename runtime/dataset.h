// Fashion-MNIST from Debian's dataset-fashion-mnist package: IDX files, gzip-compressed.
// A Batcher serves shuffled batches; the order is a function of (seed, step) alone, so a
// resumed run reads the batches an uninterrupted run would have read.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace weft {

struct Dataset {
  std::string dir, split;
  int64_t n = 0, rows = 0, cols = 0;
  std::vector<uint8_t> images;  // n * rows * cols (an image dataset)
  std::vector<uint8_t> labels;  // n: the class, or the mode a point was drawn from
  // A 2-D mixture: n points (x, y), and the modes they were drawn from.
  std::vector<float> points;
  std::vector<std::pair<double, double>> modes;
  double mode_std = 0;
};

// The synthetic 2-D mixtures, for counting mode collapse: "ring8" (8 Gaussians of std 0.02
// evenly on a circle of radius 2) and "grid25" (25 Gaussians of std 0.05 at -4, -2, 0, 2, 4
// on each axis), each mode equally likely. A split is a fixed draw from the counter-based
// generator: 100,000 training points, 2,500 test points.
bool is_mixture(const std::string& dataset);
Dataset make_mixture(const std::string& dataset, const std::string& split);

// How well 2-D samples cover a mixture's modes, as VEEGAN and PacGAN count it: a sample is
// of high quality when it lies within 3 standard deviations of its nearest mode's centre;
// a mode is covered when at least one high-quality sample is nearest to it.
struct ModeCoverage {
  int modes = 0, covered = 0;
  double high_quality = 0;        // the fraction of samples of high quality
  std::vector<int64_t> per_mode;  // high-quality samples nearest each mode
};
ModeCoverage count_modes(const Dataset& mixture, const float* xy, int64_t n);

// $WEFT_DATA, else /usr/share/datasets/fashion-mnist.
std::string default_data_dir();
// Reads <dir>/<split>-images-idx3-ubyte.gz and the labels ("train" or "t10k" files) of
// split "train" or "test": 28x28 images, as many labels, each a class 0-9. Throws Error
// naming the file and, when the folder is missing, the package to install.
Dataset load_fashion_mnist(const std::string& dir, const std::string& split);
// Reads one IDX file of unsigned bytes, gzip (every member inflated to its end, so its
// CRC-32 and length are checked) or plain; `dims` gets its shape. The data must be
// exactly what the header describes, nothing missing and nothing after it. Throws Error
// naming the file and the byte offset (in the decompressed data for gzip).
std::vector<uint8_t> read_idx(const std::string& path, int expected_rank,
                              std::vector<int64_t>& dims);

// Examples `idx` of `d`: pixels scaled to [low, high] into `out` ([n, ...]); labels as
// numbers or one-hot.
void fill_images(const Dataset& d, const std::vector<int64_t>& idx, Tensor& out, double low,
                 double high);
void fill_labels(const Dataset& d, const std::vector<int64_t>& idx, Tensor& out, bool onehot);
void fill_points(const Dataset& d, const std::vector<int64_t>& idx, Tensor& out);

class Batcher {
 public:
  Batcher(const Dataset& d, int64_t batch, uint64_t seed);
  // The examples of training step `step` (drop-last batches, reshuffled every epoch).
  const std::vector<int64_t>& indices(int64_t step);

 private:
  const Dataset& d_;
  int64_t batch_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  std::vector<int64_t> perm_, idx_;
};

}  // namespace weft

// Fashion-MNIST from Debian's dataset-fashion-mnist package: IDX files, gzip-compressed.
// A Batcher serves shuffled batches; the order is a function of (seed, step) alone, so a
// resumed run reads the batches an uninterrupted run would have read.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace weft {

struct Dataset {
  std::string dir, split;
  int64_t n = 0, rows = 0, cols = 0;
  std::vector<uint8_t> images;  // n * rows * cols
  std::vector<uint8_t> labels;  // n
};

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

#include "runtime/dataset.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cstdlib>
#include <numeric>

#include "runtime/rng.h"

namespace weft {

std::string default_data_dir() {
  const char* e = std::getenv("WEFT_DATA");
  return e && *e ? e : "/usr/share/datasets/fashion-mnist";
}

std::vector<uint8_t> read_idx(const std::string& path, int expected_rank,
                              std::vector<int64_t>& dims) {
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files too
  if (!f) throw Error(path, "", "cannot open the file");
  auto fail = [&](const std::string& what) {
    gzclose(f);
    throw Error(path, "", what);
  };
  unsigned char head[4];
  if (gzread(f, head, 4) != 4) fail("too short for an IDX file");
  if (head[0] != 0 || head[1] != 0 || head[2] != 0x08)
    fail("not an IDX file of unsigned bytes (bad magic number)");
  if (head[3] != expected_rank)
    fail(fmt::format("expected {} dimensions, the file has {}", expected_rank, head[3]));
  dims.clear();
  int64_t total = 1;
  for (int i = 0; i < expected_rank; ++i) {
    unsigned char b[4];
    if (gzread(f, b, 4) != 4) fail("truncated header");
    int64_t d = (int64_t(b[0]) << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
    if (d <= 0 || d > (1 << 24)) fail(fmt::format("implausible dimension {}", d));
    dims.push_back(d);
    total *= d;
  }
  if (total > (int64_t(1) << 31)) fail("too large");
  std::vector<uint8_t> data(static_cast<size_t>(total));
  int64_t got = 0;
  while (got < total) {
    int r = gzread(f, data.data() + got, unsigned(std::min<int64_t>(total - got, 1 << 30)));
    if (r <= 0) fail(fmt::format("truncated: expected {} bytes of data, got {}", total, got));
    got += r;
  }
  gzclose(f);
  return data;
}

Dataset load_fashion_mnist(const std::string& dir, const std::string& split) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0)
    throw Error(dir, "",
                "no Fashion-MNIST here: install it with 'apt-get install dataset-fashion-mnist' or "
                "pass --data DIR");
  std::string prefix = split == "test" ? "t10k" : "train";
  auto find = [&](const std::string& stem) {
    std::string gz = dir + "/" + stem + ".gz";
    if (stat(gz.c_str(), &st) == 0) return gz;
    std::string plain = dir + "/" + stem;
    if (stat(plain.c_str(), &st) == 0) return plain;
    throw Error(gz, "", "missing Fashion-MNIST file (from the package dataset-fashion-mnist)");
  };
  Dataset d;
  d.dir = dir;
  d.split = split;
  std::vector<int64_t> idims, ldims;
  std::string ipath = find(prefix + "-images-idx3-ubyte"),
              lpath = find(prefix + "-labels-idx1-ubyte");
  d.images = read_idx(ipath, 3, idims);
  d.labels = read_idx(lpath, 1, ldims);
  if (ldims[0] != idims[0])
    throw Error(lpath, "", fmt::format("{} labels for {} images", ldims[0], idims[0]));
  if (idims[1] != 28 || idims[2] != 28)
    throw Error(ipath, "", fmt::format("expected 28x28 images, got {}x{}", idims[1], idims[2]));
  for (auto l : d.labels)
    if (l > 9) throw Error(lpath, "", fmt::format("label {} is not a class 0-9", int(l)));
  d.n = idims[0];
  d.rows = idims[1];
  d.cols = idims[2];
  return d;
}

Batcher::Batcher(const Dataset& d, int64_t batch, uint64_t seed)
    : d_(d), batch_(batch), seed_(seed) {
  if (batch > d.n)
    throw Error(fmt::format("batch {} is larger than the dataset ({} examples)", batch, d.n));
  idx_.resize(size_t(batch));
}

const std::vector<int64_t>& Batcher::indices(int64_t step) {
  const int64_t per_epoch = d_.n / batch_;
  const int64_t epoch = step / per_epoch, k = step % per_epoch;
  if (epoch != epoch_) {  // Fisher-Yates with a counter-based stream for this epoch
    perm_.resize(size_t(d_.n));
    std::iota(perm_.begin(), perm_.end(), 0);
    const uint64_t key = stream_key(seed_, uint64_t(epoch), 0x5eed);
    for (int64_t i = d_.n - 1; i > 0; --i) {
      int64_t j = int64_t(uniform01(key, uint64_t(i)) * double(i + 1));
      std::swap(perm_[size_t(i)], perm_[size_t(j)]);
    }
    epoch_ = epoch;
  }
  for (int64_t i = 0; i < batch_; ++i) idx_[size_t(i)] = perm_[size_t(k * batch_ + i)];
  return idx_;
}

void fill_images(const Dataset& d_, const std::vector<int64_t>& idx, Tensor& out, double low,
                 double high) {
  const int64_t per = d_.rows * d_.cols;
  WEFT_ASSERT(out.numel() == int64_t(idx.size()) * per);
  const double scale = (high - low) / 255.0;
  for (size_t i = 0; i < idx.size(); ++i) {
    const uint8_t* src = d_.images.data() + idx[i] * per;
    if (out.dtype() == DType::f32) {
      float* dst = out.data<float>() + int64_t(i) * per;
      for (int64_t k = 0; k < per; ++k) dst[k] = float(low + scale * src[k]);
    } else {
      double* dst = out.data<double>() + int64_t(i) * per;
      for (int64_t k = 0; k < per; ++k) dst[k] = low + scale * src[k];
    }
  }
}

void fill_labels(const Dataset& d_, const std::vector<int64_t>& idx, Tensor& out, bool onehot) {
  const int64_t per = onehot ? 10 : 1;
  WEFT_ASSERT(out.numel() == int64_t(idx.size()) * per);
  out.fill(0);
  for (size_t i = 0; i < idx.size(); ++i) {
    int l = d_.labels[size_t(idx[i])];
    if (onehot)
      out.set(int64_t(i) * 10 + l, 1);
    else
      out.set(int64_t(i), l);
  }
}

}  // namespace weft

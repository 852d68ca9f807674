#include "runtime/dataset.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <sstream>

#include "runtime/rng.h"

namespace weft {

std::string default_data_dir() {
  const char* e = std::getenv("WEFT_DATA");
  return e && *e ? e : "/usr/share/datasets/fashion-mnist";
}

namespace {

// The bytes of a file, decompressed when it is gzip (one member or several, as gzip
// allows), read in pieces so that nothing is allocated on a header's word alone. Every
// member is inflated to its end, so zlib checks its CRC-32 and length trailer.
class ByteSource {
 public:
  explicit ByteSource(const std::string& path) : path_(path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error(path, "", "cannot open the file");
    std::stringstream ss;
    ss << f.rdbuf();
    if (f.bad()) throw Error(path, "", "cannot read the file");
    file_ = ss.str();
    gzip_ = file_.size() >= 2 && uint8_t(file_[0]) == 0x1f && uint8_t(file_[1]) == 0x8b;
    if (gzip_) {
      if (inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK)  // 16: gzip wrapper only
        throw Error(path, "", "zlib cannot start inflating");
      z_.next_in = reinterpret_cast<Bytef*>(file_.data());
      z_.avail_in = 0;
    }
  }
  ~ByteSource() {
    if (gzip_) inflateEnd(&z_);
  }
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  bool gzip() const { return gzip_; }
  size_t file_size() const { return file_.size(); }
  // Bytes delivered so far (decompressed, for gzip).
  uint64_t position() const { return pos_; }

  // Up to n bytes into dst; fewer only at the end of the data.
  size_t read(uint8_t* dst, size_t n) {
    size_t got = gzip_ ? inflate_into(dst, n) : copy_into(dst, n);
    pos_ += got;
    return got;
  }

 private:
  size_t copy_into(uint8_t* dst, size_t n) {
    size_t k = std::min<size_t>(n, file_.size() - size_t(pos_));
    if (k) std::memcpy(dst, file_.data() + pos_, k);
    return k;
  }

  size_t inflate_into(uint8_t* dst, size_t n) {
    size_t got = 0;
    while (got < n && !done_) {
      const size_t in_at = size_t(z_.next_in - reinterpret_cast<Bytef*>(file_.data()));
      z_.avail_in = uInt(std::min<size_t>(file_.size() - in_at, 1u << 30));
      z_.next_out = dst + got;
      z_.avail_out = uInt(std::min<size_t>(n - got, 1u << 30));
      const uInt before = z_.avail_out;
      const int rc = ::inflate(&z_, Z_NO_FLUSH);
      got += before - z_.avail_out;
      const size_t at = size_t(z_.next_in - reinterpret_cast<Bytef*>(file_.data()));
      if (rc == Z_STREAM_END) {
        // Another member may follow; anything else after a member is not gzip data.
        if (at == file_.size()) {
          done_ = true;
        } else if (file_.size() - at >= 2 && uint8_t(file_[at]) == 0x1f &&
                   uint8_t(file_[at + 1]) == 0x8b) {
          inflateReset(&z_);
        } else {
          throw Error(path_, fmt::format("compressed byte {}", at),
                      fmt::format("corrupt gzip file: {} bytes after the end of the gzip stream "
                                  "are not gzip data",
                                  file_.size() - at));
        }
      } else if (rc == Z_BUF_ERROR && at == file_.size()) {
        throw Error(path_, fmt::format("compressed byte {}", at),
                    "truncated gzip file: the compressed stream ends before its trailer");
      } else if (rc != Z_OK) {  // Z_BUF_ERROR with input and room left would make no progress
        throw Error(
            path_, fmt::format("compressed byte {}", at),
            fmt::format("corrupt gzip file: {} (zlib)", z_.msg ? z_.msg : "inflate failed"));
      }
    }
    return got;
  }

  std::string path_, file_;
  bool gzip_ = false, done_ = false;
  z_stream z_{};
  uint64_t pos_ = 0;
};

const char* idx_type_name(uint8_t t) {
  switch (t) {
    case 0x08:
      return "unsigned bytes";
    case 0x09:
      return "signed bytes";
    case 0x0B:
      return "16-bit integers";
    case 0x0C:
      return "32-bit integers";
    case 0x0D:
      return "32-bit floats";
    case 0x0E:
      return "64-bit floats";
    default:
      return nullptr;
  }
}

}  // namespace

std::vector<uint8_t> read_idx(const std::string& path, int expected_rank,
                              std::vector<int64_t>& dims) {
  ByteSource src(path);
  const std::string unit = src.gzip() ? "decompressed byte" : "byte";
  auto fail = [&](uint64_t at, const std::string& what) -> void {
    throw Error(path, fmt::format("{} {}", unit, at), what);
  };
  uint8_t head[4];
  if (size_t got = src.read(head, 4); got != 4)
    fail(got, fmt::format("too short for an IDX file ({} bytes)", got));
  if (head[0] != 0 || head[1] != 0)
    fail(0, "not an IDX file (bad magic number: it does not begin with two zero bytes)");
  if (head[2] != 0x08) {
    const char* type = idx_type_name(head[2]);
    fail(2,
         type ? fmt::format("the IDX file holds {}; expected unsigned bytes (type 0x08)", type)
              : fmt::format("not an IDX file (bad magic number: unknown type 0x{:02x})", head[2]));
  }
  if (head[3] != expected_rank)
    fail(3, fmt::format("expected {} dimensions, the file has {}", expected_rank, int(head[3])));
  dims.clear();
  uint64_t total = 1;
  for (int i = 0; i < expected_rank; ++i) {
    uint8_t b[4];
    const uint64_t at = src.position();
    if (src.read(b, 4) != 4) fail(at, "truncated: the file ends inside its header");
    const uint32_t d =
        (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | b[3];
    if (d == 0) fail(at, fmt::format("dimension {} is 0", i));
    if (__builtin_mul_overflow(total, uint64_t(d), &total))
      fail(at, "the dimensions' product does not fit in 64 bits");
    dims.push_back(int64_t(d));
  }
  // Datasets are read into memory whole; a header that claims more than this is refused
  // before a byte is read, so a small compressed file cannot make weft inflate gigabytes.
  constexpr uint64_t kMaxData = uint64_t(4) << 30;
  if (total > kMaxData)
    fail(src.position(), fmt::format("the header describes {} bytes of data; weft reads at most "
                                     "4 GiB from one IDX file",
                                     total));
  const uint64_t start = src.position();
  // A plain file's size is known: a header that promises more is refused before
  // anything is allocated. A gzip file's data is counted as it inflates.
  auto trailing = [&](uint64_t extra, bool at_least = false) {
    fail(start + total, fmt::format("{}{} more bytes follow the {} bytes of data the header "
                                    "describes",
                                    at_least ? "at least " : "", extra, total));
  };
  if (!src.gzip()) {
    const uint64_t have = src.file_size() - start;
    if (total > have)
      fail(start + have,
           fmt::format("truncated: the header promises {} bytes of data, the file ends after {}",
                       total, have));
    if (total < have) trailing(have - total);
  }
  std::vector<uint8_t> data;
  while (data.size() < total) {
    // Grown as the data arrives: memory follows the data present, not the header's claim.
    const size_t have = data.size(),
                 want = size_t(std::min<uint64_t>(total - have, std::max<size_t>(have, 1 << 16)));
    data.resize(have + want);
    const size_t got = src.read(data.data() + have, want);
    if (got < want)
      fail(start + have + got,
           fmt::format("truncated: the header promises {} bytes of data, the file ends after {}",
                       total, have + got));
  }
  // Reading on to the end makes zlib check the trailers; nothing may follow the data.
  uint64_t extra = 0;
  uint8_t scratch[4096];
  while (size_t got = src.read(scratch, sizeof scratch)) {
    extra += got;
    if (extra >= (1u << 20)) trailing(extra, true);  // enough to refuse; the rest may be a bomb
  }
  if (extra) trailing(extra);
  return data;
}

Dataset load_fashion_mnist(const std::string& dir, const std::string& split) {
  if (split != "train" && split != "test")
    throw Error(fmt::format("unknown split '{}': Fashion-MNIST has 'train' and 'test'", split));
  struct stat st;
  if (stat(dir.c_str(), &st) != 0)
    throw Error(dir, "",
                "no Fashion-MNIST here: install it with 'apt-get install dataset-fashion-mnist' or "
                "pass --data DIR");
  std::string prefix = split == "test" ? "t10k" : "train";
  // The names of Fashion-MNIST's and MNIST's distributions (the same), gzipped or not, and
  // the dotted names some MNIST copies use (train-images.idx3-ubyte).
  auto find = [&](const std::string& kind, const std::string& idx) {
    const std::string stem = prefix + "-" + kind + "-" + idx + "-ubyte";
    for (const std::string& name : {stem + ".gz", stem, prefix + "-" + kind + "." + idx + "-ubyte",
                                    prefix + "-" + kind + "." + idx + "-ubyte.gz"}) {
      const std::string path = dir + "/" + name;
      if (stat(path.c_str(), &st) == 0) return path;
    }
    throw Error(dir + "/" + stem + ".gz", "",
                fmt::format("missing IDX file (also looked for {0} and {1}): Fashion-MNIST from "
                            "the package dataset-fashion-mnist, or MNIST's files",
                            stem, prefix + "-" + kind + "." + idx + "-ubyte"));
  };
  Dataset d;
  d.dir = dir;
  d.split = split;
  std::vector<int64_t> idims, ldims;
  std::string ipath = find("images", "idx3"), lpath = find("labels", "idx1");
  d.images = read_idx(ipath, 3, idims);
  if (idims[1] != 28 || idims[2] != 28)
    throw Error(ipath, "",
                fmt::format("expected 28x28 images, the header says {}x{}", idims[1], idims[2]));
  d.labels = read_idx(lpath, 1, ldims);
  if (ldims[0] != idims[0])
    throw Error(lpath, "",
                fmt::format("{} labels for the {} images of {}", ldims[0], idims[0], ipath));
  for (size_t i = 0; i < d.labels.size(); ++i)
    if (d.labels[i] > 9)
      throw Error(
          lpath, fmt::format("{} {}", lpath.ends_with(".gz") ? "decompressed byte" : "byte", 8 + i),
          fmt::format("label {} of example {} is not a class 0-9", int(d.labels[i]), i));
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

namespace {
// dst[k] = low + scale * src[k] for a batch of pixels through a table of the 256 values,
// each computed as the formula would: the same numbers, without a conversion and a multiply
// per pixel (the data path was a tenth of a small model's step).
template <class T>
void scale_pixels(const Dataset& d, const std::vector<int64_t>& idx, T* out, double low,
                  double scale) {
  T table[256];
  for (int v = 0; v < 256; ++v) table[v] = T(low + scale * v);
  const int64_t per = d.rows * d.cols, n = int64_t(idx.size());
  // The images lie anywhere in the dataset, so the walk mostly waits for memory: two
  // threads keep twice as many loads in flight.
#pragma omp parallel for schedule(static) if (n * per >= 32768)
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* src = d.images.data() + idx[size_t(i)] * per;
    T* dst = out + i * per;
    for (int64_t k = 0; k < per; ++k) dst[k] = table[src[k]];
  }
}
}  // namespace

void fill_images(const Dataset& d_, const std::vector<int64_t>& idx, Tensor& out, double low,
                 double high) {
  WEFT_ASSERT(out.numel() == int64_t(idx.size()) * d_.rows * d_.cols);
  const double scale = (high - low) / 255.0;
  if (out.dtype() == DType::f32)
    scale_pixels(d_, idx, out.data<float>(), low, scale);
  else
    scale_pixels(d_, idx, out.data<double>(), low, scale);
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

void fill_points(const Dataset& d, const std::vector<int64_t>& idx, Tensor& out) {
  WEFT_ASSERT(out.numel() == int64_t(idx.size()) * 2);
  for (size_t i = 0; i < idx.size(); ++i)
    for (int64_t k = 0; k < 2; ++k) out.set(int64_t(i) * 2 + k, d.points[size_t(idx[i] * 2 + k)]);
}

bool is_mixture(const std::string& dataset) { return dataset == "ring8" || dataset == "grid25"; }

Dataset make_mixture(const std::string& dataset, const std::string& split) {
  WEFT_ASSERT(is_mixture(dataset), "not a mixture: " + dataset);
  Dataset d;
  d.dir = dataset;
  d.split = split;
  if (dataset == "ring8") {
    for (int k = 0; k < 8; ++k)
      d.modes.push_back({2 * std::cos(2 * M_PI * k / 8), 2 * std::sin(2 * M_PI * k / 8)});
    d.mode_std = 0.02;
  } else {
    for (int i = 0; i < 5; ++i)
      for (int j = 0; j < 5; ++j) d.modes.push_back({-4.0 + 2 * i, -4.0 + 2 * j});
    d.mode_std = 0.05;
  }
  d.n = split == "train" ? 100000 : 2500;
  // A stream per (dataset, split): the same points on every machine and every run.
  const uint64_t key = stream_key(0x6d697874, dataset == "ring8" ? 8 : 25, split == "train");
  const auto m = uint64_t(d.modes.size());
  for (int64_t i = 0; i < d.n; ++i) {
    const auto mode =
        std::min<uint64_t>(m - 1, uint64_t(uniform01(key, 3 * uint64_t(i)) * double(m)));
    d.labels.push_back(uint8_t(mode));
    d.points.push_back(
        float(d.modes[mode].first + d.mode_std * normal01(key, 3 * uint64_t(i) + 1)));
    d.points.push_back(
        float(d.modes[mode].second + d.mode_std * normal01(key, 3 * uint64_t(i) + 2)));
  }
  return d;
}

ModeCoverage count_modes(const Dataset& mixture, const float* xy, int64_t n) {
  ModeCoverage c;
  c.modes = int(mixture.modes.size());
  c.per_mode.assign(mixture.modes.size(), 0);
  int64_t good = 0;
  for (int64_t i = 0; i < n; ++i) {
    double best = 1e300;
    size_t at = 0;
    for (size_t k = 0; k < mixture.modes.size(); ++k) {
      const double dx = xy[2 * i] - mixture.modes[k].first,
                   dy = xy[2 * i + 1] - mixture.modes[k].second;
      if (dx * dx + dy * dy < best) best = dx * dx + dy * dy, at = k;
    }
    if (std::sqrt(best) <= 3 * mixture.mode_std) {
      ++good;
      ++c.per_mode[at];
    }
  }
  for (int64_t v : c.per_mode) c.covered += v > 0;
  c.high_quality = n > 0 ? double(good) / double(n) : 0;
  return c;
}

}  // namespace weft

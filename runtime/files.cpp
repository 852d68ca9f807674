#include "runtime/files.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <png.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <unordered_set>
#include <vector>

namespace weft {

using json = nlohmann::json;

void write_atomic(const std::string& path, const std::string& bytes) {
  std::string dir = ".";
  auto slash = path.rfind('/');
  if (slash != std::string::npos) dir = slash == 0 ? "/" : path.substr(0, slash);
  std::string tmp = fmt::format("{}.tmp.{}", path, getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error(path, "", fmt::format("cannot write: {}", std::strerror(errno)));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t r = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(path, "", fmt::format("cannot write: {}", std::strerror(e)));
    }
    done += size_t(r);
  }
  const int synced = ::fsync(fd) == 0 ? 0 : errno;
  const int closed = ::close(fd) == 0 ? 0 : errno;
  if (synced || closed) {
    ::unlink(tmp.c_str());
    throw Error(path, "", fmt::format("cannot write: {}", std::strerror(synced ? synced : closed)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw Error(path, "", fmt::format("cannot rename into place: {}", std::strerror(e)));
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Wider elements first (as safetensors' own writer does), so that every tensor begins
  // at a multiple of its element size with no padding between: the reader insists.
  std::vector<const std::pair<std::string, Tensor>*> order;
  for (auto& nt : tensors) order.push_back(&nt);
  std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) {
    return dtype_size(a->second.dtype()) > dtype_size(b->second.dtype());
  });
  json header = json::object();
  size_t offset = 0;
  for (auto* nt : order) {
    const Tensor& t = nt->second;
    WEFT_ASSERT(!header.contains(nt->first), "tensor '" + nt->first + "' written twice");
    header[nt->first] = {{"dtype", t.dtype() == DType::f32 ? "F32" : "F64"},
                         {"shape", t.shape()},
                         {"data_offsets", {offset, offset + t.bytes()}}};
    offset += t.bytes();
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[i] = char((n >> (8 * i)) & 0xff);
  out += h;
  out.reserve(out.size() + offset);
  for (auto* nt : order) out.append(static_cast<const char*>(nt->second.raw()), nt->second.bytes());
  write_atomic(path, out);
}

namespace {

// The safetensors dtypes, so that a file of another dtype is refused by name.
const std::string kStDTypes[] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "I16", "U16", "F16",
                                 "BF16", "I32", "U32", "F32",     "F64",     "I64", "U64"};

// safetensors' own reader refuses headers over 100 MB; a checkpoint's is a few kB.
constexpr uint64_t kMaxHeader = 100'000'000;

// nlohmann keeps the last of repeated keys silently; a header with a name twice is two
// claims on the same tensor, so it is refused.
json parse_header(const std::string& path, const std::string& text) {
  std::vector<std::unordered_set<std::string>> keys;  // per open object
  auto callback = [&](int, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::object_start) keys.emplace_back();
    if (ev == json::parse_event_t::object_end) keys.pop_back();
    if (ev == json::parse_event_t::key) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second)
        throw Error(path, "header", fmt::format("key \"{}\" appears twice in one object", k));
    }
    return true;
  };
  try {
    return json::parse(text, callback);
  } catch (const json::exception& e) {
    throw Error(path, "header", std::string("not JSON: ") + e.what());
  }
}

struct Entry {
  std::string name;
  DType dtype;
  Dims shape;
  uint64_t begin, end;
};

// One tensor's entry: {"dtype": ..., "shape": [...], "data_offsets": [begin, end]}, its
// size checked without overflow against its offsets, which lie inside the data region.
Entry parse_entry(const std::string& path, const std::string& name, const json& e,
                  uint64_t data_size, uint64_t base) {
  const std::string where = "tensor '" + name + "'";
  std::string at;  // where its data lies in the file, once its offsets are known to be in it
  auto fail = [&](const std::string& what) -> void { throw Error(path, where, what + at); };
  if (!e.is_object())
    fail("expected an object with dtype, shape and data_offsets, got " + e.dump());
  for (auto& [k, v] : e.items())
    if (k != "dtype" && k != "shape" && k != "data_offsets")
      fail(fmt::format("unknown key \"{}\" (expected dtype, shape and data_offsets)", k));
  if (!e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
    fail("lacks dtype, shape or data_offsets");
  Entry out{name, DType::f32, {}, 0, 0};
  const json& off = e["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
      !off[1].is_number_unsigned())
    fail("data_offsets " + off.dump() + " are not [begin, end], two non-negative integers");
  out.begin = off[0];
  out.end = off[1];
  if (out.begin > out.end)
    fail(fmt::format("data_offsets [{}, {}] end before they begin", out.begin, out.end));
  if (out.end > data_size)
    fail(
        fmt::format("data_offsets [{}, {}] run past the end of the data ({} bytes, ending at "
                    "file byte {})",
                    out.begin, out.end, data_size, base + data_size));
  at = fmt::format(" (data at file byte {})", base + out.begin);

  const json& dt = e["dtype"];
  const std::string dname = dt.is_string() ? dt.get<std::string>() : "";
  if (dname == "F32" || dname == "F64")
    out.dtype = dname == "F32" ? DType::f32 : DType::f64;
  else if (std::find(std::begin(kStDTypes), std::end(kStDTypes), dname) != std::end(kStDTypes))
    fail(fmt::format("has dtype {}; weft reads F32 and F64", dname));
  else
    fail("unknown dtype " + dt.dump());
  const size_t elem = dtype_size(out.dtype);
  if (out.begin % elem != 0)
    fail(fmt::format("data_offsets begin at {}, not a multiple of its {}-byte elements", out.begin,
                     elem));

  const json& sh = e["shape"];
  if (!sh.is_array()) fail("shape is not a list: " + sh.dump());
  // The product of the non-zero dimensions fits in int64, so every partial product of
  // numel() does too, in any order.
  int64_t nonzero = 1;
  bool empty = false;
  for (size_t i = 0; i < sh.size(); ++i) {
    const json& d = sh[i];
    if (!d.is_number_unsigned() || d.get<uint64_t>() > uint64_t(INT64_MAX))
      fail(fmt::format("shape[{}] is {}; expected a non-negative integer", i, d.dump()));
    const int64_t v = d.get<int64_t>();
    out.shape.push_back(v);
    if (v == 0) empty = true;
    if (v != 0 && __builtin_mul_overflow(nonzero, v, &nonzero))
      fail(fmt::format("shape {} has more elements than fit in 64 bits", sh.dump()));
  }
  uint64_t bytes = 0;
  if (!empty && __builtin_mul_overflow(uint64_t(nonzero), uint64_t(elem), &bytes))
    fail(fmt::format("shape {} has more bytes than fit in 64 bits", sh.dump()));
  if (out.end - out.begin != bytes)
    fail(fmt::format("data_offsets [{}, {}] hold {} bytes, shape {} of {} needs {}", out.begin,
                     out.end, out.end - out.begin, sh.dump(), dname, bytes));
  return out;
}

}  // namespace

// A whole file's bytes; `what` names it in the error ("the checkpoint").
static std::string read_whole(const std::string& path, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "", "cannot open " + what);
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error(path, "", "cannot read " + what);
  return ss.str();
}

SafetensorsFile load_safetensors(const std::string& path) {
  const std::string bytes = read_whole(path, "the checkpoint");
  if (bytes.size() < 8)
    throw Error(path, "byte 0",
                fmt::format("not a safetensors file: {} bytes, shorter than the 8-byte header "
                            "length",
                            bytes.size()));
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(bytes[size_t(i)])) << (8 * i);
  if (n > bytes.size() - 8)
    throw Error(path, "byte 0",
                fmt::format("the header length {} runs past the end of the file ({} bytes)", n,
                            bytes.size()));
  if (n < 2 || n > kMaxHeader)
    throw Error(path, "byte 0",
                fmt::format("the header length {} is not that of a JSON header (2 to {} bytes)", n,
                            kMaxHeader));
  json header = parse_header(path, bytes.substr(8, n));
  if (!header.is_object())
    throw Error(path, "header", "expected a JSON object, got " + std::string(header.type_name()));
  const uint64_t base = 8 + n, data_size = bytes.size() - base;
  SafetensorsFile out;
  std::vector<Entry> entries;
  for (auto& [name, e] : header.items()) {
    if (name == "__metadata__") {
      if (!e.is_object()) throw Error(path, "__metadata__", "expected an object of strings");
      for (auto& [k, v] : e.items()) {
        if (!v.is_string())
          throw Error(path, "__metadata__/" + k, "expected a string, got " + v.dump());
        out.metadata[k] = v;
      }
      continue;
    }
    entries.push_back(parse_entry(path, name, e, data_size, base));
  }
  // The tensors tile the data region: sorted by offset, each begins where the one before
  // ends, the first at 0 and the last at the end of the file. A header length that is off
  // by a few bytes, or a tensor read from another's bytes, shows up here.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const Entry* last = nullptr;
  for (const Entry& e : entries) {
    if (e.begin < covered)
      throw Error(path, "tensor '" + e.name + "'",
                  fmt::format("data_offsets [{}, {}] overlap tensor '{}' [{}, {}] (file byte {})",
                              e.begin, e.end, last->name, last->begin, last->end, base + e.begin));
    if (e.begin > covered)
      throw Error(path, "tensor '" + e.name + "'",
                  fmt::format("data bytes [{}, {}) (file bytes {} to {}) belong to no tensor: "
                              "this tensor begins at {}",
                              covered, e.begin, base + covered, base + e.begin, e.begin));
    covered = e.end;
    last = &e;
  }
  if (covered != data_size)
    throw Error(path, last ? "tensor '" + last->name + "'" : "header",
                fmt::format("the tensors end at data byte {} (file byte {}), the file has {} more "
                            "bytes: is the header length ({}) right?",
                            covered, base + covered, data_size - covered, n));
  // Validated: every size is bounded by the file's, so nothing here allocates more.
  for (const Entry& e : entries) {
    Tensor t(e.dtype, e.shape);
    if (t.bytes() > 0) std::memcpy(t.raw(), bytes.data() + base + e.begin, t.bytes());
    out.tensors[e.name] = t;
  }
  return out;
}

static std::string npy_bytes(const std::string& descr, const Dims& shape, const void* data,
                             size_t bytes) {
  std::string sh = "(";
  for (size_t i = 0; i < shape.size(); ++i)
    sh += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
  sh += ")";
  std::string dict =
      fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", descr, sh);
  size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  std::string out = "\x93NUMPY";
  out += char(1);
  out += char(0);
  out += char(dict.size() & 0xff);
  out += char(dict.size() >> 8);
  out += dict;
  out.append(static_cast<const char*>(data), bytes);
  return out;
}

void save_npy(const std::string& path, const Tensor& t) {
  write_atomic(path,
               npy_bytes(t.dtype() == DType::f32 ? "<f4" : "<f8", t.shape(), t.raw(), t.bytes()));
}

void save_npy_u8(const std::string& path, const std::vector<uint8_t>& data, const Dims& shape) {
  write_atomic(path, npy_bytes("|u1", shape, data.data(), data.size()));
}

std::vector<double> load_npy(const std::string& path, Dims& shape) {
  const std::string bytes = read_whole(path, "the array");
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0)
    throw Error(path, "byte 0", "not a .npy file: it does not start with \\x93NUMPY");
  const int major = uint8_t(bytes[6]);
  if (major != 1 && major != 2)
    throw Error(path, "byte 6", fmt::format("npy version {} is not 1 or 2", major));
  size_t len = 0, at = major == 1 ? 10 : 12;
  if (bytes.size() < at) throw Error(path, "byte 8", "the header length is cut off");
  for (size_t i = 8; i < at; ++i) len |= size_t(uint8_t(bytes[i])) << (8 * (i - 8));
  if (len > bytes.size() - at)
    throw Error(path, "byte 8",
                fmt::format("the header length {} runs past the end of the file", len));
  const std::string header = bytes.substr(at, len);
  std::smatch m;
  static const std::regex descr(R"('descr'\s*:\s*'([<|=>]?)([fu])(\d)')");
  static const std::regex order(R"('fortran_order'\s*:\s*(True|False))");
  static const std::regex dims(R"('shape'\s*:\s*\(([0-9,\s]*)\))");
  if (!std::regex_search(header, m, descr) || (m[1] == ">") ||
      !((m[2] == "f" && (m[3] == "4" || m[3] == "8")) || (m[2] == "u" && m[3] == "1")))
    throw Error(path, "header",
                "expected 'descr' of a little-endian f4, f8 or u1 array, got " + header);
  const char kind = m.str(2)[0];
  const size_t size = size_t(std::stoi(m.str(3)));
  if (!std::regex_search(header, m, order) || m[1] == "True")
    throw Error(path, "header", "expected a C-order array ('fortran_order': False)");
  if (!std::regex_search(header, m, dims))
    throw Error(path, "header", "expected a 'shape' tuple, got " + header);
  shape.clear();
  uint64_t count = 1;
  std::stringstream list(m.str(1));
  for (std::string item; std::getline(list, item, ',');) {
    const size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b == std::string::npos) continue;  // the empty item after a trailing comma
    int64_t v = -1;
    const auto [end, ec] = std::from_chars(item.data() + b, item.data() + e + 1, v);
    if (ec != std::errc() || end != item.data() + e + 1 || v < 0)
      throw Error(path, "header", "expected a shape of non-negative integers, got " + header);
    shape.push_back(v);
    if (shape.back() > 0 && count > (uint64_t(1) << 40) / uint64_t(shape.back()))
      throw Error(path, "header", "the shape is too large");
    count *= uint64_t(shape.back());
  }
  const size_t data = at + len;
  if (bytes.size() - data != count * size)
    throw Error(path, "data",
                fmt::format("the shape {} needs {} bytes of data, the file has {}", dims_str(shape),
                            count * size, bytes.size() - data));
  std::vector<double> out(count);
  const char* p = bytes.data() + data;
  for (size_t i = 0; i < count; ++i) {
    if (kind == 'u') {
      out[i] = uint8_t(p[i]);
    } else if (size == 4) {
      float v;
      std::memcpy(&v, p + 4 * i, 4);
      out[i] = v;
    } else {
      std::memcpy(&out[i], p + 8 * i, 8);
    }
  }
  return out;
}

static void write_png(const std::string& path, const std::vector<uint8_t>& px, int64_t w, int64_t h,
                      bool rgb) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = png_uint_32(w);
  img.height = png_uint_32(h);
  img.format = rgb ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&img, nullptr, &size, 0, px.data(), 0, nullptr))
    throw Error(path, "", std::string("cannot encode PNG: ") + img.message);
  std::string buf(size, '\0');
  if (!png_image_write_to_memory(&img, buf.data(), &size, 0, px.data(), 0, nullptr))
    throw Error(path, "", std::string("cannot encode PNG: ") + img.message);
  buf.resize(size);
  write_atomic(path, buf);
}

void save_png_grid(const std::string& path, const Tensor& images, int64_t h, int64_t w, double low,
                   double high) {
  const int64_t n = images.shape().at(0), per = h * w, pad = 2;
  WEFT_ASSERT(images.numel() == n * per, "image grid shape");
  const int64_t cols = int64_t(std::ceil(std::sqrt(double(n)))), rows = (n + cols - 1) / cols;
  const int64_t W = cols * (w + pad) + pad, H = rows * (h + pad) + pad;
  std::vector<uint8_t> px(size_t(W * H), 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t r0 = pad + (i / cols) * (h + pad), c0 = pad + (i % cols) * (w + pad);
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        double v = (images.at(i * per + y * w + x) - low) / (high - low);
        v = std::min(1.0, std::max(0.0, v));
        px[size_t((r0 + y) * W + c0 + x)] = uint8_t(std::lround(v * 255));
      }
  }
  write_png(path, px, W, H, false);
}

void save_scatter_png(const std::string& path, const float* xy, int64_t n,
                      const std::vector<std::pair<double, double>>& centres, double radius,
                      double extent) {
  const int64_t S = 512;
  std::vector<uint8_t> px(size_t(S * S * 3), 255);
  auto to_px = [&](double v) { return (v + extent) / (2 * extent) * double(S - 1); };
  auto put = [&](int64_t x, int64_t y, uint8_t r, uint8_t g, uint8_t b) {
    if (x < 0 || y < 0 || x >= S || y >= S) return;
    uint8_t* p = px.data() + (y * S + x) * 3;
    p[0] = r, p[1] = g, p[2] = b;
  };
  for (int64_t k = 0; k < S; ++k) {  // the axes through 0
    const auto zero = int64_t(std::lround(to_px(0)));
    put(k, zero, 220, 220, 220);
    put(zero, k, 220, 220, 220);
  }
  const double r = std::max(2.0, radius / (2 * extent) * double(S - 1));
  for (auto& [cx, cy] : centres)  // each mode's circle of high quality
    for (int a = 0; a < 720; ++a) {
      const double t = a * M_PI / 360;
      put(std::lround(to_px(cx) + r * std::cos(t)),
          std::lround(double(S - 1) - to_px(cy) + r * std::sin(t)), 214, 39, 40);
    }
  for (int64_t i = 0; i < n; ++i) {  // y grows upward
    const int64_t x = std::lround(to_px(xy[2 * i])),
                  y = std::lround(double(S - 1) - to_px(xy[2 * i + 1]));
    for (int64_t dy = 0; dy < 2; ++dy)
      for (int64_t dx = 0; dx < 2; ++dx) put(x + dx, y + dy, 31, 119, 180);
  }
  write_png(path, px, S, S, true);
}

void save_loss_plot(const std::string& csv_path, const std::string& svg_path) {
  std::ifstream f(csv_path);
  std::string line;
  if (!std::getline(f, line)) return;
  std::vector<std::string> names;
  {
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) names.push_back(c);
  }
  // Losses and logged values; not the step, the throughput or the gradient norms (another
  // scale altogether).
  std::vector<size_t> cols;
  for (size_t k = 1; k < names.size(); ++k)
    if (names[k] != "samples_per_s" && names[k].rfind("grad_norm.", 0) != 0) cols.push_back(k);
  const size_t series = cols.size();
  std::vector<double> steps;
  std::vector<std::vector<double>> ys(series);
  while (std::getline(f, line)) {
    std::stringstream ss(line);
    std::vector<double> row;
    for (std::string c; std::getline(ss, c, ',');)  // empty: a phase outside its steps
      row.push_back(c.empty() ? std::nan("") : std::strtod(c.c_str(), nullptr));
    if (row.size() != names.size()) continue;
    steps.push_back(row[0]);
    for (size_t k = 0; k < series; ++k) ys[k].push_back(row[cols[k]]);
  }
  if (steps.size() < 2 || series == 0) return;
  double lo = 1e300, hi = -1e300;
  for (auto& y : ys)
    for (double v : y)
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (!(hi > lo)) hi = lo + 1;
  const double W = 800, H = 400, L = 60, R = 20, T = 20, B = 40;
  auto px = [&](double s) {
    return L + (W - L - R) * (s - steps.front()) / (steps.back() - steps.front());
  };
  auto py = [&](double v) { return T + (H - T - B) * (hi - v) / (hi - lo); };
  static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      W, H);
  for (int i = 0; i <= 4; ++i) {  // horizontal grid with values
    double v = lo + (hi - lo) * i / 4, y = py(v);
    svg += fmt::format(
        "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>"
        "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:.3g}</text>\n",
        L, y, W - R, y, L - 5, y + 4, v);
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step ({} to {})</text>\n",
                     (W + L) / 2, H - 10, steps.front(), steps.back());
  const size_t stride = std::max<size_t>(1, steps.size() / 1500);  // keep the file small
  const double alpha = std::clamp(10.0 / double(steps.size()), 0.01, 0.3);
  for (size_t k = 0; k < series; ++k) {
    const char* c = colors[k % 6];
    std::string raw, smooth;
    double ema = std::nan("");
    for (size_t i = 0; i < steps.size(); ++i) {
      if (!std::isfinite(ys[k][i])) continue;
      ema = std::isnan(ema) ? ys[k][i] : (1 - alpha) * ema + alpha * ys[k][i];
      if (i % stride) continue;
      raw += fmt::format("{:.1f},{:.1f} ", px(steps[i]), py(ys[k][i]));
      smooth += fmt::format("{:.1f},{:.1f} ", px(steps[i]), py(ema));
    }
    svg += fmt::format(
        "<polyline fill=\"none\" stroke=\"{}\" stroke-opacity=\"0.25\" points=\"{}\"/>\n", c, raw);
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n",
                       c, smooth);
    svg += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"{}\">{}</text>\n", W - R - 150,
                       T + 16 * (k + 1), c, names[cols[k]]);
  }
  svg += "</svg>\n";
  write_atomic(svg_path, svg);
}

}  // namespace weft

// Readers of outside files (graphs, IDX, safetensors, a plugin's op definitions) on
// mutated inputs and on sizes at the edges of 32- and 64-bit arithmetic: each must either
// load or fail with weft::Error, never crash, throw anything else or allocate what the
// file only claims. Run under AddressSanitizer and UndefinedBehaviorSanitizer too (see
// README).
#include <doctest/doctest.h>
#include <sys/resource.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/dataset.h"
#include "runtime/files.h"
#include "runtime/model.h"
#include "runtime/plugin.h"
#include "runtime/rng.h"
#include "runtime/trainer.h"
#include "tests/test_util.h"

using namespace weft;
using weft::test::gzip;
using json = nlohmann::json;
namespace fs = std::filesystem;

// Every input here is a few kB: an allocation of a gigabyte means a reader believed a
// size the file only claims. Under AddressSanitizer it aborts the run with a report;
// elsewhere the address space is capped, so it throws std::bad_alloc and fails the test.
#ifdef __SANITIZE_ADDRESS__
extern "C" const char* __asan_default_options() { return "max_allocation_size_mb=1024"; }
#else
static const bool address_space_capped = [] {
  const rlimit cap{rlim_t(2) << 30, rlim_t(2) << 30};
  return setrlimit(RLIMIT_AS, &cap) == 0;
}();
#endif

namespace {
using weft::test::slurp;
using weft::test::spit;

// Flips, inserts, deletes or duplicates a few bytes; deterministic in (seed, i).
std::string mutate(const std::string& in, uint64_t seed, uint64_t i) {
  std::string s = in;
  const uint64_t key = stream_key(seed, i);
  const int edits = 1 + int(uniform01(key, 0) * 4);
  for (int e = 0; e < edits && !s.empty(); ++e) {
    size_t at = size_t(uniform01(key, 10 + e) * double(s.size()));
    int kind = int(uniform01(key, 20 + e) * 4);
    char c = char(uniform01(key, 30 + e) * 256);
    if (kind == 0) s[at] = c;
    if (kind == 1) s.insert(s.begin() + long(at), c);
    if (kind == 2) s.erase(at, 1 + size_t(uniform01(key, 40 + e) * 8));
    if (kind == 3) s.insert(at, s.substr(at, 16));
  }
  return s;
}

// Sizes at the edges of 32- and 64-bit arithmetic, negative ones, and numbers that are
// not integers, as JSON text.
const char* const kExtremes[] = {"2147483647",
                                 "2147483648",
                                 "4294967295",
                                 "4294967296",
                                 "1099511627776",
                                 "4611686018427387904",
                                 "9223372036854775807",
                                 "9223372036854775808",
                                 "18446744073709551615",
                                 "18446744073709551616",
                                 "-1",
                                 "-2147483648",
                                 "-9223372036854775808",
                                 "1e308",
                                 "-1e308",
                                 "0",
                                 "0.5"};
constexpr size_t kNumExtremes = sizeof kExtremes / sizeof kExtremes[0];

// [begin, end) of each number in `text`, with its sign.
std::vector<std::pair<size_t, size_t>> numbers_in(const std::string& text) {
  std::vector<std::pair<size_t, size_t>> out;
  for (size_t k = 0; k < text.size(); ++k) {
    if (!std::isdigit(static_cast<unsigned char>(text[k])) ||
        (k > 0 && std::isalnum(static_cast<unsigned char>(text[k - 1]))))
      continue;
    size_t e = k;
    while (e < text.size() && std::strchr("0123456789.eE+-", text[e])) ++e;
    out.push_back({k > 0 && text[k - 1] == '-' ? k - 1 : k, e});
    k = e;
  }
  return out;
}

// Replaces one or two of the numbers in `text` with extremes; deterministic in (seed, i).
std::string with_extremes(const std::string& text, uint64_t seed, uint64_t i) {
  const uint64_t key = stream_key(seed, i, 0xe7);
  std::string s = text;
  const int edits = 1 + int(uniform01(key, 0) * 2);
  for (int e = 0; e < edits; ++e) {
    auto numbers = numbers_in(s);
    if (numbers.empty()) break;
    auto [b, end] = numbers[size_t(uniform01(key, 10 + e) * double(numbers.size()))];
    s.replace(b, end - b, kExtremes[size_t(uniform01(key, 20 + e) * kNumExtremes)]);
  }
  return s;
}

std::string le64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((v >> (8 * i)) & 0xff);
  return out;
}

// Runs attempt(i) n times; counts the refusals (weft::Error). Anything else propagates and
// fails the test.
template <class F>
int refusals(int n, F attempt) {
  int refused = 0;
  for (int i = 0; i < n; ++i) {
    try {
      attempt(uint64_t(i));
    } catch (const Error&) {
      ++refused;
    }
  }
  return refused;
}

template <class F>
int survive(const std::string& path, const std::string& original, uint64_t seed, int n, F load) {
  int refused = 0;
  for (int i = 0; i < n; ++i) {
    spit(path, mutate(original, seed, uint64_t(i)));
    try {
      load();
    } catch (const Error&) {
      ++refused;
    }
  }
  return refused;
}
}  // namespace

TEST_CASE("mutated graph files load or are refused with an Error") {
  fs::path dir = fs::temp_directory_path() / "weft_fuzz";
  fs::create_directories(dir);
  for (auto name : {"mlp_gan.json", "sparse_ae.json", "dcgan.json"}) {
    std::string original = slurp(std::string(WEFT_SOURCE_DIR) + "/graphs/" + name);
    std::string path = (dir / name).string();
    int refused = survive(path, original, 1, 400, [&] { load_model(path); });
    CHECK(refused > 200);  // most mutations break something, and are reported
  }
}

TEST_CASE("graph files with extreme sizes are refused with an Error, or load and compile") {
  // Widths, batches, kernels, strides and paddings of 2^31, 2^40, 2^62, 2^63 - 1 and the like:
  // shape rules and plans must check their arithmetic and the memory a run would need.
  fs::path dir = fs::temp_directory_path() / "weft_fuzz";
  fs::create_directories(dir);
  for (auto name : {"mlp_gan.json", "dcgan.json"}) {
    std::string original = slurp(std::string(WEFT_SOURCE_DIR) + "/graphs/" + name);
    std::string path = (dir / name).string();
    int compiled = 0;
    int refused = refusals(200, [&](uint64_t i) {
      spit(path, with_extremes(original, 12, i));
      Model m = load_model(path);
      if (compiled < 8 && !m.train.phases.empty()) {  // plans with oneDNN primitives: a few
        ++compiled;
        Session s(m, SessionOptions{});
      }
    });
    CHECK(refused > 20);
  }
}

TEST_CASE("mutated safetensors files load or are refused with an Error") {
  fs::path dir = fs::temp_directory_path() / "weft_fuzz";
  fs::create_directories(dir);
  std::string path = (dir / "c.safetensors").string();
  Tensor a(DType::f32, {3, 4}), b(DType::f64, {5});
  save_safetensors(path, {{"a", a}, {"b", b}}, {{"step", "3"}});
  std::string original = slurp(path);
  int refused = survive(path, original, 2, 1000, [&] { load_safetensors(path); });
  CHECK(refused > 100);
}

TEST_CASE("mutated IDX files load or are refused with an Error") {
  fs::path dir = fs::temp_directory_path() / "weft_fuzz";
  fs::create_directories(dir);
  std::string plain;
  for (unsigned char c : {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3}) plain += char(c);
  plain += std::string(18, '\x7f');
  std::string path = (dir / "x-idx3-ubyte").string();
  std::vector<int64_t> dims;
  int refused = survive(path, plain, 3, 1000, [&] { read_idx(path, 3, dims); });
  CHECK(refused > 100);
}

TEST_CASE("mutated gzip-compressed IDX files load or are refused with an Error") {
  fs::path dir = fs::temp_directory_path() / "weft_fuzz";
  fs::create_directories(dir);
  std::string plain;
  for (unsigned char c : {0, 0, 8, 1, 0, 0, 0, 40}) plain += char(c);
  for (int i = 0; i < 40; ++i) plain += char(i % 10);
  const std::string path = (dir / "y-idx1-ubyte.gz").string();
  std::vector<int64_t> dims;
  int refused = survive(path, gzip(plain), 4, 600, [&] { read_idx(path, 1, dims); });
  CHECK(refused > 500);  // almost any change to a compressed file breaks its CRC
}

TEST_CASE("mutated .npy files load or are refused with an Error, as do extreme shapes") {
  fs::path dir = fs::temp_directory_path() / "weft_fuzz";
  fs::create_directories(dir);
  const std::string path = (dir / "f.npy").string();
  Tensor t(DType::f32, {4, 3});
  save_npy(path, t);
  const std::string original = slurp(path);
  Dims shape;
  int refused = survive(path, original, 5, 1000, [&] { load_npy(path, shape); });
  CHECK(refused > 100);
  // Shapes whose element count cannot be allocated, or cannot be a number at all.
  for (const char* dims : {"(4611686018427387904, 3)", "(99999999999999999999,)", "(-1, 3)",
                           "(3 4)", "(1099511627776, 1099511627776)", "(4, x)"}) {
    // The header keeps its length: the padding before its newline shrinks to make room.
    std::string text = original;
    const size_t at = text.find("(4,3)"), end = text.find('\n');
    REQUIRE(at != std::string::npos);
    const size_t grow = std::string(dims).size() - 5;
    REQUIRE(text.substr(end - grow, grow) == std::string(grow, ' '));
    text.erase(end - grow, grow);
    text.replace(at, 5, dims);
    spit(path, text);
    INFO(dims);
    CHECK_THROWS_AS(load_npy(path, shape), Error);
  }
}

TEST_CASE("safetensors headers with extreme sizes, offsets and lengths are refused") {
  fs::path dir = fs::temp_directory_path() / "weft_fuzz";
  fs::create_directories(dir);
  const std::string path = (dir / "x.safetensors").string();
  Tensor a(DType::f32, {3, 4}), b(DType::f64, {5});
  save_safetensors(path, {{"a", a}, {"b", b}}, {{"step", "3"}});
  const std::string original = slurp(path);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(original[size_t(i)])) << (8 * i);
  const json header = json::parse(original.substr(8, n));
  const std::string data = original.substr(8 + n);
  auto write = [&](const std::string& h) { spit(path, le64(h.size()) + h + data); };

  // Every size and offset, set to each extreme: refused unless it is the value it was.
  const std::vector<json::json_pointer> slots = {
      json::json_pointer("/a/shape/0"),        json::json_pointer("/a/shape/1"),
      json::json_pointer("/b/shape/0"),        json::json_pointer("/a/data_offsets/0"),
      json::json_pointer("/a/data_offsets/1"), json::json_pointer("/b/data_offsets/0"),
      json::json_pointer("/b/data_offsets/1")};
  for (auto& slot : slots)
    for (const char* x : kExtremes) {
      json h = header;
      h[slot] = json::parse(x);
      write(h.dump());
      INFO(slot.to_string(), " = ", x);
      try {
        load_safetensors(path);
        CHECK(h[slot] == header[slot]);
      } catch (const Error&) {
      }
    }
  // Shapes whose element or byte counts overflow, in any order of their dimensions.
  for (auto shape : {json{uint64_t(1) << 31, uint64_t(1) << 31, uint64_t(1) << 31},
                     json{uint64_t(1) << 32, uint64_t(1) << 32, 0},
                     json{0, uint64_t(1) << 62, uint64_t(1) << 62}, json{uint64_t(1) << 61, 8},
                     json{uint64_t(1) << 40, uint64_t(1) << 40}}) {
    json h = header;
    h["a"]["shape"] = shape;
    write(h.dump());
    CHECK_THROWS_AS(load_safetensors(path), Error);
  }
  // Header lengths past the file, absurd, or a little off.
  for (uint64_t len :
       {uint64_t(0), uint64_t(1), uint64_t(7), uint64_t(1) << 31, uint64_t(1) << 32,
        uint64_t(1) << 40, uint64_t(1) << 62, (uint64_t(1) << 63) - 1, uint64_t(1) << 63,
        ~uint64_t(0), n - 1, n + 1, uint64_t(original.size()) - 7}) {
    spit(path, le64(len) + original.substr(8));
    INFO("header length ", len);
    CHECK_THROWS_AS(load_safetensors(path), Error);
  }
  // Random numbers of the header replaced by extremes, the length kept right.
  const std::string text = header.dump();
  refusals(600, [&](uint64_t i) {
    write(with_extremes(text, 5, i));
    load_safetensors(path);
  });
}

TEST_CASE("IDX headers with extreme dimensions are refused, plain and gzip") {
  fs::path dir = fs::temp_directory_path() / "weft_fuzz";
  fs::create_directories(dir);
  const std::string path = (dir / "z-idx3-ubyte").string();
  const uint32_t sizes[] = {0,          1,          2,         3, 28, 65535, (1u << 24) + 1,
                            0x7fffffff, 0x80000000, 0xffffffff};
  const std::string data(18, '\x7f');  // what a [2, 3, 3] header describes
  std::vector<int64_t> dims;
  int loaded = 0;
  for (bool gz : {false, true})
    for (uint32_t d0 : sizes)
      for (uint32_t d1 : sizes)
        for (uint32_t d2 : sizes) {
          std::string plain = {0, 0, 8, 3};
          for (uint32_t d : {d0, d1, d2})
            for (int k = 3; k >= 0; --k) plain += char((d >> (8 * k)) & 0xff);
          spit(path, gz ? gzip(plain + data) : plain + data);
          const bool right = uint64_t(d0) * d1 * d2 == data.size();  // 2x3x3 in any order
          try {
            read_idx(path, 3, dims);
            CHECK(right);
            ++loaded;
          } catch (const Error&) {
            CHECK(!right);
          }
        }
  CHECK(loaded == 6);
  for (int rank : {0, 1, 2, 4, 255}) {  // the rank byte: only 3 is read as images
    std::string plain = {0, 0, 8, char(rank)};
    spit(path, plain + std::string(64, '\x01'));
    CHECK_THROWS_AS(read_idx(path, 3, dims), Error);
  }
}

namespace {
int same_shape(const weft_shape_call*) { return 0; }

// An op definition of the kind a plugin gives: names, and JSON for the attribute schema,
// the gradient subgraph (weft ops) and the test spec.
const char* const kAttrs =
    R"([{"name": "eps", "type": "float", "default": 1e-8, "doc": "added under the root"},
        {"name": "axes", "type": "ints", "default": [0]}, {"name": "n", "type": "int"}])";
const char* const kGradient = R"({"nodes": [
    {"id": "mu", "op": "mean", "in": ["x"], "axes": [0], "keepdims": true},
    {"id": "xc", "op": "sub", "in": ["x", "mu"]},
    {"id": "sq", "op": "square", "in": ["xc"]},
    {"id": "ve", "op": "add", "in": ["sq", "$eps"]},
    {"id": "sd", "op": "sqrt", "in": ["ve"]},
    {"id": "g", "op": "mul", "in": ["dy", 0.5]},
    {"id": "t", "op": "div", "in": ["g", "sd"]},
    {"id": "dx", "op": "sum", "in": ["t"], "axes": "$axes", "keepdims": true}],
  "grads": {"x": "dx"}})";
const char* const kTest =
    R"({"cases": [[[4, 2, 3, 3]], [[3, 1]]], "attrs": {"eps": 1e-3, "n": 2}, "low": -1,
        "high": 1, "order": 2, "no_grad_inputs": []})";

void check(const std::string& attrs, const std::string& gradient, const std::string& test) {
  weft_op_def def = {sizeof(weft_op_def), "fuzz_op",        "",          "x", "y", attrs.c_str(),
                     same_shape,          gradient.c_str(), test.c_str()};
  check_op_def(def, "fuzz-plugin");
}
}  // namespace

TEST_CASE("a plugin's op definitions, mutated and with extreme sizes, pass or are refused") {
  check(kAttrs, kGradient, kTest);  // the unmutated definition is good
  CHECK(refusals(300, [&](uint64_t i) { check(mutate(kAttrs, 6, i), kGradient, kTest); }) > 150);
  CHECK(refusals(300, [&](uint64_t i) { check(kAttrs, mutate(kGradient, 7, i), kTest); }) > 150);
  CHECK(refusals(300, [&](uint64_t i) { check(kAttrs, kGradient, mutate(kTest, 8, i)); }) > 150);
  // Extreme numbers are mostly legal at this stage (a float default of 1e308, an axis
  // checked when the op is used); what matters is that nothing else is thrown.
  refusals(300, [&](uint64_t i) { check(with_extremes(kAttrs, 9, i), kGradient, kTest); });
  refusals(300, [&](uint64_t i) { check(kAttrs, with_extremes(kGradient, 10, i), kTest); });
  // A test spec's shapes and order are bounded: most extremes are refused.
  CHECK(refusals(300, [&](uint64_t i) { check(kAttrs, kGradient, with_extremes(kTest, 11, i)); }) >
        100);
}

// Readers of outside files (graphs, IDX, safetensors) on mutated inputs: each mutation
// must either load or fail with weft::Error, never crash or throw anything else. Run
// under AddressSanitizer and UndefinedBehaviorSanitizer too (see README).
#include <doctest/doctest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/dataset.h"
#include "runtime/files.h"
#include "runtime/model.h"
#include "runtime/rng.h"

using namespace weft;
namespace fs = std::filesystem;

namespace {
std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
void spit(const std::string& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

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

// Readers of outside files refuse malformed ones with a weft::Error that names the file
// and the place: checkpoints (safetensors layout, metadata, fit to the graph, values) and
// Fashion-MNIST (gzip integrity, IDX headers and sizes). The runner exits 2 on each.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <sys/wait.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "runtime/dataset.h"
#include "runtime/files.h"
#include "runtime/model.h"
#include "runtime/trainer.h"
#include "tests/test_util.h"

using namespace weft;
using weft::test::gzip;
using weft::test::slurp;
using weft::test::spit;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string graph(const std::string& name) {
  return std::string(WEFT_SOURCE_DIR) + "/graphs/" + name;
}
fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("weft_readers_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// The message of the weft::Error that f throws; anything else fails the test.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("threw something other than weft::Error: " << e.what());
  }
  FAIL("accepted a malformed file");
  return "";
}
#define CHECK_HAS(msg, part)                                   \
  do {                                                         \
    const std::string said = (msg);                            \
    CHECK_MESSAGE(said.find(part) != std::string::npos, said); \
  } while (0)

// The runner's exit status and what it printed.
int run(const std::string& args, std::string& out) {
  const fs::path log = fs::temp_directory_path() / "weft_readers_run.log";
  int s =
      std::system((std::string(WEFT_BINARY) + " " + args + " > " + log.string() + " 2>&1").c_str());
  out = slurp(log);
  return WIFEXITED(s) ? WEXITSTATUS(s) : -1;
}

// ---- checkpoints --------------------------------------------------------------------

// A safetensors file taken apart: its JSON header and its data region.
struct Parts {
  json header;
  std::string data;
};
Parts take_apart(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(bytes[size_t(i)])) << (8 * i);
  return {json::parse(bytes.substr(8, n)), bytes.substr(8 + n)};
}
// `length` is what the file claims the header's length is.
std::string assemble(const std::string& header, const std::string& data, uint64_t length) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((length >> (8 * i)) & 0xff);
  return out + header + data;
}
std::string assemble(const json& header, const std::string& data) {
  std::string h = header.dump();
  return assemble(h, data, h.size());
}

// A real checkpoint: sparse_ae after one training step on Fashion-MNIST.
struct Base {
  Model model;
  SessionOptions opt;
  std::string bytes;
  std::map<std::string, Tensor> params;  // as saved
};
const Base& base() {
  static const Base b = [] {
    Base r;
    r.model = load_model(graph("sparse_ae.json"));
    Session s(r.model, r.opt);
    s.train_step();
    const fs::path file = temp_dir("base") / "checkpoint.safetensors";
    s.save_checkpoint(file.string());
    r.bytes = slurp(file);
    for (auto& [name, t] : s.params) r.params[name] = t.to(t.dtype());
    return r;
  }();
  return b;
}

// The message load_checkpoint gives for `bytes`, loaded into a fresh session.
std::string refusal(const std::string& bytes, const std::string& file_name = "bad.safetensors") {
  const fs::path file = fs::temp_directory_path() / ("weft_readers_" + file_name);
  spit(file, bytes);
  Session s(base().model, base().opt);
  std::string msg = error_of([&] { s.load_checkpoint(file.string()); });
  CHECK_HAS(msg, file.string());
  return msg;
}

// The base checkpoint with one header edit.
template <class F>
std::string edited(F edit) {
  Parts p = take_apart(base().bytes);
  edit(p);
  return assemble(p.header, p.data);
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.raw());
  return {p, p + t.bytes()};
}

}  // namespace

TEST_CASE("a real checkpoint loads back exactly, into another session too") {
  Session s(base().model, base().opt);
  const fs::path file = temp_dir("good") / "checkpoint.safetensors";
  spit(file, base().bytes);
  s.load_checkpoint(file.string());
  CHECK(s.step == 1);
  for (auto& [name, t] : base().params) CHECK(bytes_of(s.params.at(name)) == bytes_of(t));
  // Tensors with no elements and scalars are part of the format; an f64 given after an
  // odd number of f32 elements is still written aligned.
  Tensor empty(DType::f32, {0, 3}), odd(DType::f32, {3}), scalar(DType::f64, {});
  scalar.set(0, 2.5);
  odd.set(2, -1);
  save_safetensors((file.parent_path() / "t.safetensors").string(),
                   {{"e", empty}, {"odd", odd}, {"s", scalar}}, {});
  SafetensorsFile f = load_safetensors((file.parent_path() / "t.safetensors").string());
  CHECK(f.tensors.at("e").shape() == Dims{0, 3});
  CHECK(f.tensors.at("odd").at(2) == -1);
  CHECK(f.tensors.at("s").at(0) == 2.5);
}

TEST_CASE("the safetensors layout is checked: header length, offsets, tiling, dtypes, shapes") {
  const Parts p = take_apart(base().bytes);
  const std::string text = p.header.dump();

  SUBCASE("a header length a few bytes short") {
    // Padded with spaces (as writers do), the header still parses when its length is short,
    // and every tensor would be read 4 bytes early.
    std::string msg = refusal(assemble(text + "    ", p.data, text.size()));
    CHECK_HAS(msg, "4 more bytes");
    CHECK_HAS(msg, "header length");
    msg = refusal(assemble(text, p.data, text.size() - 3));
    CHECK_HAS(msg, "header: not JSON");
  }
  SUBCASE("header lengths past the end of the file or absurd") {
    for (uint64_t n : {uint64_t(1) << 31, uint64_t(1) << 32, uint64_t(1) << 40, uint64_t(1) << 62,
                       ~uint64_t(0), uint64_t(text.size() + p.data.size() + 1)})
      CHECK_HAS(refusal(assemble(text, p.data, n)), "runs past the end of the file");
    CHECK_HAS(refusal(assemble(text, p.data, 0)), "not that of a JSON header");
    CHECK_HAS(refusal(base().bytes.substr(0, 5)), "shorter than the 8-byte header length");
  }
  SUBCASE("overlapping data: a parameter reading an optimizer's bytes") {
    std::string msg = refusal(edited([](Parts& q) {
      q.header["opt/0/E.fc.bias.m"]["data_offsets"] = q.header["param/E.fc.bias"]["data_offsets"];
    }));
    CHECK_HAS(msg, "overlap");
    CHECK_HAS(msg, "'opt/0/E.fc.bias.m'");
    CHECK_HAS(msg, "'param/E.fc.bias'");
  }
  SUBCASE("misaligned data") {
    std::string msg = refusal(edited([](Parts& q) {
      auto& off = q.header["param/Dec.fc.bias"]["data_offsets"];
      off = {off[0].get<uint64_t>() + 2, off[1].get<uint64_t>() + 2};
    }));
    CHECK_HAS(msg, "tensor 'param/Dec.fc.bias'");
    CHECK_HAS(msg, "not a multiple of its 4-byte elements");
  }
  SUBCASE("bytes that belong to no tensor: a gap, trailing bytes") {
    std::vector<std::pair<uint64_t, std::string>> by_offset;  // a tensor in the middle
    for (auto& [name, e] : p.header.items())
      if (name != "__metadata__") by_offset.push_back({e["data_offsets"][0], name});
    std::sort(by_offset.begin(), by_offset.end());
    const auto [gap, middle] = by_offset[by_offset.size() / 2];
    std::string msg = refusal(edited([&](Parts& q) { q.header.erase(middle); }));
    CHECK_HAS(msg, "belong to no tensor");
    CHECK_HAS(msg, fmt::format("data bytes [{}, ", gap));
    msg = refusal(assemble(p.header, p.data + std::string(16, '\0')));
    CHECK_HAS(msg, "16 more bytes");
  }
  SUBCASE("offsets that do not match the shape, or run past the data") {
    std::string msg =
        refusal(edited([](Parts& q) { q.header["param/Dec.fc.bias"]["shape"] = {785}; }));
    CHECK_HAS(msg, "tensor 'param/Dec.fc.bias'");
    CHECK_HAS(msg, "hold 3136 bytes, shape [785] of F32 needs 3140");
    msg = refusal(
        edited([&](Parts& q) { q.header["opt/0/t"]["data_offsets"][1] = p.data.size() + 8; }));
    CHECK_HAS(msg, "tensor 'opt/0/t'");
    CHECK_HAS(msg, "run past the end of the data");
    msg = refusal(edited([](Parts& q) { q.header["opt/0/t"]["data_offsets"] = {8, 0}; }));
    CHECK_HAS(msg, "end before they begin");
    msg = refusal(edited([](Parts& q) { q.header["opt/0/t"]["data_offsets"] = {-8, 0}; }));
    CHECK_HAS(msg, "are not [begin, end], two non-negative integers");
  }
  SUBCASE("dtypes and shapes") {
    std::string msg = refusal(edited([](Parts& q) { q.header["opt/0/t"]["dtype"] = "F16"; }));
    CHECK_HAS(msg, "tensor 'opt/0/t': has dtype F16; weft reads F32 and F64");
    msg = refusal(edited([](Parts& q) { q.header["opt/0/t"]["dtype"] = "Q7"; }));
    CHECK_HAS(msg, "unknown dtype \"Q7\"");
    msg = refusal(edited([](Parts& q) { q.header["param/Dec.fc.bias"]["shape"] = {-784}; }));
    CHECK_HAS(msg, "shape[0] is -784; expected a non-negative integer");
    msg = refusal(edited([](Parts& q) {
      q.header["param/Dec.fc.bias"]["shape"] = {uint64_t(1) << 62, uint64_t(1) << 62};
    }));
    CHECK_HAS(msg, "more elements than fit in 64 bits");
    msg = refusal(edited([](Parts& q) { q.header["opt/0/t"]["shape"] = {uint64_t(1) << 62}; }));
    CHECK_HAS(msg, "more bytes than fit in 64 bits");
  }
  SUBCASE("the header's JSON: an object, no repeated keys, string metadata") {
    CHECK_HAS(refusal(assemble(json::array(), "")), "header: expected a JSON object, got array");
    std::string twice = text;
    twice.insert(1, "\"param/E.fc.bias\": {},");
    CHECK_HAS(refusal(assemble(twice, p.data, twice.size())),
              "key \"param/E.fc.bias\" appears twice");
    std::string msg = refusal(edited([](Parts& q) { q.header["__metadata__"]["step"] = 6; }));
    CHECK_HAS(msg, "__metadata__/step: expected a string, got 6");
    msg = refusal(edited([](Parts& q) { q.header["opt/0/t"]["extra"] = 1; }));
    CHECK_HAS(msg, "unknown key \"extra\"");
  }
}

TEST_CASE("checkpoint metadata is parsed strictly") {
  auto with = [](const std::string& key, const std::string& value) {
    return refusal(edited([&](Parts& q) { q.header["__metadata__"][key] = value; }));
  };
  for (auto bad : {"1e3", "50abc", "-5", "", " 7", "+7", "0x10", "99999999999999999999"}) {
    std::string msg = with("step", bad);
    CHECK_HAS(msg, "__metadata__/step: expected a whole number from 0 to");
    CHECK_HAS(msg, fmt::format("got \"{}\"", bad));
  }
  CHECK_HAS(with("seed", "abc"), "__metadata__/seed: expected a whole number");
  CHECK_HAS(with("seed", "-1"), "__metadata__/seed: expected a whole number");
  CHECK_HAS(with("batch", "0"), "__metadata__/batch: expected a whole number from 1");
  CHECK_HAS(with("batch", "64"), "trained with batch 64, this run uses 128");
  CHECK_HAS(with("seed", "2"), "trained with seed 2, this run uses 1");
  CHECK_HAS(with("format", "weft-checkpoint-9"), "unknown checkpoint format");
  CHECK_HAS(refusal(edited([](Parts& q) { q.header["__metadata__"].erase("step"); })),
            "no \"step\" in its metadata");
}

TEST_CASE("a checkpoint must fit the graph: every difference is listed") {
  std::string msg = refusal(edited([](Parts& q) {
    q.header["opt/0/steps"] = q.header["opt/0/t"];
    q.header.erase("opt/0/t");
    q.header["param/E.fc.bias"]["dtype"] = "F64";  // the same 1024 bytes
    q.header["param/E.fc.bias"]["shape"] = {128};
    q.header["param/Dec.fc.weight"]["shape"] = {256, 784};
  }));
  CHECK_HAS(msg, "does not fit graph 'sparse-ae'");
  CHECK_HAS(msg, "missing tensor 'opt/0/t' (f64 [1])");
  CHECK_HAS(msg, "unexpected tensor 'opt/0/steps' (f64 [1])");
  CHECK_HAS(msg,
            "tensor 'param/E.fc.bias' is f64 [128] in the checkpoint, the graph needs f32 [256]");
  CHECK_HAS(msg,
            "tensor 'param/Dec.fc.weight' is f32 [256, 784] in the checkpoint, the graph needs "
            "f32 [784, 256]");
  // Another graph's checkpoint.
  Model other = load_model(graph("mlp_gan.json"));
  Session s(other, {});
  const fs::path file = temp_dir("other") / "c.safetensors";
  spit(file, base().bytes);
  msg = error_of([&] { s.load_checkpoint(file.string(), false); });
  CHECK_HAS(msg, "missing tensor 'param/G.");
  CHECK_HAS(msg, "unexpected tensor 'param/E.fc.weight'");
}

TEST_CASE("NaN and Inf in parameters and optimizer state are refused, naming the element") {
  Parts p = take_apart(base().bytes);
  auto poke = [&](const std::string& name, int64_t i, float v) {
    const uint64_t at = p.header[name]["data_offsets"][0];
    std::memcpy(p.data.data() + at + uint64_t(i) * 4, &v, 4);
  };
  poke("param/E.fc.weight", 5, std::nanf(""));
  poke("opt/0/Dec.fc.weight.v", 7, INFINITY);
  poke("opt/0/Dec.fc.weight.v", 9, -INFINITY);
  std::string msg = refusal(assemble(p.header, p.data));
  CHECK_HAS(msg, "not finite");
  CHECK_HAS(msg, "tensor 'param/E.fc.weight' element 5 is nan (1 of its 200704 elements");
  CHECK_HAS(msg, "tensor 'opt/0/Dec.fc.weight.v' element 7 is inf (2 of its 200704 elements");
}

TEST_CASE("a refused checkpoint leaves the session as it was") {
  Session s(base().model, base().opt);
  std::map<std::string, std::vector<uint8_t>> before;
  for (auto& [name, t] : s.params) before[name] = bytes_of(t);
  for (auto& [name, t] : s.phases[0].opt->state()) before["opt/" + name] = bytes_of(t);
  Parts p = take_apart(base().bytes);
  const float nan = std::nanf("");
  const uint64_t last = p.header["opt/0/Dec.fc.bias.v"]["data_offsets"][1].get<uint64_t>() - 4;
  std::memcpy(p.data.data() + last, &nan, 4);
  const fs::path file = temp_dir("unchanged") / "c.safetensors";
  spit(file, assemble(p.header, p.data));  // everything fits; one value is NaN
  CHECK_HAS(error_of([&] { s.load_checkpoint(file.string()); }), "is nan");
  CHECK(s.step == 0);
  for (auto& [name, t] : s.params) CHECK(bytes_of(t) == before.at(name));
  for (auto& [name, t] : s.phases[0].opt->state()) CHECK(bytes_of(t) == before.at("opt/" + name));
}

TEST_CASE("weft sample and weft train --resume exit 2 on a malformed checkpoint") {
  const Parts p = take_apart(base().bytes);
  const std::string text = p.header.dump();
  Parts nan = p;
  const float v = std::nanf("");
  std::memcpy(nan.data.data() + nan.header["param/E.fc.bias"]["data_offsets"][0].get<uint64_t>(),
              &v, 4);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {assemble(text + "    ", p.data, text.size()), "4 more bytes"},
      {edited([](Parts& q) { q.header["__metadata__"]["step"] = "-5"; }), "__metadata__/step"},
      {edited([](Parts& q) { q.header["__metadata__"]["seed"] = "x"; }), "__metadata__/seed"},
      {edited([](Parts& q) { q.header.erase("param/E.fc.bias"); }), "belong to no tensor"},
      {assemble(nan.header, nan.data), "'param/E.fc.bias' element 0 is nan"}};
  for (auto& [bytes, says] : cases) {
    const fs::path dir = temp_dir("runner");
    const fs::path ckpt = dir / "checkpoint.safetensors";
    spit(ckpt, bytes);
    std::string out;
    CHECK(run("sample " + graph("sparse_ae.json") + " --checkpoint " + ckpt.string() +
                  " --n 4 --out " + (dir / "g.png").string(),
              out) == 2);
    CHECK_HAS(out, ckpt.string());
    CHECK_HAS(out, says);
    CHECK(run("train " + graph("sparse_ae.json") + " --steps 3 --quiet --resume --out " +
                  dir.string(),
              out) == 2);
    CHECK_HAS(out, says);
    // Nothing written: the folder holds the checkpoint alone, unchanged.
    CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
    CHECK(slurp(ckpt) == bytes);
  }
}

// ---- Fashion-MNIST ------------------------------------------------------------------

namespace {

const std::string kData = default_data_dir();

std::string be32(uint32_t v) {
  return {char(v >> 24), char((v >> 16) & 0xff), char((v >> 8) & 0xff), char(v & 0xff)};
}
std::string idx(const std::vector<uint32_t>& dims, const std::string& data, char type = 0x08) {
  std::string s = {0, 0, type, char(dims.size())};
  for (uint32_t d : dims) s += be32(d);
  return s + data;
}
std::string images(uint32_t n, uint32_t rows = 28, uint32_t cols = 28) {
  std::string px(size_t(n) * rows * cols, '\0');
  for (size_t i = 0; i < px.size(); ++i) px[i] = char(i * 7 % 256);
  return idx({n, rows, cols}, px);
}
std::string labels(uint32_t n) {
  std::string l(n, '\0');
  for (uint32_t i = 0; i < n; ++i) l[i] = char(i % 10);
  return idx({n}, l);
}

std::string read_error(const fs::path& file, int rank) {
  std::vector<int64_t> dims;
  std::string msg = error_of([&] { read_idx(file.string(), rank, dims); });
  CHECK_HAS(msg, file.string());
  return msg;
}

}  // namespace

TEST_CASE("Debian's Fashion-MNIST files pass the strict reader") {
  std::vector<int64_t> dims;
  std::vector<uint8_t> l = read_idx(kData + "/t10k-labels-idx1-ubyte.gz", 1, dims);
  CHECK(dims == std::vector<int64_t>{10000});
  CHECK(l.size() == 10000);
  // Several gzip members, as gzip allows, read as one stream.
  const fs::path dir = temp_dir("members");
  const std::string plain = labels(10);
  spit(dir / "l", gzip(plain.substr(0, 5)) + gzip(plain.substr(5)));
  CHECK(read_idx((dir / "l").string(), 1, dims).size() == 10);
}

TEST_CASE("a corrupt gzip file is refused, naming it and what failed") {
  const fs::path dir = temp_dir("gzip");
  const std::string real = slurp(kData + "/t10k-labels-idx1-ubyte.gz");
  REQUIRE(real.size() > 1000);
  const fs::path file = dir / "t10k-labels-idx1-ubyte.gz";
  std::string bad = real;
  bad[bad.size() - 8] ^= 0x01;  // the CRC-32 of the trailer
  spit(file, bad);
  CHECK_HAS(read_error(file, 1), "corrupt gzip file: incorrect data check");
  bad = real;
  bad[bad.size() - 4] ^= 0x01;  // the length of the trailer
  spit(file, bad);
  CHECK_HAS(read_error(file, 1), "corrupt gzip file: incorrect length check");
  spit(file, real.substr(0, real.size() - 100));
  CHECK_HAS(read_error(file, 1), "truncated gzip file");
  spit(file, real + "trailing");
  CHECK_HAS(read_error(file, 1), "8 bytes after the end of the gzip stream are not gzip data");

  // A byte flipped in the compressed payload, found by load_fashion_mnist.
  fs::copy_file(kData + "/t10k-images-idx3-ubyte.gz", dir / "t10k-images-idx3-ubyte.gz");
  bad = real;
  bad[bad.size() / 2] ^= 0x5a;
  spit(file, bad);
  std::string msg = error_of([&] { load_fashion_mnist(dir.string(), "test"); });
  CHECK_HAS(msg, file.string());
  CHECK_HAS(msg, "corrupt gzip file");
  spit(file, real);
  std::string img = slurp(dir / "t10k-images-idx3-ubyte.gz");
  img[img.size() / 2] ^= 0x5a;
  spit(dir / "t10k-images-idx3-ubyte.gz", img);
  msg = error_of([&] { load_fashion_mnist(dir.string(), "test"); });
  CHECK_HAS(msg, (dir / "t10k-images-idx3-ubyte.gz").string());
  CHECK_HAS(msg, "corrupt gzip file");
}

TEST_CASE("IDX headers and sizes are checked, plain and gzip") {
  const fs::path dir = temp_dir("idx");
  for (bool gz : {false, true}) {
    INFO("gzip: " << gz);
    auto write = [&](const std::string& name, const std::string& plain) {
      spit(dir / name, gz ? gzip(plain) : plain);
      return dir / name;
    };
    const std::string unit = gz ? "decompressed byte" : "byte";
    std::string l = labels(10);
    std::string msg = read_error(write("short", l.substr(0, l.size() - 1)), 1);
    CHECK_HAS(msg, "truncated");
    CHECK_HAS(msg, "the header promises 10 bytes of data");
    msg = read_error(write("long", l + "x"), 1);
    CHECK_HAS(msg, unit + " 18: 1 more bytes follow the 10 bytes of data the header describes");
    CHECK_HAS(read_error(write("floats", idx({1}, "abcd", 0x0D)), 1),
              "the IDX file holds 32-bit floats; expected unsigned bytes (type 0x08)");
    CHECK_HAS(read_error(write("magic", "\x01\x02\x08\x01" + be32(1) + "x"), 1),
              "bad magic number");
    CHECK_HAS(read_error(write("rank", images(1)), 1), "expected 1 dimensions, the file has 3");
    CHECK_HAS(read_error(write("zero", idx({0}, "")), 1), "dimension 0 is 0");
    CHECK_HAS(read_error(write("huge", idx({0xffffffffu, 0xffffffffu, 0xffffffffu}, "")), 3),
              "the dimensions' product does not fit in 64 bits");
    msg = read_error(write("promise", idx({1u << 31, 1u << 31, 2}, "abc")), 3);
    CHECK_HAS(msg,
              "the header describes 9223372036854775808 bytes of data; weft reads at most "
              "4 GiB from one IDX file");
    msg = read_error(write("short", idx({1000, 28, 28}, "abc")), 3);
    CHECK_HAS(msg, "the header promises 784000 bytes of data, the file ends after 3");
    CHECK_HAS(read_error(write("header", std::string("\0\0\x08\x03\0\0", 6)), 3),
              "the file ends inside its header");
    CHECK_HAS(read_error(write("tiny", std::string("\0\0", 2)), 3), "too short for an IDX file");
  }
}

TEST_CASE("Fashion-MNIST: labels and images of a split agree; labels are classes; 28x28") {
  const fs::path dir = temp_dir("split");
  auto split = [&](const std::string& img, const std::string& lab) {
    spit(dir / "train-images-idx3-ubyte.gz", gzip(img));
    spit(dir / "train-labels-idx1-ubyte.gz", gzip(lab));
    return error_of([&] { load_fashion_mnist(dir.string(), "train"); });
  };
  spit(dir / "train-images-idx3-ubyte.gz", gzip(images(10)));
  spit(dir / "train-labels-idx1-ubyte.gz", gzip(labels(10)));
  CHECK(load_fashion_mnist(dir.string(), "train").n == 10);
  CHECK_HAS(split(images(10), labels(9)), "9 labels for the 10 images");
  std::string l = labels(10);
  l[8 + 3] = 10;
  std::string msg = split(images(10), l);
  CHECK_HAS(msg, "train-labels-idx1-ubyte.gz: decompressed byte 11: label 10 of example 3");
  CHECK_HAS(split(images(10, 27, 28), labels(10)), "expected 28x28 images, the header says 27x28");
  CHECK_HAS(error_of([&] { load_fashion_mnist(dir.string(), "validation"); }),
            "unknown split 'validation'");
}

TEST_CASE("weft train exits 2 on a corrupt data file, naming it") {
  const fs::path dir = temp_dir("train_data");
  fs::create_symlink(kData + "/train-images-idx3-ubyte.gz", dir / "train-images-idx3-ubyte.gz");
  std::string lab = slurp(kData + "/train-labels-idx1-ubyte.gz");
  lab[lab.size() - 6] ^= 0x10;  // the CRC-32 of the trailer
  spit(dir / "train-labels-idx1-ubyte.gz", lab);
  std::string out;
  CHECK(run("train " + graph("sparse_ae.json") + " --steps 1 --quiet --data " + dir.string() +
                " --out " + (dir / "run").string(),
            out) == 2);
  CHECK_HAS(out, (dir / "train-labels-idx1-ubyte.gz").string());
  CHECK_HAS(out, "incorrect data check");
}

TEST_CASE("--data reads MNIST's IDX files as distributed: gzipped, plain, or with dotted names") {
  // MNIST's four files have Fashion-MNIST's names; some copies are unpacked, and some use
  // dots (train-images.idx3-ubyte). A small set of each kind: 96 training, 80 test images.
  auto write_set = [&](const fs::path& dir, const std::string& sep, bool gz) {
    fs::create_directories(dir);
    const std::string ext = gz ? ".gz" : "";
    auto put = [&](const std::string& name, const std::string& bytes) {
      spit(dir / (name + ext), gz ? gzip(bytes) : bytes);
    };
    put("train-images" + sep + "idx3-ubyte", images(96));
    put("train-labels" + sep + "idx1-ubyte", labels(96));
    put("t10k-images" + sep + "idx3-ubyte", images(80));
    put("t10k-labels" + sep + "idx1-ubyte", labels(80));
  };
  const fs::path root = temp_dir("mnist");
  const std::string g = graph("sources/001_ae.json");  // batch 32
  for (auto [name, sep, gz] : {std::tuple{"plain", "-", false}, std::tuple{"gzip", "-", true},
                               std::tuple{"dotted", ".", false}}) {
    INFO(name);
    const fs::path dir = root / name;
    write_set(dir, sep, gz);
    std::string out;
    REQUIRE(run("train " + g + " --steps 2 --quiet --data " + dir.string() + " --out " +
                    (dir / "run").string(),
                out) == 0);
    // The evaluation reads the 80 test images written above, not Fashion-MNIST's 10,000.
    REQUIRE(run("eval " + g + " --data " + dir.string() + " --checkpoint " +
                    (dir / "run" / "checkpoint.safetensors").string(),
                out) == 0);
    CHECK_HAS(out, "test split: 2 batches of 32 (64 examples; the last 16 left out)");
    CHECK_HAS(out, "recon_error");
  }
  // A folder without the files says which names it looked for.
  std::string out;
  CHECK(run("train " + g + " --steps 1 --quiet --data " + root.string() + " --out " +
                (root / "run").string(),
            out) == 2);
  CHECK_HAS(out, (root / "train-images-idx3-ubyte.gz").string());
  CHECK_HAS(out, "also looked for train-images-idx3-ubyte and train-images.idx3-ubyte");
}

// Plugins through the C ABI: the example plugin's ops checked like built-in ones, its fake
// device, the refusals (each leaving the registry as it was), a kernel failing at run
// time, and the runner's --plugin, WEFT_PLUGIN_PATH and "requires".
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/device.h"
#include "runtime/executor.h"
#include "runtime/gradcheck.h"
#include "runtime/graph.h"
#include "runtime/plugin.h"
#include "runtime/rng.h"
#include "tests/test_util.h"

using namespace weft;
namespace fs = std::filesystem;

namespace {
void ensure_example() {
  if (!find_plugin("weft-example")) load_plugin(WEFT_EXAMPLE_PLUGIN);
}
std::string broken(const std::string& kind) {
  return std::string(WEFT_BROKEN_DIR) + "/libbroken_" + kind + ".so";
}

int run(const std::string& cmd, std::string& out) { return test::run_command(cmd, out); }
}  // namespace

TEST_CASE("the example plugin's ops register with their origin and pass the op checks") {
  ensure_example();
  const LoadedPlugin* p = find_plugin("weft-example");
  REQUIRE(p);
  CHECK(p->version == "1.0");
  for (auto name : {"minibatch_stddev", "pixel_norm", "pixel_norm_backward"}) {
    const OpDef* d = Registry::get().find(name);
    REQUIRE_MESSAGE(d, name);
    CHECK(d->origin_name == "plugin weft-example");
    for (auto& r : check_gradients(*d)) {
      INFO(r.op, " ", r.what);
      CHECK(r.worst <= r.tolerance);
    }
    for (auto& r : check_f32(*d)) {
      INFO(r.op, " ", r.what);
      CHECK(r.worst <= r.tolerance);
    }
  }
  // minibatch_stddev's gradient is a subgraph of weft ops: checked at second order too.
  bool second = false;
  for (auto& r : check_gradients(*Registry::get().find("minibatch_stddev")))
    second = second || r.what.rfind("grad order 2", 0) == 0;
  CHECK(second);
}

TEST_CASE("a plugin device: allocation, copies and a kernel on device memory") {
  ensure_example();
  const DeviceDef* dev = nullptr;
  for (auto& d : devices())
    if (d.name == "host-fake") dev = &d;
  REQUIRE(dev);
  CHECK(dev->plugin == "weft-example");
  Tensor x(DType::f32, {2, 3, 2, 2});
  for (int64_t i = 0; i < x.numel(); ++i) x.set(i, 2 * uniform01(5, uint64_t(i)) - 1);
  const Device fake{dev->kind, 0};
  Tensor dx = zeros_on(fake, DType::f32, x.shape()), dy = zeros_on(fake, DType::f32, x.shape());
  CHECK(dx.device().kind == dev->kind);
  upload(x, dx);
  CHECK(std::memcmp(on_host(dx).raw(), x.raw(), x.bytes()) == 0);

  const OpDef* pn = Registry::get().find("pixel_norm");
  KernelInfo info{"pn",        pn->complete_attrs(json::object()),
                  {x.shape()}, {x.shape()},
                  DType::f32,  Device{dev->kind, 0}};
  std::unique_ptr<Kernel> k;
  for (auto& e : pn->kernel_list) {
    std::string why;
    if (e.device_kind == dev->kind && e.dtype == DType::f32) k = e.make(info, why);
  }
  REQUIRE(k);
  RunContext ctx;
  KernelArgs a{{&dx}, {&dy}, &ctx, 0};
  k->run(a);
  Tensor y = on_host(dy);
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t p = 0; p < 4; ++p) {  // each position's channel vector has mean square 1
      double m = 0;
      for (int64_t c = 0; c < 3; ++c) m += std::pow(y.at((n * 3 + c) * 4 + p), 2);
      CHECK(m / 3 == doctest::Approx(1).epsilon(1e-4));
    }
}

TEST_CASE("broken plugins are refused with a clear message and leave nothing behind") {
  ensure_example();
  const size_t before = Registry::get().all().size(), plugins = loaded_plugins().size();
  struct Case {
    const char* kind;
    const char* message;
  } cases[] = {
      {"not_a_plugin",
       "not a weft plugin: it does not export weft_plugin_describe and weft_plugin_init"},
      {"abi", "was built for plugin ABI 1, this weft speaks ABI 2: rebuild it"},
      {"size", "an op whose weft_op_def is 8 bytes, smaller than ABI 2's"},
      {"duplicate", "op 'relu' is already defined (built-in)"},
      {"schema", "attribute 'z' has type \"complex\""},
      {"gradient", "the gradient of op broken_gradient names unknown op 'no_such_op'"},
      {"partial", "op name 'Partial Bad' is not snake_case"},
  };
  for (auto& c : cases) {
    INFO(c.kind);
    try {
      load_plugin(broken(c.kind));
      FAIL("loaded");
    } catch (const Error& e) {
      CHECK(e.file() == broken(c.kind));
      CHECK_MESSAGE(e.message().find(c.message) != std::string::npos, e.message());
    }
  }
  CHECK_THROWS_WITH(load_plugin("/nonexistent/libnothing.so"),
                    doctest::Contains("cannot load the plugin"));
  CHECK_THROWS_WITH(load_plugin(WEFT_EXAMPLE_PLUGIN),
                    doctest::Contains("plugin 'weft-example' is already loaded"));
  CHECK(Registry::get().all().size() == before);  // all or nothing: no partial_ok either
  CHECK(Registry::get().find("partial_ok") == nullptr);
  CHECK(loaded_plugins().size() == plugins);
}

TEST_CASE("a plugin kernel's error at run time is reported, and the process goes on") {
  if (!find_plugin("weft-broken-kernel-error")) load_plugin(broken("kernel_error"));
  Graph g;
  Builder b(g);
  PlanOptions opt;
  Val x = b.input("x", {Dim(3)});
  opt.bindings["x"] = Tensor(DType::f32, {3});
  Val y = b.op("always_fails", {x}, json::object(), "doomed");
  auto plan = compile_plan(g, {y.id}, opt);
  CHECK_THROWS_WITH(
      run_plan(*plan, RunContext{}, false),
      "node 'doomed': kernel 'cpu' of op always_fails (plugin weft-broken-kernel-error) "
      "failed: the kernel was asked to fail");
  Val z = b.op("relu", {x});
  auto ok = compile_plan(g, {z.id}, opt);
  CHECK_NOTHROW(run_plan(*ok, RunContext{}, false));
}

TEST_CASE("a plugin kernel that fails stops the run even when its node is only logged") {
  fs::path dir = fs::temp_directory_path() / "weft_test_logged_failure";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path g = dir / "g.json";
  std::ofstream(g) << R"({
  "weft": 1,
  "data": {"dataset": "fashion-mnist", "split": "train"},
  "inputs": {"x": {"shape": ["B", 784], "from": "data.images"}},
  "nets": {"E": {"in": ["x"], "layers": [{"op": "linear", "units": 8}, {"op": "sigmoid"}]}},
  "nodes": [
    {"id": "code", "call": "E", "in": ["x"]},
    {"id": "loss", "op": "mean", "in": ["code"]},
    {"id": "doomed", "op": "mean", "in": [{"op": "always_fails", "in": ["code"]}]}
  ],
  "train": {"batch": 8, "steps": 3, "log": ["doomed"],
            "phases": [{"minimize": "loss", "params": ["E"], "optimizer": {"sgd": {"lr": 0.1}}}]}
})";
  std::string out;
  CHECK(run(std::string(WEFT_BINARY) + " train " + g.string() + " --quiet --plugin " +
                broken("kernel_error") + " --out " + (dir / "run").string(),
            out) == 2);
  CHECK(out.find("kernel 'cpu' of op always_fails (plugin weft-broken-kernel-error) failed: the "
                 "kernel was asked to fail") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "run" / "checkpoint.safetensors"));
}

TEST_CASE("the runner: --plugin, WEFT_PLUGIN_PATH, requires, ops and gradcheck") {
  const std::string w = WEFT_BINARY, lib = WEFT_EXAMPLE_PLUGIN;
  const std::string graph = std::string(WEFT_SOURCE_DIR) + "/graphs/dcgan_mbstd.json";
  std::string out;
  CHECK(run(w + " check " + graph, out) == 2);
  CHECK(out.find("/requires/0: the graph requires plugin 'weft-example', which is not loaded: pass "
                 "--plugin PATH") != std::string::npos);

  fs::path dir = fs::temp_directory_path() / "weft_test_mbstd";
  fs::remove_all(dir);
  CHECK(run(w + " train " + graph + " --plugin " + lib + " --steps 4 --quiet --out " + dir.string(),
            out) == 0);
  CHECK(fs::exists(dir / "checkpoint.safetensors"));
  CHECK(run("WEFT_PLUGIN_PATH=" + lib + " " + w + " check " + graph, out) == 0);
  CHECK(out.find("minibatch_stddev") != std::string::npos);

  CHECK(run(w + " ops --plugin " + lib, out) == 0);
  CHECK(out.find("minibatch_stddev(x) -> y  [plugin weft-example 1.0, " + lib) !=
        std::string::npos);
  CHECK(run(w + " gradcheck --plugin " + lib + " --op minibatch_stddev", out) == 0);
  CHECK(out.find("ok   minibatch_stddev grad order 2") != std::string::npos);
  CHECK(run(w + " ops --plugin " + broken("abi"), out) == 2);
  CHECK(out.find("built for plugin ABI 1,") != std::string::npos);
}

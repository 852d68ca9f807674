// Plans on a plugin device, proven on the example plugin's host-fake device: its memory is
// host memory, its stream defers every kernel and copy until weft syncs, and its kernels
// are weft's own CPU kernels borrowed through the ABI. A training step placed there must
// therefore equal the CPU's bit for bit, and what crosses between host and device is
// counted on the device's side.
#include <dlfcn.h>
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "plugins/example/fake_device.h"
#include "runtime/device.h"
#include "runtime/gradcheck.h"
#include "runtime/kernels.h"
#include "runtime/model.h"
#include "runtime/plan.h"
#include "runtime/plugin.h"
#include "runtime/trainer.h"
#include "tests/test_util.h"

using namespace weft;
using test::run_command;
using test::slurp;
namespace fs = std::filesystem;

namespace {

Device fake() {
  if (!find_plugin("weft-example")) load_plugin(WEFT_EXAMPLE_PLUGIN);
  return device_named("host-fake");
}

// The device's own counters, from the loaded library.
const weft_example_fake_stats_t& stats() {
  fake();
  void* lib = dlopen(WEFT_EXAMPLE_PLUGIN, RTLD_NOW | RTLD_NOLOAD);
  REQUIRE(lib);
  auto fn = reinterpret_cast<const weft_example_fake_stats_t* (*)()>(
      dlsym(lib, "weft_example_fake_stats"));
  REQUIRE(static_cast<bool>(fn));
  dlclose(lib);  // RTLD_NOLOAD took a reference; the plugin stays loaded
  return *fn();
}

Model model(const std::string& name) {
  return load_model(std::string(WEFT_SOURCE_DIR) + "/graphs/" + name);
}

SessionOptions on(Device d) {
  SessionOptions o;
  o.device = d;
  return o;
}

std::string bytes_of(const Tensor& t) {
  Tensor h = on_host(t);
  return std::string(static_cast<const char*>(h.raw()), h.bytes());
}

// Every parameter and optimizer state tensor of `a` equals `b`'s byte for byte.
void check_same_state(Session& a, Session& b) {
  for (auto& [name, p] : a.params) {
    INFO(name);
    CHECK(bytes_of(p) == bytes_of(b.params.at(name)));
  }
  REQUIRE(a.phases.size() == b.phases.size());
  for (size_t pi = 0; pi < a.phases.size(); ++pi) {
    auto& sa = a.phases[pi].opt->state();
    auto& sb = b.phases[pi].opt->state();
    REQUIRE(sa.size() == sb.size());
    for (size_t k = 0; k < sa.size(); ++k) {
      INFO(sa[k].first);
      CHECK(bytes_of(sa[k].second) == bytes_of(sb[k].second));
    }
  }
}

void check_same_values(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("value ", i, ": ", a[i], " and ", b[i]);
    CHECK(
        (std::memcmp(&a[i], &b[i], sizeof(double)) == 0 || (std::isnan(a[i]) && std::isnan(b[i]))));
  }
}

}  // namespace

TEST_CASE("dcgan and mlp_gan trained on the fake device equal the CPU bit for bit") {
  const Device dev = fake();
  for (const char* graph : {"mlp_gan.json", "dcgan.json"}) {
    INFO(graph);
    Model m = model(graph);
    Session cpu(m, on(Device::cpu())), dv(m, on(dev));
    for (auto& ph : dv.phases) CHECK(ph.bound.plan->device == dev);
    for (int step = 0; step < 3; ++step) check_same_values(cpu.train_step(), dv.train_step());
    check_same_state(cpu, dv);
    // Samples come back from the device as they are on the CPU.
    CHECK(bytes_of(cpu.evaluate("samples", 16, "test", 0)) ==
          bytes_of(dv.evaluate("samples", 16, "test", 0)));
  }
}

TEST_CASE("a step on the device copies in only its inputs and copies out only its scalars") {
  const Device dev = fake();
  Model m = model("mlp_gan.json");
  Session s(m, on(dev));
  s.train_step();  // the first step's setup is not what is counted
  const weft_example_fake_stats_t before = stats();
  const Traffic t0 = device_traffic();
  const int steps = 4;
  for (int i = 0; i < steps; ++i) s.train_step();
  const weft_example_fake_stats_t after = stats();
  const Traffic t1 = device_traffic();
  // In: each phase's data inputs, every step (D reads the images x; the noise z, which both
  // phases read, is drawn on the device by its noise_normal kernel).
  int64_t in_copies = 0, in_bytes = 0;
  for (auto& ph : s.phases)
    for (auto& name : ph.bound.used) {
      if (ph.bound.noise.count(name)) continue;
      in_copies += ph.spec.repeat;
      in_bytes += ph.spec.repeat * int64_t(ph.bound.inputs.at(name).bytes());
    }
  CHECK(s.phases[0].bound.noise.count("z") == 1);
  CHECK(in_copies == 1);
  CHECK(after.copies_from_host - before.copies_from_host == steps * in_copies);
  CHECK(after.bytes_from_host - before.bytes_from_host == steps * in_bytes);
  // Out: each phase's loss and gradient norm (its sum of squares) plus the logged values.
  const int64_t out_copies = 2 * int64_t(s.phases.size()) + int64_t(m.train.log.size());
  CHECK(after.copies_to_host - before.copies_to_host == steps * out_copies);
  // One wait per step, when its scalars are read.
  CHECK(after.syncs - before.syncs == steps);
  // weft's own count agrees with the device's.
  CHECK(t1.copies_in - t0.copies_in == steps * in_copies);
  CHECK(t1.copies_out - t0.copies_out == steps * out_copies);
  // Nothing is allocated while training: every buffer was made with the plans.
  CHECK(after.allocations == before.allocations);
  CHECK(after.launches > before.launches);
}

TEST_CASE("kernel state and device memory live as long as the plans and the session") {
  fake();
  const weft_example_fake_stats_t before = stats();
  {
    Model m = model("mlp_gan.json");
    Session s(m, on(fake()));
    s.train_step();
    CHECK(stats().live_states > before.live_states);
    CHECK(stats().live_allocations > before.live_allocations);
  }
  CHECK(stats().live_states == before.live_states);
  CHECK(stats().live_allocations == before.live_allocations);
}

TEST_CASE("a run resumes across devices: fake to CPU and CPU to fake equal four steps on one") {
  const Device dev = fake();
  Model m = model("mlp_gan.json");
  const fs::path dir = fs::temp_directory_path() / "weft_device_resume";
  fs::create_directories(dir);
  Session cpu(m, on(Device::cpu()));
  for (int i = 0; i < 4; ++i) cpu.train_step();
  for (Device first : {dev, Device::cpu()}) {
    const Device second = first == dev ? Device::cpu() : dev;
    INFO("from ", device_name(first), " to ", device_name(second));
    Session a(m, on(first));
    a.train_step();
    a.train_step();
    a.save_checkpoint((dir / "ck.safetensors").string());
    Session b(m, on(second));
    b.load_checkpoint((dir / "ck.safetensors").string());
    b.train_step();
    b.train_step();
    CHECK(b.step == 4);
    check_same_state(cpu, b);
  }
}

TEST_CASE("placement refusals: an op without a kernel there, an unknown or unavailable device") {
  const Device dev = fake();
  // sparse_ae's KL penalty needs ops the fake device has no kernel for: the error lists them.
  Model m = model("sparse_ae.json");
  try {
    Session s(m, on(dev));
    FAIL("a plan was placed on a device without kernels for its ops");
  } catch (const Error& e) {
    CHECK_MESSAGE(e.message() ==
                      "device host-fake has no f32 kernel for ops log (node "
                      "'sparsity/log'), sigmoid_backward (node 'sigmoid_backward'), "
                      "sign (node 'sign'), square (node 'recon_error/square'): a plan "
                      "runs wholly on one device; run this graph on the CPU, or give "
                      "the device's plugin kernels for these ops",
                  e.message());
    CHECK(e.file() == m.file);
    CHECK_FALSE(e.where().empty());
  }
  try {
    device_named("tpu");
    FAIL("an unknown device was accepted");
  } catch (const Error& e) {
    CHECK(e.message() ==
          "no device named \"tpu\" (there are: cpu, host-fake); a plugin that registers it must "
          "be loaded with --plugin");
  }
  setenv("WEFT_EXAMPLE_FAKE_UNAVAILABLE", "no fake accelerator in this machine", 1);
  try {
    device_named("host-fake");
    FAIL("an unavailable device was accepted");
  } catch (const Error& e) {
    CHECK(e.message() ==
          "device host-fake (plugin weft-example) cannot be used: no fake accelerator in this "
          "machine");
  }
  unsetenv("WEFT_EXAMPLE_FAKE_UNAVAILABLE");
}

TEST_CASE("the runner: --device trains, resumes on the CPU, and names what is missing") {
  const std::string w = WEFT_BINARY, lib = WEFT_EXAMPLE_PLUGIN,
                    graph = std::string(WEFT_SOURCE_DIR) + "/graphs/mlp_gan.json";
  const fs::path dir = fs::temp_directory_path() / "weft_device_runner";
  fs::remove_all(dir);
  std::string out;
  CHECK(run_command(w + " train " + graph + " --device host-fake --steps 2 --quiet --out " +
                        (dir / "a").string(),
                    out) == 2);
  CHECK(out.find("no device named \"host-fake\" (there are: cpu)") != std::string::npos);
  CHECK(run_command(w + " train " + graph + " --plugin " + lib +
                        " --device host-fake --steps 3 --quiet " + "--out " + (dir / "a").string(),
                    out) == 0);
  CHECK(run_command(
            w + " train " + graph + " --steps 6 --quiet --resume --out " + (dir / "a").string(),
            out) == 0);
  CHECK(run_command(w + " train " + graph + " --steps 6 --quiet --out " + (dir / "b").string(),
                    out) == 0);
  CHECK(slurp(dir / "a" / "checkpoint.safetensors") == slurp(dir / "b" / "checkpoint.safetensors"));
  CHECK(run_command(w + " check " + graph + " --plugin " + lib + " --device host-fake", out) == 0);
  CHECK(out.find("placement on host-fake") != std::string::npos);
  CHECK(out.find("kernels: weft-example:host-fake") != std::string::npos);
}

TEST_CASE("the device sweep checks every kernel the device has, and catches a wrong one") {
  const Device dev = fake();
  int cases = 0;
  for (const OpDef* d : Registry::get().all()) {
    if (!has_kernel(*d, dev, DType::f32)) continue;
    for (auto& r : check_device(*d, dev)) {
      INFO(r.op, " ", r.what, " ", r.problem);
      CHECK(r.ok());
      CHECK(r.declined.empty());
      ++cases;
    }
  }
  CHECK(cases > 60);
  std::set<std::string> trainer_ops;
  for (auto& r : check_device_trainer_ops(dev)) {
    INFO(r.op, " ", r.what);
    CHECK(r.ok());
    trainer_ops.insert(r.op);
  }
  CHECK(trainer_ops == std::set<std::string>{"adam_update", "noise_normal", "noise_uniform",
                                             "rmsprop_update", "sgd_update"});

  // square's CPU kernels, and on the device a kernel that is off by 1%: the sweep must fail.
  OpDef wrong("test_wrong_on_device");
  wrong.input("x")
      .output("y")
      .shape([](const ShapeContext& c) { return std::vector<Shape>{c.in[0]}; })
      .kernels(Registry::get().find("square")->kernel_list)
      .kernel(dev.kind, DType::f32, "wrong",
              fn_kernel([dev](const KernelInfo&, const KernelArgs& a) {
                sync_device(dev);  // the device's queued copies first: its memory is the host's
                for (int64_t i = 0; i < a.out[0]->numel(); ++i) {
                  const float x = a.in[0]->data<float>()[i];
                  a.out[0]->data<float>()[i] = 1.01f * x * x;
                }
              }))
      .test({.cases = {{{4, 7}}}});
  ScopedOp scoped(wrong);
  auto r = check_device(scoped.def(), dev);
  REQUIRE(r.size() == 1);
  CHECK(r[0].worst > 1e-3);
  CHECK_FALSE(r[0].ok());
}

// Every graph shipped under graphs/ (and its subfolders) loads, validates, compiles its
// training plans and trains a few steps on real Fashion-MNIST with finite losses, so a new
// model file is covered the moment it is added. Graphs that require the example plugin get
// it loaded first.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <vector>

#include "runtime/files.h"
#include "runtime/model.h"
#include "runtime/plugin.h"
#include "runtime/threading.h"
#include "runtime/trainer.h"
#include "tests/test_util.h"

using namespace weft;
namespace fs = std::filesystem;

TEST_CASE("every graph under graphs/ loads and trains a few steps") {
  apply_threads({0, false});
  std::vector<fs::path> files;
  for (auto& e : fs::recursive_directory_iterator(std::string(WEFT_SOURCE_DIR) + "/graphs"))
    if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 4);
  for (const fs::path& file : files) {
    INFO(file.string());
    const json text = json::parse(std::ifstream(file));
    for (auto& name : text.value("requires", json::array())) {
      REQUIRE_MESSAGE(name == "weft-example", "no test plugin provides ", name.dump());
      if (!find_plugin("weft-example")) load_plugin(WEFT_EXAMPLE_PLUGIN);
    }
    Model m = load_model(file.string());
    REQUIRE_FALSE(m.train.phases.empty());
    apply_overrides(m, {.steps = 3, .sample_every = 1000, .checkpoint_every = 1000});
    const fs::path out = fs::temp_directory_path() / ("weft_graphs_" + file.stem().string());
    fs::remove_all(out);
    TrainOptions to;
    to.out_dir = out.string();
    to.quiet = true;
    auto s = run_training(m, SessionOptions{}, to);  // throws on a loss that is not finite
    CHECK(s->step == 3);
    CHECK(load_safetensors((out / "checkpoint.safetensors").string()).metadata.at("step") == "3");
    fs::remove_all(out);
  }
}

// A graph with a `grad` node is differentiated twice when it trains: once by the grad node,
// then again by training. Every op in it must have its gradient rule checked at second
// order (tests/test_ops.cpp runs the checks), or the penalty's gradient is unverified.
TEST_CASE("every op of a graph that differentiates twice has a second-order gradient check") {
  int graphs_with_grad = 0;
  for (auto& e : fs::recursive_directory_iterator(std::string(WEFT_SOURCE_DIR) + "/graphs")) {
    if (!e.is_regular_file() || e.path().extension() != ".json") continue;
    const std::string text = weft::test::slurp(e.path());
    if (text.find(R"("op": "grad")") == std::string::npos) continue;
    ++graphs_with_grad;
    Model m = load_model(e.path().string());
    std::set<std::string> ops;
    for (const Node& n : m.graph.nodes)
      if (!n.def->is_source) ops.insert(n.op());
    for (const std::string& op : ops) {
      INFO(e.path().filename().string(), ": op ", op);
      const OpDef* d = Registry::get().find(op);
      REQUIRE(d != nullptr);
      REQUIRE(d->test_spec != nullptr);
      CHECK(d->test_spec->order >= 2);
    }
  }
  CHECK(graphs_with_grad >= 1);
}

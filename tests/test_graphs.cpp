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
    if (e.is_regular_file() && test::is_graph_file(e.path())) files.push_back(e.path());
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

// A graph with a `grad` node is differentiated twice where the grad node differentiates:
// training differentiates the gradient's nodes again. Every op on such a path must have its
// gradient rule checked at second order (tests/test_ops.cpp runs the checks), or the
// penalty's gradient is unverified. The grad node's expansion names its nodes "<id>/..."
// and stamps each with the JSON pointer of the node it differentiates; the original nodes
// with those pointers are the ones differentiated twice.
static void grad_ids(const json& j, std::set<std::string>& ids) {
  if (j.is_object() && j.value("op", "") == "grad") {
    REQUIRE_MESSAGE(j.contains("id"), "give each grad node an id: ", j.dump());
    ids.insert(j["id"].get<std::string>());
  }
  if (j.is_structured())
    for (auto& v : j) grad_ids(v, ids);
}

TEST_CASE("every op that a graph differentiates twice has a second-order gradient check") {
  int checked = 0;
  for (auto& e : fs::recursive_directory_iterator(std::string(WEFT_SOURCE_DIR) + "/graphs")) {
    if (!e.is_regular_file() || !test::is_graph_file(e.path())) continue;
    std::set<std::string> ids;
    grad_ids(json::parse(std::ifstream(e.path())), ids);
    if (ids.empty()) continue;
    Model m = load_model(e.path().string());
    auto emitted = [&](const Node& n) {
      for (auto& id : ids)
        if (n.name.rfind(id + "/", 0) == 0) return true;
      return false;
    };
    std::set<std::string> wheres, ops;
    for (const Node& n : m.graph.nodes)
      if (emitted(n)) wheres.insert(n.where);
    for (const Node& n : m.graph.nodes)
      if (!emitted(n) && !n.def->is_source && wheres.count(n.where)) ops.insert(n.op());
    CHECK(!ops.empty());
    for (const std::string& op : ops) {
      INFO(e.path().filename().string(), ": op ", op);
      const OpDef* d = Registry::get().find(op);
      REQUIRE(d != nullptr);
      REQUIRE(d->test_spec != nullptr);
      CHECK(d->test_spec->order >= 2);
      ++checked;
    }
  }
  CHECK(checked >= 5);
}

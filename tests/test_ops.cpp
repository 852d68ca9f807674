// The op sweep: every registered op has a test spec; every gradient rule matches central
// finite differences in f64 (and at second order where the spec says so); every f32
// kernel matches the f64 reference.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "runtime/autodiff.h"
#include "runtime/gradcheck.h"

using namespace weft;

namespace {
// Ops tested elsewhere: graph sources have no kernel, and `grad` is autodiff itself
// (tests/test_autodiff.cpp).
const std::set<std::string> kElsewhere = {"input", "param", "constant", "grad"};
}  // namespace

TEST_CASE("every op has a test spec") {
  for (const OpDef* d : Registry::get().all()) {
    if (kElsewhere.count(d->name)) continue;
    CHECK_MESSAGE(d->test_spec != nullptr, "op ", d->name, " has no .test({...}) spec");
  }
}

TEST_CASE("gradient rules match finite differences in f64") {
  int second_order_ops = 0;
  for (const OpDef* d : Registry::get().all()) {
    if (kElsewhere.count(d->name) || !d->test_spec) continue;
    bool any_second = false;
    for (auto& r : check_gradients(*d)) {
      INFO(r.op, " ", r.what);
      CHECK(r.worst <= r.tolerance);
      any_second = any_second || r.what.rfind("grad order 2", 0) == 0;
    }
    second_order_ops += any_second;
  }
  CHECK(second_order_ops >= 5);
}

TEST_CASE("f32 kernels match the f64 reference") {
  for (const OpDef* d : Registry::get().all()) {
    if (kElsewhere.count(d->name) || !d->test_spec) continue;
    for (auto& r : check_f32(*d)) {
      INFO(r.op, " ", r.what, " kernels: ", r.kernels);
      CHECK(r.worst <= r.tolerance);
    }
  }
}

TEST_CASE("a gradient check fails on a wrong gradient rule") {
  // The checker itself must be able to fail: an op whose rule is off by a factor of 2.
  OpDef bad("test_bad_square");
  bad.input("x")
      .output("y")
      .shape([](const ShapeContext& c) { return std::vector<Shape>{c.in[0]}; })
      .kernels(Registry::get().find("square")->kernel_list)
      .grad([](GradContext& g) { return std::vector<Val>{g.grad_output() * g.input(0)}; })
      .test({.cases = {{{3}}}});
  ScopedOp scoped(bad);  // the sweep over the registry must not meet this op
  auto r = check_gradients(scoped.def());
  REQUIRE(r.size() == 1);
  CHECK(r[0].worst > 0.1);
}

TEST_CASE("weft ops lists every op defined under ops/") {
  // Static registration can be dropped silently by a linker; this notices.
  std::set<std::string> defined;
  std::regex def(R"(WEFT_OP\((\w+)\))");
  for (auto& p : std::filesystem::directory_iterator(std::string(WEFT_SOURCE_DIR) + "/ops")) {
    std::ifstream f(p.path());
    std::stringstream ss;
    ss << f.rdbuf();
    std::string text = ss.str();
    for (std::sregex_iterator it(text.begin(), text.end(), def), end; it != end; ++it)
      defined.insert((*it)[1]);
  }
  REQUIRE(defined.size() >= 40);
  std::string log = (std::filesystem::temp_directory_path() / "weft_ops.txt").string();
  REQUIRE(std::system((std::string(WEFT_BINARY) + " ops --all > " + log).c_str()) == 0);
  std::ifstream f(log);
  std::set<std::string> listed;
  for (std::string line; std::getline(f, line);)
    if (!line.empty() && line[0] != ' ') listed.insert(line.substr(0, line.find('(')));
  for (auto& name : defined) {
    CHECK_MESSAGE(Registry::get().find(name) != nullptr, name);
    CHECK_MESSAGE(listed.count(name), name, " is missing from weft ops");
  }
}

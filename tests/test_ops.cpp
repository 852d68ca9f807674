// The op sweep: every registered op has a test spec; every gradient rule matches central
// finite differences in f64 (and at second order where the spec says so); every f32
// kernel matches the f64 reference, and dispatch picks the fast kernel a spec expects.
// Ops made up here are registered for one test case only (ScopedOp), so the sweep never
// meets them, in whatever order the cases run.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "runtime/autodiff.h"
#include "runtime/gradcheck.h"
#include "runtime/kernels.h"
#include "runtime/threading.h"

using namespace weft;

namespace {
// Ops tested elsewhere: graph sources have no kernel, `grad` is autodiff itself
// (tests/test_autodiff.cpp), and the optimizers' updates are checked against PyTorch's
// formulas written out in f64 (tests/test_executor.cpp), and the noise ops draw what the
// input sources draw (tests/test_device.cpp).
const std::set<std::string> kElsewhere = {
    "input",       "param",          "constant",    "grad",         "sgd_update",
    "adam_update", "rmsprop_update", "sum_squares", "noise_normal", "noise_uniform"};
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
      CHECK_MESSAGE(r.problem.empty(), r.problem);
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

// square's schema and kernels under another name, for checks that must fail.
static OpDef square_like(const std::string& name) {
  OpDef d(name);
  d.input("x")
      .output("y")
      .shape([](const ShapeContext& c) { return std::vector<Shape>{c.in[0]}; })
      .kernels(Registry::get().find("square")->kernel_list);
  return d;
}

TEST_CASE("the f32 check measures every candidate kernel, not only the one dispatch picks") {
  OpDef d = square_like("test_wrong_candidate");
  // Dispatch never reaches it (oneDNN and the reference come first), yet it is checked.
  d.kernel(0, DType::f32, "wrong", fn_kernel([](const KernelInfo&, const KernelArgs& a) {
             for (int64_t i = 0; i < a.out[0]->numel(); ++i)
               a.out[0]->set(i, 2 * a.in[0]->at(i) * a.in[0]->at(i));
           }),
           -1)
      .test({.cases = {{{4, 7}}}, .expect_kernel = "onednn"});
  ScopedOp scoped(d);
  std::map<std::string, double> worst;
  for (auto& r : check_f32(scoped.def())) {
    CHECK_MESSAGE(r.problem.empty(), r.problem);
    worst[r.what] = r.worst;
  }
  CHECK(worst.at("f32 vs f64 [4, 7]") < 1e-6);  // oneDNN, picked
  CHECK(worst.at("f32 vs f64 [4, 7] with kernel reference") < 1e-6);
  CHECK(worst.at("f32 vs f64 [4, 7] with kernel wrong") > 0.1);
}

TEST_CASE("the f32 check fails when dispatch passes the expected kernel over") {
  OpDef d = square_like("test_declining");
  // square's oneDNN kernel gives way to one that declines every node.
  std::erase_if(d.kernel_list, [](const KernelEntry& e) { return e.name == "onednn"; });
  d.kernel(
       0, DType::f32, "onednn",
       [](const KernelInfo&, std::string& why_not) -> std::unique_ptr<Kernel> {
         why_not = "this layout is not supported";
         return nullptr;
       },
       1)
      .test({.cases = {{{4, 7}}, {{3}}}, .expect_kernel = "onednn", .declined_cases = {1}});
  ScopedOp scoped(d);
  auto r = check_f32(scoped.def());
  REQUIRE(r.size() == 2);
  CHECK(r[0].worst < 1e-6);
  CHECK(r[0].kernels == "test_declining:reference");
  CHECK(r[0].problem ==
        "dispatch picked 'reference', not 'onednn' as the test spec expects: no f32 kernel for "
        "op test_declining on cpu: onednn: this layout is not supported");
  CHECK(r[1].problem.empty());  // a case the spec lists as declined
  CHECK_FALSE(r[0].ok());
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

TEST_CASE("sum_to_like over any axes equals a sum in f64, with the same bits on 1 and 2 threads") {
  // Large enough for the parallel paths: a convolution's bias gradient, a linear layer's, a
  // mean over the middle axis, and folded and kept axes mixed.
  struct Case {
    Dims in, like;
    bool mean;
  };
  const Case cases[] = {
      {{16, 24, 15, 17}, {1, 24, 1, 1}, false}, {{257, 300}, {1, 300}, false},
      {{64, 1100, 3}, {64, 1, 3}, true},        {{6, 5, 7, 9, 11}, {1, 5, 1, 9, 1}, false},
      {{9, 4, 1, 1000}, {9, 1, 1, 1}, true},    {{3, 40000}, {1, 1}, false}};
  const OpDef* def = Registry::get().find("sum_to_like");
  REQUIRE(def);
  const KernelEntry* entry = nullptr;
  for (auto& e : def->kernel_list)
    if (e.device_kind == 0 && e.dtype == DType::f32) entry = &e;
  REQUIRE(entry);
  for (const Case& c : cases) {
    INFO(json(c.in).dump() << " -> " << json(c.like).dump() << (c.mean ? " mean" : ""));
    Tensor x(DType::f32, c.in), like(DType::f32, c.like);
    for (int64_t i = 0; i < x.numel(); ++i) x.set(i, std::sin(0.1 * double(i)) + 0.25);
    // The f64 sum written out: every input element added to the output it folds onto.
    std::vector<double> want(size_t(like.numel()), 0.0);
    std::vector<int64_t> pos(c.in.size(), 0);
    for (int64_t i = 0; i < x.numel(); ++i) {
      int64_t o = 0;
      for (size_t a = 0; a < c.in.size(); ++a) o = o * c.like[a] + (c.like[a] == 1 ? 0 : pos[a]);
      want[size_t(o)] += x.at(i);
      for (int a = int(c.in.size()) - 1; a >= 0 && ++pos[a] == c.in[a]; --a) pos[a] = 0;
    }
    const double scale = c.mean ? double(like.numel()) / double(x.numel()) : 1.0;
    KernelInfo info{"s", {{"mean", c.mean}}, {c.in, c.like}, {c.like}};
    std::string why;
    auto k = entry->make(info, why);
    REQUIRE(k);
    std::vector<Tensor> outs;
    for (int threads : {1, 2}) {
      apply_threads({threads, false});
      Tensor y(DType::f32, c.like);
      k->run({{&x, &like}, {&y}});
      outs.push_back(std::move(y));
    }
    for (int64_t o = 0; o < like.numel(); ++o)
      CHECK(outs[0].at(o) == doctest::Approx(want[size_t(o)] * scale).epsilon(1e-5));
    CHECK(std::memcmp(outs[0].data<float>(), outs[1].data<float>(), size_t(like.numel()) * 4) == 0);
  }
}

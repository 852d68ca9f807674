// Autodiff as graph transformation: stop_gradient, missing rules, values that do not
// reach the loss, and gradients of gradients through the `grad` node.
#include <doctest/doctest.h>

#include <cmath>

#include "runtime/autodiff.h"
#include "runtime/executor.h"
#include "runtime/model.h"
#include "runtime/trainer.h"

using namespace weft;

namespace {
struct Fixture {
  Graph g;
  Builder b{g};
  PlanOptions opt;
  Fixture() { opt.dtype = DType::f64; }
  Val input(const std::string& name, std::vector<double> v) {
    Tensor t(DType::f64, {int64_t(v.size())});
    for (size_t i = 0; i < v.size(); ++i) t.set(int64_t(i), v[i]);
    opt.bindings[name] = t;
    return b.input(name, {Dim(int64_t(v.size()))});
  }
  std::vector<double> eval(ValueId v) {
    auto p = compile_plan(g, {v}, opt);
    run_plan(*p, RunContext{}, false);
    std::vector<double> r;
    for (int64_t i = 0; i < p->target(0).numel(); ++i) r.push_back(p->target(0).at(i));
    return r;
  }
};
}  // namespace

TEST_CASE("stop_gradient blocks the gradient") {
  Fixture f;
  Val x = f.input("x", {1.0, 2.0, 3.0});
  Val y = f.b.op("sum", {f.b.op("square", {x}) + f.b.op("stop_gradient", {x * x})});
  auto d = gradients(f.b, y.id, {x.id});
  auto v = f.eval(d[0]);
  CHECK(v == std::vector<double>{2.0, 4.0, 6.0});  // only the first square counts
}

TEST_CASE("a value the loss does not depend on gets a zero gradient") {
  Fixture f;
  Val x = f.input("x", {1.0, 2.0});
  Val w = f.input("w", {5.0, 6.0});
  Val y = f.b.op("sum", {x * x});
  auto d = gradients(f.b, y.id, {w.id});
  CHECK(f.eval(d[0]) == std::vector<double>{0.0, 0.0});
}

TEST_CASE("differentiating through an op without a gradient rule names the op and node") {
  OpDef nograd("test_nograd");
  nograd.input("x").output("y").shape(
      [](const ShapeContext& c) { return std::vector<Shape>{c.in[0]}; });
  ScopedOp scoped(nograd);  // outlives the graph that uses it
  Fixture f;
  Val x = f.input("x", {1.0, 2.0});
  Val y = f.b.op("sum", {f.b.op("test_nograd", {x}, json::object(), "my_node")});
  try {
    gradients(f.b, y.id, {x.id});
    FAIL("expected an error");
  } catch (const ShapeError& e) {
    CHECK(std::string(e.what()) ==
          "op test_nograd has no gradient rule, but node 'my_node' needs one");
  }
}

TEST_CASE("only scalars are differentiated") {
  Fixture f;
  Val x = f.input("x", {1.0, 2.0});
  CHECK_THROWS_WITH_AS(gradients(f.b, (x * x).id, {x.id}),
                       "can only differentiate a scalar, but 'mul' has shape [2]", ShapeError);
}

TEST_CASE("grad nodes are differentiable again (third derivative of x^4)") {
  Fixture f;
  Val x = f.input("x", {0.5, -1.5, 2.0});
  Val y = f.b.op("sum", {f.b.op("square", {f.b.op("square", {x})})});  // sum x^4
  Val d1 = f.b.op("grad", {y, x});                                     // 4 x^3
  Val d2 = f.b.op("grad", {f.b.op("sum", {d1}), x});                   // 12 x^2
  Val d3 = f.b.op("grad", {f.b.op("sum", {d2}), x});                   // 24 x
  auto v1 = f.eval(d1.id), v2 = f.eval(d2.id), v3 = f.eval(d3.id);
  double xs[] = {0.5, -1.5, 2.0};
  for (int i = 0; i < 3; ++i) {
    CHECK(v1[i] == doctest::Approx(4 * std::pow(xs[i], 3)).epsilon(1e-12));
    CHECK(v2[i] == doctest::Approx(12 * xs[i] * xs[i]).epsilon(1e-12));
    CHECK(v3[i] == doctest::Approx(24 * xs[i]).epsilon(1e-12));
  }
}

// penalty = sum((d sum(D(x)) / dx)^2): training on it differentiates D's backward pass.
static const char* kPenaltyGraph = R"({
    "weft": 1,
    "inputs": {"x": {"shape": ["B", 3], "from": {"normal": {}}}},
    "nets": {"D": {"in": ["x"], "layers": [{"op": "linear", "units": 4}, {"op": "tanh"}, {"op": "linear", "units": 1}]}},
    "nodes": [
      {"id": "d", "call": "D", "in": ["x"]},
      {"id": "dx", "op": "grad", "in": [{"op": "sum", "in": ["d"]}, "x"]},
      {"id": "penalty", "op": "sum", "in": [{"op": "square", "in": ["dx"]}]}
    ],
    "train": {"batch": 2, "phases": [{"minimize": "penalty", "params": ["D"], "optimizer": {"sgd": {"lr": 0.1}}}]}
  })";

TEST_CASE("a gradient penalty in a graph file: its parameter gradient matches finite differences") {
  Model m = parse_model(kPenaltyGraph, "penalty.json");
  CHECK(m.graph.shape(m.graph.nodes[m.graph.find("penalty")].in[0]) == Shape{Dim::B(), Dim(3)});
  SessionOptions so;
  so.dtype = DType::f64;
  m.train.seed = 3;
  Session s(m, so);
  auto& ph = s.phases[0];
  Tensor& x = ph.bound.inputs.at("x");
  for (int64_t i = 0; i < x.numel(); ++i) x.set(i, 0.3 * double(i) - 0.7);
  RunContext ctx;
  run_plan(*ph.bound.plan, ctx, false);
  std::vector<Tensor> analytic;  // copied before the finite differences rerun the plan
  for (size_t k = 0; k < ph.param_tensors.size(); ++k)
    analytic.push_back(ph.bound.plan->target(1 + k).to(DType::f64));
  double worst = 0;
  for (size_t k = 0; k < ph.param_tensors.size(); ++k) {
    Tensor p = ph.param_tensors[k];
    for (int64_t i = 0; i < p.numel(); ++i) {
      double v = p.at(i), h = 1e-6;
      p.set(i, v + h);
      run_plan(*ph.bound.plan, ctx, false);
      double up = ph.bound.plan->target(0).at(0);
      p.set(i, v - h);
      run_plan(*ph.bound.plan, ctx, false);
      double down = ph.bound.plan->target(0).at(0);
      p.set(i, v);
      double fd = (up - down) / (2 * h);
      worst = std::max(worst, std::abs(analytic[k].at(i) - fd) / std::max(1.0, std::abs(fd)));
    }
  }
  CHECK(worst < 1e-7);
}

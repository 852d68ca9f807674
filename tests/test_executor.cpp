// The executor: running independent branches side by side on TBB gives the numbers of a
// sequential run, and buffer reuse never lets a step overwrite a value still being read.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "runtime/autodiff.h"
#include "runtime/executor.h"
#include "runtime/kernels.h"
#include "runtime/optimizer.h"
#include "runtime/rng.h"
#include "runtime/threading.h"

using namespace weft;

// Counts allocations made through operator new while `counting` is set. AddressSanitizer
// brings its own operator new, so under it the count is not taken.
static std::atomic<bool> counting{false};
static std::atomic<long> allocations{0};
#ifndef __SANITIZE_ADDRESS__
#define WEFT_COUNT_ALLOCATIONS 1
void* operator new(size_t n) {
  if (counting) allocations++;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
// Defined with new's matching partner (free of malloc), which GCC cannot see through.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
#endif

namespace {
Tensor random_f32(Dims d, uint64_t key) {
  Tensor t(DType::f32, d);
  for (int64_t i = 0; i < t.numel(); ++i) t.set(i, 2 * uniform01(key, uint64_t(i)) - 1);
  return t;
}
}  // namespace

TEST_CASE("parallel execution equals sequential execution, bit for bit") {
  apply_threads({0, true});
  Graph g;
  Builder b(g);
  PlanOptions opt;
  opt.batch = 32;
  Val x = b.input("x", {Dim::B(), Dim(64)});
  opt.bindings["x"] = random_f32({32, 64}, 1);
  // Eight independent branches of different widths, joined at the end.
  Val total;
  std::vector<ValueId> weights;
  for (int k = 0; k < 8; ++k) {
    int64_t units = 16 + 8 * k;
    std::string w1 = "w1_" + std::to_string(k), w2 = "w2_" + std::to_string(k);
    Val a = b.param(w1, {Dim(units), Dim(64)}), c = b.param(w2, {Dim(1), Dim(units)});
    opt.bindings[w1] = random_f32({units, 64}, 10 + k);
    opt.bindings[w2] = random_f32({1, units}, 20 + k);
    weights.push_back(a.id);
    Val h = b.op("tanh", {b.op("linear", {x, a})});
    Val y = b.op("sum", {b.op("square", {b.op("linear", {h, c})})});
    total = total ? total + y : y;
  }
  auto grads = gradients(b, total.id, weights);
  std::vector<ValueId> targets{total.id};
  targets.insert(targets.end(), grads.begin(), grads.end());
  auto plan = compile_plan(g, targets, opt);
  CHECK(plan->buffer_bytes < plan->naive_bytes);  // buffers are reused

  RunContext ctx;
  {
    // Once compiled, a plan runs without allocating. Checked on the f64 plan, whose
    // kernels are all weft's: oneDNN 2.6's own execute() builds a small map per call.
    PlanOptions o64 = opt;
    for (auto& [k, v] : o64.bindings) v = v.to(DType::f64);
    o64.dtype = DType::f64;
    auto p64 = compile_plan(g, targets, o64);
    run_plan(*p64, ctx, false);
    counting = true;
    for (int rep = 0; rep < 5; ++rep) run_plan(*p64, ctx, false);
    counting = false;
#ifdef WEFT_COUNT_ALLOCATIONS
    CHECK(allocations == 0);
#endif
  }
  run_plan(*plan, ctx, false);
  std::vector<Tensor> expected;
  for (size_t i = 0; i < targets.size(); ++i) expected.push_back(plan->target(i).to(DType::f32));
  for (int rep = 0; rep < 50; ++rep) {
    run_plan(*plan, ctx, true);
    for (size_t i = 0; i < targets.size(); ++i)
      REQUIRE(std::memcmp(plan->target(i).raw(), expected[i].raw(), expected[i].bytes()) == 0);
  }
}

TEST_CASE("a kernel's error reaches the caller once, and the plan can run again") {
  apply_threads({0, true});
  OpDef failing("test_failing");
  failing.input("x")
      .output("y")
      .shape([](const ShapeContext& c) { return std::vector<Shape>{c.in[0]}; })
      .kernel(0, DType::f32, "reference", fn_kernel([](const KernelInfo&, const KernelArgs& a) {
                if (a.in[0]->at(0) < 0) throw std::runtime_error("negative input");
              }));
  ScopedOp scoped(failing);
  Graph g;
  Builder b(g);
  PlanOptions opt;
  Val x = b.input("x", {Dim(4)});
  opt.bindings["x"] = Tensor(DType::f32, {4});
  Val y = b.op("test_failing", {x}) + b.op("relu", {x});
  auto plan = compile_plan(g, {y.id}, opt);
  opt.bindings["x"].fill(-1);
  CHECK_THROWS_WITH(run_plan(*plan, RunContext{}, true), "negative input");
  opt.bindings["x"].fill(1);
  CHECK_NOTHROW(run_plan(*plan, RunContext{}, true));
}

TEST_CASE("denormal floats are flushed to zero in the calling thread and in OpenMP's") {
  apply_threads({2, false});
  volatile float tiny = 1e-30f;  // volatile: computed at run time, by the FPU
  CHECK(tiny * 1e-10f == 0.0f);  // 1e-40 would be a denormal
  int flushed = 0;
#pragma omp parallel num_threads(2) reduction(+ : flushed)
  flushed += (tiny * 1e-10f == 0.0f);
  CHECK(flushed == 2);
}

// ---- optimizers ------------------------------------------------------------------------

namespace {
Tensor vec(std::initializer_list<double> v) {
  Tensor t(DType::f64, {int64_t(v.size())});
  int i = 0;
  for (double x : v) t.set(i++, x);
  return t;
}
// One step of `spec` from parameters p and gradients g; returns (new p, the norm it gave).
std::pair<Tensor, double> one_step(const json& spec, std::initializer_list<double> p,
                                   std::initializer_list<double> g) {
  std::vector<Tensor> params = {vec(p)};
  Tensor grad = vec(g);
  auto opt = make_optimizer(spec, params, {"w"});
  const double norm = opt->step({&grad});
  return {params[0], norm};
}
}  // namespace

TEST_CASE("clipping: by global norm, by value, and of the weights, exactly as configured") {
  // sgd with lr 1 moves a parameter by minus its (clipped) gradient.
  auto [plain, n0] = one_step({{"sgd", {{"lr", 1}}}}, {0, 0}, {3, 4});
  CHECK(n0 == doctest::Approx(5));
  CHECK(plain.at(0) == doctest::Approx(-3));
  CHECK(plain.at(1) == doctest::Approx(-4));
  // clip_norm 1: the gradient [3, 4] (norm 5) becomes [0.6, 0.8]; the norm logged is 5.
  auto [by_norm, n1] = one_step({{"sgd", {{"lr", 1}, {"clip_norm", 1}}}}, {0, 0}, {3, 4});
  CHECK(n1 == doctest::Approx(5));
  CHECK(by_norm.at(0) == doctest::Approx(-0.6));
  CHECK(by_norm.at(1) == doctest::Approx(-0.8));
  // Under the bound, nothing changes.
  auto [under, n2] = one_step({{"sgd", {{"lr", 1}, {"clip_norm", 10}}}}, {0, 0}, {3, 4});
  CHECK(under.at(0) == doctest::Approx(-3));
  // clip_value 0.5: each element on its own.
  auto [by_value, n3] = one_step({{"sgd", {{"lr", 1}, {"clip_value", 0.5}}}}, {0, 0}, {3, -0.2});
  CHECK(by_value.at(0) == doctest::Approx(-0.5));
  CHECK(by_value.at(1) == doctest::Approx(0.2));
  // clip_weights 0.01 after the update: WGAN's critic.
  auto [weights, n4] =
      one_step({{"rmsprop", {{"lr", 5e-5}, {"clip_weights", 0.01}}}}, {0.5, -0.005, -3}, {0, 0, 0});
  CHECK(weights.at(0) == doctest::Approx(0.01));
  CHECK(weights.at(1) == doctest::Approx(-0.005));
  CHECK(weights.at(2) == doctest::Approx(-0.01));
  CHECK(n4 == 0);
  // Adam after clipping by norm: the first step moves each parameter by lr * sign(g).
  auto [adam, n5] = one_step({{"adam", {{"lr", 0.1}, {"clip_norm", 1}}}}, {1, 1}, {300, -400});
  CHECK(adam.at(0) == doctest::Approx(0.9).epsilon(1e-6));
  CHECK(adam.at(1) == doctest::Approx(1.1).epsilon(1e-6));
  CHECK(n5 == doctest::Approx(500));
  // Negative bounds are mistakes, named by their place.
  try {
    check_optimizer({{"adam", {{"clip_value", -1}}}});
    FAIL("a negative clip_value was accepted");
  } catch (const AttrError& e) {
    CHECK(e.key() == "adam/clip_value");
  }
}

TEST_CASE("sgd, adam and rmsprop: three steps over 70,001 elements equal PyTorch's formulas") {
  // Large enough for the parallel chunks and an odd length for the vector loops' tails;
  // each element is checked against the update written out in f64.
  const int64_t n = 70001;
  auto grad_at = [](int step, int64_t k) {
    return std::sin(0.37 * double(k) + step) * (1 + double(k % 7));
  };
  struct Case {
    json spec;
    // One step of the update for one element, state in s[0], s[1]; t counts from 1.
    std::function<double(double p, double g, double* s, int t)> update;
  };
  const double lr = 0.01, wd = 0.1;
  const json sgd = {{"sgd",
                     {{"lr", lr}, {"momentum", 0.9}, {"weight_decay", wd}, {"nesterov", true}}}},
             adam = {{"adam", {{"lr", lr}, {"weight_decay", wd}}}},
             rms_momentum = {{"rmsprop", {{"lr", lr}, {"momentum", 0.5}}}},
             rms = {{"rmsprop", {{"lr", lr}}}};
  const Case cases[] = {{sgd,
                         [&](double p, double g, double* s, int t) {
                           const double d = g + wd * p;
                           s[0] = t == 1 ? d : 0.9 * s[0] + d;
                           return p - lr * (d + 0.9 * s[0]);
                         }},
                        {adam,
                         [&](double p, double g, double* s, int t) {
                           const double d = g + wd * p;
                           s[0] = 0.9 * s[0] + 0.1 * d;
                           s[1] = 0.999 * s[1] + 0.001 * d * d;
                           const double mh = s[0] / (1 - std::pow(0.9, t)),
                                        vh = s[1] / (1 - std::pow(0.999, t));
                           return p - lr * mh / (std::sqrt(vh) + 1e-8);
                         }},
                        {rms_momentum,
                         [&](double p, double g, double* s, int) {
                           s[0] = 0.99 * s[0] + 0.01 * g * g;
                           s[1] = 0.5 * s[1] + g / (std::sqrt(s[0]) + 1e-8);
                           return p - lr * s[1];
                         }},
                        {rms, [&](double p, double g, double* s, int) {
                           s[0] = 0.99 * s[0] + 0.01 * g * g;
                           return p - lr * g / (std::sqrt(s[0]) + 1e-8);
                         }}};
  for (const Case& c : cases) {
    INFO(c.spec.dump());
    std::vector<Tensor> params = {Tensor(DType::f32, {n})};
    std::vector<double> want(n), state(2 * n, 0.0);
    for (int64_t k = 0; k < n; ++k) {
      params[0].set(k, std::cos(double(k)));
      want[k] = params[0].at(k);  // from the same f32 values
    }
    auto opt = make_optimizer(c.spec, params, {"w"});
    Tensor grad(DType::f32, {n});
    for (int t = 1; t <= 3; ++t) {
      double sum = 0;
      for (int64_t k = 0; k < n; ++k) {
        grad.set(k, grad_at(t, k));
        const double g = grad.at(k);
        sum += g * g;
        want[k] = c.update(want[k], g, &state[2 * k], t);
      }
      CHECK(opt->step({&grad}) == doctest::Approx(std::sqrt(sum)).epsilon(1e-9));
    }
    double worst = 0;
    for (int64_t k = 0; k < n; ++k) worst = std::max(worst, std::abs(params[0].at(k) - want[k]));
    CHECK(worst < 1e-6);  // f32 arithmetic on values near 1
  }
}

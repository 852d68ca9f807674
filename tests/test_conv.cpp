// The convolutional path beyond the op sweep: the adjoint identity between conv2d and
// conv_transpose2d, batch norm's running statistics and inference mode, and DCGAN
// training on real data.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "runtime/executor.h"
#include "runtime/files.h"
#include "runtime/graph.h"
#include "runtime/kernels.h"
#include "runtime/rng.h"
#include "runtime/threading.h"
#include "runtime/trainer.h"

using namespace weft;
namespace fs = std::filesystem;

namespace {
Tensor random(DType t, Dims d, uint64_t key) {
  Tensor x(t, d);
  for (int64_t i = 0; i < x.numel(); ++i) x.set(i, 2 * uniform01(key, uint64_t(i)) - 1);
  return x;
}
double dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += a.at(i) * b.at(i);
  return s;
}
Shape shape_of(const Dims& d) { return Shape(d.begin(), d.end()); }
}  // namespace

TEST_CASE("adjoint identity: <conv2d(x, w), y> = <x, conv_transpose2d(y, w)>") {
  struct Case {
    Dims x, w;
    json attrs;
  };
  const Case cases[] = {{{2, 3, 8, 8}, {4, 3, 4, 4}, {{"stride", 2}, {"pad", 1}}},
                        {{1, 4, 7, 9}, {6, 2, 3, 3}, {{"stride", 1}, {"pad", 1}, {"groups", 2}}},
                        {{2, 2, 9, 9}, {3, 2, 3, 3}, {{"stride", 2}, {"pad", 0}, {"dilation", 2}}}};
  for (DType dt : {DType::f64, DType::f32}) {
    for (const Case& c : cases) {
      INFO(dtype_name(dt), " ", c.attrs.dump());
      Graph g;
      Builder b(g);
      PlanOptions opt;
      opt.dtype = dt;
      Val x = b.input("x", shape_of(c.x)), w = b.input("w", shape_of(c.w));
      Val fwd = b.op("conv2d", {x, w}, c.attrs);
      Val y = b.input("y", fwd.shape());
      // conv_transpose2d with the same weight, read as [C_in, C_out/g, kh, kw], maps y back
      // to x's shape (output_padding covers what striding dropped).
      json ta = c.attrs;
      Dims xd = c.x;
      int64_t s = ta.value("stride", 1), p = ta.value("pad", 0), d = ta.value("dilation", 1);
      int64_t oh = bind_batch(fwd.shape(), 1)[2];
      ta["output_padding"] = xd[2] - ((oh - 1) * s - 2 * p + d * (c.w[2] - 1) + 1);
      Val back = b.op("conv_transpose2d", {y, w}, ta);
      REQUIRE(back.shape() == x.shape());
      opt.bindings["x"] = random(dt, c.x, 1);
      opt.bindings["w"] = random(dt, c.w, 2);
      opt.bindings["y"] = random(dt, bind_batch(fwd.shape(), 1), 3);
      auto plan = compile_plan(g, {fwd.id, back.id}, opt);
      run_plan(*plan, RunContext{}, false);
      double lhs = dot(plan->target(0), opt.bindings["y"]),
             rhs = dot(opt.bindings["x"], plan->target(1));
      CHECK(lhs == doctest::Approx(rhs).epsilon(dt == DType::f64 ? 1e-12 : 1e-5));
    }
  }
}

TEST_CASE("batch_norm: running statistics while training, then inference uses them") {
  for (DType dt : {DType::f64, DType::f32}) {
    INFO(dtype_name(dt));
    Graph g;
    Builder b(g);
    PlanOptions opt;
    opt.dtype = dt;
    opt.batch = 6;
    Val x = b.input("x", {Dim::B(), Dim(3), Dim(2), Dim(2)});
    std::vector<Val> p;
    for (auto name : {"gamma", "beta", "rm", "rv"}) p.push_back(b.param(name, {Dim(3)}));
    auto outs = b.ops("batch_norm", {x, p[0], p[1], p[2], p[3]}, {{"momentum", 0.25}});
    Tensor gamma(dt, {3}), beta(dt, {3}), rm(dt, {3}), rv(dt, {3});
    for (int k = 0; k < 3; ++k) gamma.set(k, 1.0 + 0.5 * k), beta.set(k, 0.1 * k), rv.set(k, 1.0);
    opt.bindings = {
        {"gamma", gamma}, {"beta", beta}, {"rm", rm}, {"rv", rv}, {"x", Tensor(dt, {6, 3, 2, 2})}};
    auto plan = compile_plan(g, {outs[0].id}, opt);
    Tensor& xt = opt.bindings["x"];
    std::vector<double> exp_rm(3, 0.0), exp_rv(3, 1.0);
    for (int step = 0; step < 3; ++step) {
      for (int64_t i = 0; i < xt.numel(); ++i) xt.set(i, 3 * uniform01(step, uint64_t(i)) + step);
      for (int k = 0; k < 3; ++k) {  // the batch's statistics by hand, unbiased for the running var
        double s = 0, ss = 0;
        for (int n = 0; n < 6; ++n)
          for (int j = 0; j < 4; ++j) s += xt.at((n * 3 + k) * 4 + j);
        double mean = s / 24;
        for (int n = 0; n < 6; ++n)
          for (int j = 0; j < 4; ++j) ss += std::pow(xt.at((n * 3 + k) * 4 + j) - mean, 2);
        exp_rm[k] = 0.75 * exp_rm[k] + 0.25 * mean;
        exp_rv[k] = 0.75 * exp_rv[k] + 0.25 * ss / 23;
      }
      run_plan(*plan, RunContext{}, false);
    }
    for (int k = 0; k < 3; ++k) {
      CHECK(rm.at(k) == doctest::Approx(exp_rm[k]).epsilon(1e-5));
      CHECK(rv.at(k) == doctest::Approx(exp_rv[k]).epsilon(1e-5));
    }
    // Inference: (x - running mean) / sqrt(running var + eps) * gamma + beta; no update.
    RunContext infer;
    infer.training = false;
    run_plan(*plan, infer, false);
    for (int64_t i = 0; i < xt.numel(); ++i) {
      int k = int((i / 4) % 3);
      double want = (xt.at(i) - exp_rm[k]) / std::sqrt(exp_rv[k] + 1e-5) * gamma.at(k) + beta.at(k);
      CHECK(plan->target(0).at(i) == doctest::Approx(want).epsilon(1e-4));
    }
    CHECK(rm.at(0) == doctest::Approx(exp_rm[0]).epsilon(1e-5));
  }
}

TEST_CASE("dcgan: a short run on real data; running statistics move; sample reads the checkpoint") {
  apply_threads({0, false});
  fs::path dir = fs::temp_directory_path() / "weft_test_dcgan";
  fs::remove_all(dir);
  Model m = load_model(std::string(WEFT_SOURCE_DIR) + "/graphs/dcgan.json");
  apply_overrides(m, {.steps = 12, .seed = 1});
  TrainOptions to;
  to.out_dir = dir.string();
  to.quiet = true;
  auto s = run_training(m, SessionOptions{}, to);
  std::ifstream f(dir / "metrics.csv");
  std::string line;
  std::getline(f, line);
  int rows = 0;
  while (std::getline(f, line)) {
    ++rows;
    double d = std::stod(line.substr(line.find(',') + 1));
    CHECK(std::isfinite(d));
  }
  CHECK(rows == 12);
  SafetensorsFile ck = load_safetensors((dir / "checkpoint.safetensors").string());
  const Tensor& rm = ck.tensors.at("param/D.batch_norm_0.running_mean");
  const Tensor& rv = ck.tensors.at("param/D.batch_norm_0.running_var");
  double moved = 0;
  for (int64_t i = 0; i < rm.numel(); ++i) moved += std::abs(rm.at(i)) + std::abs(rv.at(i) - 1);
  CHECK(moved > 1e-3);
  // Running statistics are state, not trained: no phase lists them.
  for (auto& ph : s->phases)
    for (auto& name : ph.spec.params) CHECK(name.find("running_") == std::string::npos);
  CHECK(fs::exists(dir / "losses.svg"));
  std::string cmd = std::string(WEFT_BINARY) + " sample " + WEFT_SOURCE_DIR +
                    "/graphs/dcgan.json --checkpoint " + (dir / "checkpoint.safetensors").string() +
                    " --n 16 --out " + (dir / "s.png").string() + " > /dev/null";
  int st = std::system(cmd.c_str());
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  CHECK(fs::file_size(dir / "s.png") > 100);
}

TEST_CASE("--precision bf16: every matrix product and convolution within bf16's rounding") {
  std::string isa;
  if (!cpu_has_bf16(isa)) {
    MESSAGE("skipped: this CPU offers " << isa << ", not bf16");
    return;
  }
  // Each output is a sum of products a_k b_k; with both factors rounded to bf16 (8 bits)
  // and f32 accumulation its error is at most about 2^-8 sum |a_k b_k|, which the same op
  // computes in f64 on the inputs' magnitudes. The result must also differ from f32's:
  // the inputs were rounded.
  struct Case {
    std::string op;
    std::vector<Dims> in;
    json attrs;
  };
  const json pad1 = {{"pad", 1}};
  const Case cases[] = {
      {"matmul", {{5, 40}, {40, 7}}, json::object()},
      {"matmul", {{40, 5}, {7, 40}}, {{"transpose_a", true}, {"transpose_b", true}}},
      {"linear", {{8, 50}, {6, 50}, {6}}, json::object()},
      {"conv2d", {{2, 3, 8, 8}, {4, 3, 3, 3}, {4}}, pad1},
      {"conv_transpose2d", {{2, 4, 4, 4}, {4, 3, 4, 4}}, {{"stride", 2}, {"pad", 1}}},
      {"conv_transpose2d", {{2, 4, 4, 4}, {4, 8, 4, 4}}, {{"stride", 2}, {"pad", 1}}},
      // Into fewer than 8 channels backward data takes oneDNN's GEMM-based kernel, from 8 on
      // its direct one (ops/conv.cpp): both are checked.
      {"conv2d_backward_data", {{2, 4, 5, 5}, {4, 3, 3, 3}, {2, 3, 5, 5}}, pad1},
      {"conv2d_backward_data", {{2, 4, 5, 5}, {4, 8, 3, 3}, {2, 8, 5, 5}}, pad1},
      {"conv2d_backward_weights", {{2, 3, 5, 5}, {2, 4, 5, 5}, {4, 3, 3, 3}}, pad1}};
  for (const Case& c : cases) {
    INFO(c.op, " ", c.attrs.dump());
    auto run = [&](DType dt, bool bf16, bool magnitudes) {
      Graph g;
      Builder b(g);
      PlanOptions opt;
      opt.dtype = dt;
      opt.bf16 = bf16;
      std::vector<Val> in;
      for (size_t i = 0; i < c.in.size(); ++i) {
        const std::string name = "in" + std::to_string(i);
        in.push_back(b.input(name, shape_of(c.in[i])));
        Tensor t = random(dt, c.in[i], 10 + i);
        if (magnitudes)
          for (int64_t k = 0; k < t.numel(); ++k) t.set(k, std::abs(t.at(k)));
        opt.bindings[name] = t;
      }
      Val y = b.op(c.op, in, c.attrs);
      auto plan = compile_plan(g, {y.id}, opt);
      run_plan(*plan, RunContext{}, false);
      return plan->target(0).to(DType::f64);
    };
    const Tensor exact = run(DType::f64, false, false), bound = run(DType::f64, false, true),
                 f32 = run(DType::f32, false, false), bf16 = run(DType::f32, true, false);
    double worst = 0, from_f32 = 0;
    for (int64_t k = 0; k < exact.numel(); ++k) {
      worst = std::max(worst, std::abs(bf16.at(k) - exact.at(k)) / (bound.at(k) + 1e-12));
      from_f32 = std::max(from_f32, std::abs(bf16.at(k) - f32.at(k)));
    }
    CHECK(worst <= 1.0 / 256);
    CHECK(from_f32 > 0);
  }
}

TEST_CASE("batch norm's f32 kernels on tensors large enough to run in parallel, mean far from 0") {
  // The op sweep's cases are small; here the kernels' parallel branches run, on data whose
  // mean (3) is large against its spread (0.25), where computing x * scale + shift instead
  // of (x - mean) * scale + beta would lose digits. The f64 reference reads the same values.
  for (const Dims& x : {Dims{32, 600}, Dims{8, 16, 16, 16}}) {
    INFO(dims_str(x));
    const int64_t c = x[1];
    auto make = [&](uint64_t key, double offset, double spread, const Dims& d) {
      Tensor t = random(DType::f32, d, key);
      for (int64_t i = 0; i < t.numel(); ++i) t.set(i, offset + spread * t.at(i));
      return t;
    };
    const Tensor xs = make(1, 3, 0.25, x), dy = make(2, 0, 1, x), gamma = make(3, 1, 0.5, {c}),
                 beta = make(4, 0, 1, {c});
    auto run = [&](DType dt) {
      Graph g;
      Builder b(g);
      PlanOptions opt;
      opt.dtype = dt;
      std::vector<Val> in;
      const std::vector<std::pair<std::string, Tensor>> bound = {{"x", xs},
                                                                 {"gamma", gamma},
                                                                 {"beta", beta},
                                                                 {"rm", make(5, 0, 0, {c})},
                                                                 {"rv", make(6, 1, 0, {c})},
                                                                 {"dy", dy}};
      for (auto& [name, t] : bound) {
        in.push_back(b.input(name, shape_of(t.shape())));
        opt.bindings[name] = t.to(dt);
      }
      std::vector<Val> fwd =
          b.ops("batch_norm", {in[0], in[1], in[2], in[3], in[4]}, json::object());
      std::vector<Val> back =
          b.ops("batch_norm_backward", {in[5], in[0], in[1], fwd[1], fwd[2]}, json::object());
      auto plan = compile_plan(
          g, {fwd[0].id, fwd[1].id, fwd[2].id, back[0].id, back[1].id, back[2].id}, opt);
      run_plan(*plan, RunContext{}, false);
      std::vector<Tensor> out;
      for (size_t i = 0; i < 6; ++i) out.push_back(plan->target(i).to(DType::f64));
      return out;
    };
    const std::vector<Tensor> want = run(DType::f64), got = run(DType::f32);
    for (size_t o = 0; o < want.size(); ++o) {
      double scale = 0, worst = 0;
      for (int64_t i = 0; i < want[o].numel(); ++i)
        scale = std::max(scale, std::abs(want[o].at(i)));
      for (int64_t i = 0; i < want[o].numel(); ++i)
        worst = std::max(worst, std::abs(got[o].at(i) - want[o].at(i)));
      CHECK_MESSAGE(worst <= 2e-6 * scale, "output ", o, ": ", worst, " against ", scale);
    }
  }
}

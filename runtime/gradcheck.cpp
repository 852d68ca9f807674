#include "runtime/gradcheck.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "runtime/autodiff.h"
#include "runtime/device.h"
#include "runtime/executor.h"
#include "runtime/optimizer.h"
#include "runtime/rng.h"
#include "runtime/sources.h"

namespace weft {

namespace {

struct Case {
  std::vector<Dims> shapes;
  json attrs;
};

std::vector<Case> cases_of(const OpDef& def, const std::vector<Dims>& shapes, const json& attrs) {
  std::vector<Case> r;
  if (!def.test_spec) return r;
  const OpTest& t = *def.test_spec;
  json base = attrs.is_null() ? t.attrs : attrs;
  if (!shapes.empty()) return {{shapes, base}};
  for (auto& c : t.cases) r.push_back({c, base});
  for (auto& [c, a] : t.extra) r.push_back({c, a});
  return r;
}

Shape const_shape(const Dims& d) { return Shape(d.begin(), d.end()); }

Tensor random_tensor(const OpTest& t, int input, const Dims& d, uint64_t key) {
  double lo = t.low, hi = t.high;
  if (input < int(t.ranges.size())) std::tie(lo, hi) = t.ranges[input];
  Tensor x(DType::f64, d);
  for (int64_t i = 0; i < x.numel(); ++i) {
    double u = lo + (hi - lo) * uniform01(key, uint64_t(i));
    if (std::abs(u) < t.avoid) u = u < 0 ? -t.avoid - std::abs(u) : t.avoid + u;
    x.set(i, u);
  }
  return x;
}

// A graph computing sum_j <out_j, r_j> from the op's outputs, with inputs x0..xn.
struct Harness {
  Graph g;
  Builder b{g};
  std::vector<Val> xs, outs;
  PlanOptions opt;
  Val loss;
  Harness(const OpDef& def, const Case& c, uint64_t seed, bool weighted) {
    const OpTest& t = *def.test_spec;
    opt.dtype = DType::f64;
    for (size_t k = 0; k < c.shapes.size(); ++k) {
      std::string name = fmt::format("x{}", k);
      xs.push_back(b.input(name, const_shape(c.shapes[k])));
      opt.bindings[name] = random_tensor(t, int(k), c.shapes[k], stream_key(seed, k));
    }
    outs = b.ops(def.name, xs, c.attrs);
    if (!weighted) return;
    for (size_t j = 0; j < outs.size(); ++j) {
      std::string name = fmt::format("r{}", j);
      Dims d = bind_batch(outs[j].shape(), 1);
      Val r = b.input(name, outs[j].shape());
      Tensor rt(DType::f64, d);
      for (int64_t i = 0; i < rt.numel(); ++i)
        rt.set(i, 2 * uniform01(stream_key(seed, 100 + j), i) - 1);
      opt.bindings[name] = rt;
      Val term = b.op("sum", {outs[j] * r});
      loss = loss ? loss + term : term;
    }
  }
};

double run_scalar(Plan& p, const RunContext& ctx) {
  run_plan(p, ctx, false);
  return p.target(0).at(0);
}

// Compares d(scalar)/d(x_k) from the graph against central differences.
CheckResult compare(Harness& h, Val scalar, const std::vector<int>& wrt, const std::string& what,
                    const std::string& op) {
  std::vector<ValueId> ids;
  for (int k : wrt) ids.push_back(h.xs[k].id);
  auto grads = gradients(h.b, scalar.id, ids);
  std::vector<ValueId> targets{scalar.id};
  targets.insert(targets.end(), grads.begin(), grads.end());
  auto full = compile_plan(h.g, targets, h.opt);
  auto value_only = compile_plan(h.g, {scalar.id}, h.opt);
  RunContext ctx;
  ctx.seed = 7;
  run_plan(*full, ctx, false);
  CheckResult r{op, what, 0, 1e-6, {}, ""};
  const double eps = 1e-6;
  for (size_t q = 0; q < wrt.size(); ++q) {
    Tensor x = h.opt.bindings.at(fmt::format("x{}", wrt[q]));
    const Tensor& analytic = full->target(1 + q);
    double worst = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      double v = x.at(i);
      x.set(i, v + eps);
      double up = run_scalar(*value_only, ctx);
      x.set(i, v - eps);
      double down = run_scalar(*value_only, ctx);
      x.set(i, v);
      double fd = (up - down) / (2 * eps);
      worst = std::max(worst, std::abs(analytic.at(i) - fd) / std::max(1.0, std::abs(fd)));
    }
    r.per_input.push_back(worst);
    r.worst = std::max(r.worst, worst);
  }
  return r;
}

std::string case_str(const Case& c) {
  std::vector<std::string> s;
  for (auto& d : c.shapes) s.push_back(dims_str(d));
  std::string a = c.attrs.empty() ? std::string() : fmt::format(" {}", c.attrs.dump());
  return fmt::format("{}{}", fmt::join(s, " "), a);
}

}  // namespace

std::vector<CheckResult> check_gradients(const OpDef& def, const std::vector<Dims>& shapes,
                                         const json& attrs) {
  std::vector<CheckResult> results;
  if (!def.test_spec) return results;
  const OpTest& t = *def.test_spec;
  uint64_t seed = 1;
  for (const Case& c : cases_of(def, shapes, attrs)) {
    std::vector<int> wrt;
    for (int k = 0; k < int(c.shapes.size()); ++k)
      if (std::find(t.no_grad_inputs.begin(), t.no_grad_inputs.end(), k) == t.no_grad_inputs.end())
        wrt.push_back(k);
    if (wrt.empty() || (!def.grad_rule && !def.expansion)) continue;
    {
      Harness h(def, c, seed, true);
      results.push_back(
          compare(h, h.loss, wrt, fmt::format("grad order 1 {}", case_str(c)), def.name));
    }
    if (t.order >= 2) {
      // s = sum_k <d loss / d x_k, v_k>; its gradient is a Hessian-vector product.
      Harness h(def, c, seed, true);
      std::vector<ValueId> ids;
      for (int k : wrt) ids.push_back(h.xs[k].id);
      auto grads = gradients(h.b, h.loss.id, ids);
      Val s;
      for (size_t q = 0; q < grads.size(); ++q) {
        std::string name = fmt::format("v{}", q);
        Val v = h.b.input(name, h.g.shape(grads[q]));
        Tensor vt(DType::f64, bind_batch(h.g.shape(grads[q]), 1));
        for (int64_t i = 0; i < vt.numel(); ++i)
          vt.set(i, 2 * uniform01(stream_key(seed, 200 + q), i) - 1);
        h.opt.bindings[name] = vt;
        Val term = h.b.op("sum", {h.b.val(grads[q]) * v});
        s = s ? s + term : term;
      }
      results.push_back(compare(h, s, wrt, fmt::format("grad order 2 {}", case_str(c)), def.name));
    }
    ++seed;
  }
  return results;
}

namespace {

// Where a run of a case ends: its outputs after a training run and then an inference run,
// and the inputs its kernels update in place (batch norm's running statistics).
struct Outcome {
  std::vector<Tensor> values;
  std::string kernels;  // "op:kernel" per step
  std::string picked;   // the kernel of the op under test
};

// The plan's inputs are bound to copies of `start` in the plan's dtype, so every plan of a
// case starts from the same values although kernels may update their inputs.
Outcome run_case(const Graph& g, const std::vector<ValueId>& targets, const PlanOptions& start,
                 DType dtype, const std::string& op, const std::vector<std::string>& mutated,
                 Device device = Device::cpu()) {
  PlanOptions o = start;
  o.dtype = dtype;
  o.device = device;
  for (auto& [k, v] : o.bindings) {
    const Tensor host = v.to(dtype);
    v = host;
    if (device.kind == 0) continue;
    v = zeros_on(device, dtype, host.shape());
    upload(host, v);
  }
  auto plan = compile_plan(g, targets, o);
  Outcome out;
  std::vector<std::string> ks;
  for (auto& st : plan->steps) {
    ks.push_back(st.op + ":" + st.kernel_name);
    if (st.op == op) out.picked = st.kernel_name;
  }
  out.kernels = fmt::format("{}", fmt::join(ks, " "));
  for (bool training : {true, false}) {
    RunContext ctx;
    ctx.seed = 3;
    ctx.training = training;
    run_plan(*plan, ctx, false);
    for (size_t j = 0; j < targets.size(); ++j)
      out.values.push_back(on_host(plan->target(j)).to(DType::f64));
  }
  for (auto& name : mutated) out.values.push_back(on_host(o.bindings.at(name)).to(DType::f64));
  return out;
}

double worst_error(const Outcome& fast, const Outcome& ref) {
  double worst = 0;
  for (size_t j = 0; j < ref.values.size(); ++j)
    for (int64_t i = 0; i < ref.values[j].numel(); ++i) {
      double a = fast.values[j].at(i), b = ref.values[j].at(i);
      worst = std::max(worst, std::abs(a - b) / std::max(1.0, std::abs(b)));
    }
  return worst;
}

// For each case of the op's test spec: its harness, targets and mutated inputs, and the f64
// reference kernels' outcome, which check_f32 and check_device compare against.
template <class F>
void each_case_with_reference(const OpDef& def, F f) {
  std::vector<std::string> mutated;
  for (int k : def.mutated_inputs) mutated.push_back(fmt::format("x{}", k));
  const std::vector<Case> cases = cases_of(def, {}, nullptr);
  for (int index = 0; index < int(cases.size()); ++index) {
    const Case& c = cases[index];
    Harness h(def, c, 11 + uint64_t(index), false);
    std::vector<ValueId> targets;
    for (auto& o : h.outs) targets.push_back(o.id);
    const Outcome ref = run_case(h.g, targets, h.opt, DType::f64, def.name, mutated);
    f(index, c, h, targets, ref, mutated);
  }
}

}  // namespace

std::vector<CheckResult> check_f32(const OpDef& def) {
  std::vector<CheckResult> results;
  if (!def.test_spec) return results;
  const std::string& expected = def.test_spec->expect_kernel;
  std::vector<const KernelEntry*> candidates;
  for (const KernelEntry& e : def.kernel_list)
    if (e.device_kind == Device::cpu().kind && e.dtype == DType::f32) candidates.push_back(&e);
  each_case_with_reference(
      def, [&](int index, const Case& c, Harness& h, const std::vector<ValueId>& targets,
               const Outcome& ref, const std::vector<std::string>& mutated) {
        // What dispatch picks, as in training.
        const Outcome dispatched = run_case(h.g, targets, h.opt, DType::f32, def.name, mutated);
        CheckResult r{def.name, fmt::format("f32 vs f64 {}", case_str(c)), 0, 1e-5, {}, ""};
        r.kernels = dispatched.kernels;
        r.worst = worst_error(dispatched, ref);
        const size_t dispatched_at = results.size();
        results.push_back(r);

        // Every other candidate, forced by giving the node a copy of the op with that kernel
        // alone; one that does not take the node says why in the planner's error.
        std::map<std::string, std::string> declined;
        for (const KernelEntry* e : candidates) {
          if (e->name == dispatched.picked) continue;
          OpDef only(def);
          only.kernel_list = {*e};
          Graph g = h.g;
          for (Node& n : g.nodes)
            if (n.def->name == def.name) n.def = &only;
          Outcome forced;
          try {
            forced = run_case(g, targets, h.opt, DType::f32, def.name, mutated);
          } catch (const Error& err) {
            declined[e->name] = err.what();
            continue;
          }
          CheckResult rc = r;
          rc.what = fmt::format("{} with kernel {}", r.what, e->name);
          rc.kernels = forced.kernels;
          rc.worst = worst_error(forced, ref);
          results.push_back(rc);
        }

        if (expected.empty()) return;
        const auto& known = def.test_spec->declined_cases;
        const bool should_decline = std::find(known.begin(), known.end(), index) != known.end();
        std::string& problem = results[dispatched_at].problem;
        if (should_decline) {
          if (dispatched.picked == expected)
            problem = fmt::format(
                "kernel '{}' takes case {}, which the test spec lists as declined; take it off the "
                "list",
                expected, index);
          return;
        }
        if (dispatched.picked == expected) return;
        if (std::none_of(candidates.begin(), candidates.end(),
                         [&](const KernelEntry* e) { return e->name == expected; }))
          problem =
              fmt::format("the test spec expects kernel '{}', but op {} has no f32 kernel so named",
                          expected, def.name);
        else if (declined.count(expected))
          problem = fmt::format("dispatch picked '{}', not '{}' as the test spec expects: {}",
                                dispatched.picked, expected, declined[expected]);
        else
          problem = fmt::format("dispatch picked '{}' before '{}', which the test spec expects",
                                dispatched.picked, expected);
      });
  return results;
}

std::vector<CheckResult> check_device(const OpDef& def, Device device) {
  std::vector<CheckResult> results;
  if (!def.test_spec) return results;
  each_case_with_reference(
      def, [&](int, const Case& c, Harness& h, const std::vector<ValueId>& targets,
               const Outcome& ref, const std::vector<std::string>& mutated) {
        CheckResult r{def.name, fmt::format("on {} vs f64 {}", device_name(device), case_str(c)),
                      0,        1e-4,
                      {},       ""};
        try {
          const Outcome on = run_case(h.g, targets, h.opt, DType::f32, def.name, mutated, device);
          r.kernels = on.kernels;
          r.worst = worst_error(on, ref);
        } catch (const Error& e) {
          // The op's own kernel declining a case is the device's choice; anything else fails.
          if (e.message().find("no f32 kernel for op " + def.name + " on") != std::string::npos)
            r.declined = e.message();
          else
            r.problem = e.message();
        }
        results.push_back(r);
      });
  return results;
}

std::vector<CheckResult> check_device_trainer_ops(Device device) {
  std::vector<CheckResult> results;
  auto has = [&](const std::string& op) {
    const OpDef* d = Registry::get().find(op);
    return d && has_kernel(*d, device, DType::f32);
  };
  auto relative = [](double a, double b) { return std::abs(a - b) / std::max(1.0, std::abs(b)); };
  const int64_t n = 1001;  // odd: the vector loops' tails
  const json specs[] = {
      {{"sgd", {{"lr", 0.01}, {"momentum", 0.9}, {"nesterov", true}, {"weight_decay", 0.1}}}},
      {{"adam", {{"lr", 0.01}, {"weight_decay", 0.1}, {"clip_norm", 1.0}}}},
      {{"rmsprop", {{"lr", 0.01}, {"momentum", 0.5}, {"clip_value", 0.5}, {"clip_weights", 0.9}}}}};
  for (const json& spec : specs) {
    const std::string kind = spec.begin().key();
    const bool by_norm = spec.begin().value().value("clip_norm", 0.0) > 0;
    if (!has(kind + "_update") || (by_norm && !has("sum_squares"))) continue;
    Tensor p64(DType::f64, {n}), g64(DType::f64, {n});
    for (int64_t k = 0; k < n; ++k) p64.set(k, std::cos(double(k)));
    Tensor pdev = zeros_on(device, DType::f32, {n}), gdev = zeros_on(device, DType::f32, {n});
    upload(p64.to(DType::f32), pdev);
    Optimizer ref(spec, {p64}, {"w"}), dev(spec, {pdev}, {"w"});
    CheckResult r{kind + "_update",
                  fmt::format("on {} vs f64: {} steps of {}", device_name(device), 3, spec.dump()),
                  0,
                  1e-4,
                  {},
                  ""};
    for (int t = 1; t <= 3; ++t) {
      for (int64_t k = 0; k < n; ++k) g64.set(k, std::sin(0.37 * double(k) + t) * (1 + k % 7));
      upload(g64.to(DType::f32), gdev);
      const double want = ref.step({&g64}), got = dev.step({&gdev});
      r.worst = std::max(r.worst, relative(got, want));
    }
    const Tensor p = on_host(pdev);
    for (int64_t k = 0; k < n; ++k) r.worst = std::max(r.worst, relative(p.at(k), p64.at(k)));
    for (size_t s = 0; s < ref.state().size(); ++s) {
      const Tensor a = on_host(dev.state()[s].second), b = ref.state()[s].second;
      for (int64_t k = 0; k < b.numel(); ++k)
        r.worst = std::max(r.worst, relative(a.at(k), b.at(k)));
    }
    results.push_back(r);
  }
  for (const bool normal : {true, false}) {
    const std::string op = normal ? "noise_normal" : "noise_uniform";
    if (!has(op)) continue;
    const double a = normal ? 0.5 : -2, b = normal ? 2 : 3;
    const uint64_t key = stream_key(7, 11, 13);
    Tensor want(DType::f64, {n});
    draw_noise(normal, want, a, b, key);
    Tensor got = zeros_on(device, DType::f32, {n});
    KernelInfo info{op, json{{"a", a}, {"b", b}}, {}, {{n}}, DType::f32, device};
    std::string name;
    std::unique_ptr<Kernel> k = make_kernel(*Registry::get().find(op), info, name, "");
    RunContext ctx;
    KernelArgs args;
    args.out = {&got};
    args.ctx = &ctx;
    args.node_key = key;
    k->run(args);
    const Tensor h = on_host(got);
    CheckResult r{op, fmt::format("on {} vs f64: {} draws", device_name(device), n), 0, 1e-6, {},
                  ""};
    for (int64_t i = 0; i < n; ++i) r.worst = std::max(r.worst, relative(h.at(i), want.at(i)));
    results.push_back(r);
  }
  return results;
}

}  // namespace weft

// `weft bench GRAPH`: training throughput and where the time goes, per step of each
// phase's plan, forward and backward alike (the way `caffe time` reports layers).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "tools/commands.h"

namespace weft {

int run_bench(const Model& m, const SessionOptions& so, int64_t steps, int64_t warmup, int nodes) {
  Session s(m, so);
  for (int64_t i = 0; i < warmup; ++i) s.train_step();
  // Untimed-by-op pass for the throughput, then a profiled pass for the table.
  s.input_seconds = s.optimizer_seconds = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) s.train_step();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double input_ms = 1e3 * s.input_seconds / double(steps),
               opt_ms = 1e3 * s.optimizer_seconds / double(steps);
  std::vector<std::pair<double, std::string>> node_rows;
  std::map<std::string, double> by_op;
  std::map<std::string, int> count_op;
  double profiled_total = 0;
  for (size_t pi = 0; pi < s.phases.size(); ++pi) {
    StepTimes t;
    for (int64_t i = 0; i < steps; ++i) {
      // Re-run this phase's plan alone with profiling; the optimizer is not stepped.
      RunContext ctx{s.model.train.seed, uint64_t(s.step), uint64_t(pi) * 1024, true};
      run_plan(*s.phases[pi].bound.plan, ctx, false, &t);
    }
    auto& plan = *s.phases[pi].bound.plan;
    for (size_t k = 0; k < plan.steps.size(); ++k) {
      double ms = 1e3 * t.seconds[k] / double(t.runs);
      node_rows.push_back({ms, fmt::format("{} {} [{}]", plan.steps[k].name, plan.steps[k].op,
                                           dims_str(plan.slots[plan.steps[k].out[0]].shape()))});
      std::string key = plan.steps[k].op + " (" + plan.steps[k].kernel_name + ")";
      by_op[key] += ms;
      count_op[key]++;
      profiled_total += ms;
    }
  }
  double flops = 0;
  for (auto& ph : s.phases)
    for (auto& st : ph.bound.plan->steps) flops += st.flops * ph.spec.repeat;
  fmt::print("{}: batch {}, {} steps after {} warm-up\n", m.file, s.model.train.batch, steps,
             warmup);
  fmt::print("training: {:.1f} ms/step, {:.0f} samples/s, {:.1f} GFLOP/s ({:.3f} GFLOP/step)\n",
             1e3 * secs / double(steps), double(steps * s.model.train.batch) / secs,
             flops * double(steps) / secs / 1e9, flops / 1e9);
  std::vector<std::pair<double, std::string>> rows;
  for (auto& [k, v] : by_op) rows.push_back({v, k});
  std::sort(rows.rbegin(), rows.rend());
  fmt::print("\n{:<36} {:>6} {:>10} {:>7}\n", "op (kernel)", "count", "ms/step", "share");
  for (auto& [ms, k] : rows)
    fmt::print("{:<36} {:>6} {:>10.3f} {:>6.1f}%\n", k, count_op[k], ms, 100 * ms / profiled_total);
  fmt::print("{:<36} {:>6} {:>10.3f}\n", "plans (profiled separately)", "", profiled_total);
  if (nodes > 0) {
    std::sort(node_rows.rbegin(), node_rows.rend());
    fmt::print("\nslowest plan steps\n");
    for (int i = 0; i < nodes && i < int(node_rows.size()); ++i)
      fmt::print("  {:>8.3f} ms  {}\n", node_rows[i].first, node_rows[i].second);
  }
  fmt::print("{:<36} {:>6} {:>10.3f}\n", "filling inputs (data, noise)", "", input_ms);
  fmt::print("{:<36} {:>6} {:>10.3f}\n", "optimizer updates", "", opt_ms);
  return 0;
}

}  // namespace weft

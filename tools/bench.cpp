// `weft bench GRAPH`: training throughput and where the time goes, per step of each
// phase's plan, forward and backward alike (the way `caffe time` reports layers), with the
// rest of a training step (inputs, optimizer, the executor between steps) beside it so the
// rows add up to the step, and the model's floor: its matrix products and convolutions
// each run alone, back to back, at oneDNN's speed for exactly these shapes.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "runtime/device.h"
#include "tools/commands.h"

namespace weft {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The best of `reps` runs of one plan step alone, after two unmeasured ones: its inputs
// and outputs stay in cache, as they would if nothing ran between the primitives.
double alone_seconds(PlanStep& st, Device dev, const RunContext& ctx, int reps) {
  st.args.ctx = &ctx;
  for (int i = 0; i < 2; ++i) st.kernel->run(st.args);
  sync_device(dev);
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    st.kernel->run(st.args);
    sync_device(dev);  // a device's kernel is timed to its end
    best = std::min(best, seconds_since(t0));
  }
  return best;
}

}  // namespace

int run_bench(const Model& m, const SessionOptions& so, int64_t steps, int64_t warmup, int nodes) {
  Session s(m, so);
  for (int64_t i = 0; i < warmup; ++i) s.train_step();
  // Whole training steps as `weft train` runs them, unprofiled: the throughput.
  s.input_seconds = s.optimizer_seconds = 0;
  // How often each phase runs in these steps (a phase may be active for some steps only).
  std::vector<int64_t> active(s.phases.size(), 0);
  for (int64_t i = 0; i < steps; ++i)
    for (size_t pi = 0; pi < s.phases.size(); ++pi)
      active[pi] += s.phases[pi].spec.active_at(s.step + i) ? s.phases[pi].spec.repeat : 0;
  const Traffic before = device_traffic();
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) s.train_step();
  const double secs = seconds_since(t0), per_step = 1e3 / double(steps);
  if (so.device.kind != 0) {
    const Traffic after = device_traffic();
    const double n = double(steps);
    fmt::print(
        "on {}: per step {:.1f} copies in ({:.1f} KiB), {:.1f} out ({:.2f} KiB), {:.1f} "
        "waits\n",
        device_name(so.device), double(after.copies_in - before.copies_in) / n,
        double(after.bytes_in - before.bytes_in) / n / 1024,
        double(after.copies_out - before.copies_out) / n,
        double(after.bytes_out - before.bytes_out) / n / 1024,
        double(after.syncs - before.syncs) / n);
  }
  const double step_ms = secs * per_step, input_ms = s.input_seconds * per_step,
               opt_ms = s.optimizer_seconds * per_step;
  // Then each phase's plan again, each kernel timed: as often per step as training runs it.
  std::vector<std::pair<double, std::string>> node_rows;
  std::map<std::string, double> by_op;
  std::map<std::string, int> count_op;
  double kernels_ms = 0, unprofiled_ms = 0, floor_ms = 0, flops = 0, dense_flops = 0;
  int64_t steps_per_train_step = 0;
  for (size_t pi = 0; pi < s.phases.size(); ++pi) {
    Plan& plan = *s.phases[pi].bound.plan;
    const int64_t runs = active[pi];  // of this phase's plan in the timed steps
    if (runs == 0) continue;
    StepTimes t;
    RunContext ctx{s.model.train.seed, uint64_t(s.step), uint64_t(pi) * 1024, true};
    // Unprofiled and profiled runs alternate, so that their difference, the executor's own
    // cost between kernels, is not a drift of the machine's speed between two passes.
    for (int64_t i = 0; i < runs; ++i) {
      auto t1 = std::chrono::steady_clock::now();
      run_plan(plan, ctx, false, nullptr);
      sync_device(plan.device);
      unprofiled_ms += 1e3 * seconds_since(t1) / double(steps);
      run_plan(plan, ctx, false, &t);
    }
    for (size_t k = 0; k < plan.steps.size(); ++k) {
      PlanStep& st = plan.steps[k];
      const double ms = 1e3 * t.seconds[k] / double(steps);  // per training step
      node_rows.push_back(
          {ms, fmt::format("{} {} [{}]", st.name, st.op, dims_str(plan.slots[st.out[0]].shape()))});
      const std::string key = st.op + " (" + st.kernel_name + ")";
      by_op[key] += ms;
      count_op[key] += int(runs / steps);
      kernels_ms += ms;
      const double share = double(runs) / double(steps);  // runs per training step
      flops += st.flops * share;
      if (st.dense) {
        floor_ms += 1e3 * alone_seconds(st, plan.device, ctx, 10) * share;
        dense_flops += st.flops * share;
      }
    }
    steps_per_train_step += int64_t(plan.steps.size()) * runs / steps;
  }
  fmt::print("{}: batch {}, {} steps after {} warm-up\n", m.file, s.model.train.batch, steps,
             warmup);
  fmt::print("training: {:.2f} ms/step, {:.0f} samples/s, {:.1f} GFLOP/s ({:.3f} GFLOP/step)\n",
             step_ms, double(steps * s.model.train.batch) / secs, flops / step_ms / 1e6,
             flops / 1e9);
  if (dense_flops > 0)
    fmt::print(
        "floor: {:.2f} ms/step, the {:.3f} GFLOP of matrix products and convolutions alone at "
        "{:.1f} GFLOP/s; this step runs at {:.0f}% of the floor's speed\n",
        floor_ms, dense_flops / 1e9, dense_flops / floor_ms / 1e6, 100 * floor_ms / step_ms);
  std::vector<std::pair<double, std::string>> rows;
  for (auto& [k, v] : by_op) rows.push_back({v, k});
  std::sort(rows.rbegin(), rows.rend());
  fmt::print("\n{:<44} {:>6} {:>10} {:>7}\n", "op (kernel)", "count", "ms/step", "share");
  auto row = [&](const std::string& what, const std::string& count, double ms) {
    fmt::print("{:<44} {:>6} {:>10.3f} {:>6.1f}%\n", what, count, ms, 100 * ms / step_ms);
  };
  for (auto& [ms, k] : rows) row(k, std::to_string(count_op[k]), ms);
  const double between = unprofiled_ms - kernels_ms;
  row("executor between kernels", std::to_string(steps_per_train_step), between);
  row("filling inputs (data, noise)", "", input_ms);
  row("optimizer updates", "", opt_ms);
  // What is left: the step's losses and logged values read back, the step's bookkeeping,
  // and the drift between the timed steps and the profiled passes.
  row("the rest (losses, logging, drift)", "", step_ms - kernels_ms - between - input_ms - opt_ms);
  fmt::print("{:<44} {:>6} {:>10.3f}   ({:.2f} us per kernel between kernels)\n", "step", "",
             step_ms, 1e3 * between / double(std::max<int64_t>(1, steps_per_train_step)));
  if (nodes > 0) {
    std::sort(node_rows.rbegin(), node_rows.rend());
    fmt::print("\nslowest plan steps\n");
    for (int i = 0; i < nodes && i < int(node_rows.size()); ++i)
      fmt::print("  {:>8.3f} ms  {}\n", node_rows[i].first, node_rows[i].second);
  }
  return 0;
}

}  // namespace weft

#include "runtime/executor.h"

#include <fmt/format.h>
#include <tbb/task_group.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>

#include "runtime/device.h"

namespace weft {

namespace {

struct Runner {
  Plan& plan;
  const RunContext& ctx;
  StepTimes* times;

  void exec(int i) {
    PlanStep& st = plan.steps[i];
    KernelArgs& a = st.args;
    a.ctx = &ctx;
    if (!times) {
      st.kernel->run(a);
      return;
    }
    auto t0 = std::chrono::steady_clock::now();
    st.kernel->run(a);
    sync_device(plan.device);  // a kernel on a device's stream is timed to its end
    times->seconds[i] +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
};

}  // namespace

void run_plan(Plan& plan, const RunContext& ctx, bool parallel, StepTimes* times) {
  const int n = int(plan.steps.size());
  if (times) {
    times->seconds.resize(n, 0.0);
    times->runs++;
  }
  Runner r{plan, ctx, times};
  // A plugin device runs its steps in order on its one stream.
  if (!parallel || n < 2 || plan.device.kind != 0) {
    for (int i = 0; i < n; ++i) r.exec(i);
    return;
  }
  std::unique_ptr<std::atomic<int>[]> pending(new std::atomic<int>[n]);
  for (int i = 0; i < n; ++i) pending[i].store(plan.steps[i].num_deps, std::memory_order_relaxed);
  tbb::task_group tg;
  // Runs step i, then the successors it made ready; the first ready one runs in the same
  // task (a chain stays on one thread), the others are spawned.
  std::function<void(int)> go = [&](int i) {
    while (i >= 0) {
      r.exec(i);
      int next = -1;
      for (int s : plan.steps[i].succ) {
        if (pending[s].fetch_sub(1, std::memory_order_acq_rel) != 1) continue;
        if (next < 0)
          next = s;
        else
          tg.run([&go, s] { go(s); });
      }
      i = next;
    }
  };
  for (int i = 0; i < n; ++i)
    if (plan.steps[i].num_deps == 0) tg.run([&go, i] { go(i); });
  tg.wait();  // rethrows the first exception of a step; the others are cancelled
}

int64_t first_non_finite(const Tensor& t) {
  if (!t.defined() || t.device() != Device::cpu()) return -1;
  const int64_t n = t.numel();
  auto scan = [n](const auto* p) -> int64_t {
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) return i;
    return -1;
  };
  return t.dtype() == DType::f32 ? scan(t.data<float>()) : scan(t.data<double>());
}

NonFinite::NonFinite(std::string node_, std::string op_, int output_, int64_t element_,
                     double value_)
    : std::runtime_error(fmt::format("node '{}' ({}) wrote {} to element {} of output {}", node_,
                                     op_, value_, element_, output_)),
      node(std::move(node_)),
      op(std::move(op_)),
      output(output_),
      element(element_),
      value(value_) {}

void run_plan_checked(Plan& plan, const RunContext& ctx) {
  Runner r{plan, ctx, nullptr};
  for (int i = 0; i < int(plan.steps.size()); ++i) {
    r.exec(i);
    const PlanStep& st = plan.steps[i];
    for (size_t o = 0; o < st.args.out.size(); ++o) {
      const Tensor t = on_host(*st.args.out[o]);
      const int64_t bad = first_non_finite(t);
      if (bad >= 0) throw NonFinite(st.name, st.op, int(o), bad, t.at(bad));
    }
  }
}

}  // namespace weft

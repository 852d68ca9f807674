#include "runtime/executor.h"

#include <tbb/task_group.h>

#include <atomic>
#include <chrono>
#include <memory>

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
  if (!parallel || n < 2) {
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

}  // namespace weft

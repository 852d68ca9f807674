// Runs a plan's steps. In parallel mode each step starts on TBB as soon as the steps it
// waits for are done, so independent branches (D on real and on fake data, weight and
// data gradients) run side by side. The threading policy lives in threading.h.
#pragma once

#include <vector>

#include "runtime/plan.h"

namespace weft {

struct StepTimes {
  std::vector<double> seconds;  // per plan step, summed over runs
  int runs = 0;
};

void run_plan(Plan& plan, const RunContext& ctx, bool parallel, StepTimes* times = nullptr);

}  // namespace weft

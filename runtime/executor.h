// Runs a plan's steps. In parallel mode each step starts on TBB as soon as the steps it
// waits for are done, so independent branches (D on real and on fake data, weight and
// data gradients) run side by side. The threading policy lives in threading.h.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/plan.h"

namespace weft {

struct StepTimes {
  std::vector<double> seconds;  // per plan step, summed over runs
  int runs = 0;
};

// On a plugin device the steps are queued in order on the device's stream and may still be
// running when this returns (read results with on_host or download_async and sync_device).
void run_plan(Plan& plan, const RunContext& ctx, bool parallel, StepTimes* times = nullptr);

// Runs the plan's steps in order and checks after each one that its outputs are finite
// (--check-numerics). Throws NonFinite for the first step whose output is not.
void run_plan_checked(Plan& plan, const RunContext& ctx);

// The first element of a host tensor that is NaN or infinite, or -1.
int64_t first_non_finite(const Tensor& t);

struct NonFinite : std::runtime_error {
  NonFinite(std::string node_, std::string op_, int output_, int64_t element_, double value_);
  std::string node, op;
  int output;
  int64_t element;
  double value;
};

}  // namespace weft

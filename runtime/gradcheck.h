// Checks ops against arithmetic: gradient rules against central finite differences in
// f64 (and, where an op claims it, second-order gradients the same way), and fast f32
// kernels against the f64 reference. The op sweep test and `weft gradcheck` share this.
#pragma once

#include <string>
#include <vector>

#include "runtime/op.h"

namespace weft {

struct CheckResult {
  std::string op, what;  // what: "grad order 1 case [4, 7]", "f32 vs f64 ..."
  double worst = 0;      // worst relative error
  double tolerance = 0;
  std::vector<double> per_input;  // worst error per input (gradient checks)
  std::string kernels;            // f32 kernels used (f32 checks)
  std::string problem;            // a failure that is no number: dispatch passed a kernel over
  std::string declined;           // a device's kernel did not take the case: why (not a failure)
  bool ok() const { return problem.empty() && worst <= tolerance; }
};

// Every case of the op's test spec (or `shapes`, when given, with the spec's attributes).
std::vector<CheckResult> check_gradients(const OpDef& def, const std::vector<Dims>& shapes = {},
                                         const json& attrs = nullptr);
// Per case: the f32 kernels dispatch picks, then every other f32 kernel that takes the node,
// each against the f64 reference kernels, in training and in inference, outputs and inputs
// updated in place alike. A case fails when dispatch picks another kernel than the spec's
// expect_kernel.
std::vector<CheckResult> check_f32(const OpDef& def);
// Per case: the op's f32 kernel on a plugin device (inputs copied there, outputs and inputs
// updated in place copied back) against the f64 reference on the CPU, in training and in
// inference, within 1e-4 (a device's reductions and math library round differently from
// the CPU's). A case the device's kernel declines is reported with its reason. Cases whose
// plan needs another op the device has no kernel for are refused like any plan.
std::vector<CheckResult> check_device(const OpDef& def, Device device);
// What the trainer runs outside graphs, on a plugin device against f64 on the CPU: each
// optimizer's update for three steps (clipping by norm, value and weights included, so
// sum_squares too) and the noise inputs' draws. Ops the device has no kernel for are left
// out.
std::vector<CheckResult> check_device_trainer_ops(Device device);

}  // namespace weft

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

}  // namespace weft

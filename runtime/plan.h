// A plan is compiled once per (targets, batch size, dtype) and run many times. Compiling
// picks the nodes the targets need, fuses, binds the batch size into every shape, gives
// each value a buffer (reusing a buffer once its last reader is done), and creates every
// kernel (oneDNN primitives included). Running a plan allocates nothing.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/passes.h"

namespace weft {

struct PlanOptions {
  int64_t batch = 1;
  DType dtype = DType::f32;
  // Where every step runs and every buffer lives. A plan is placed whole: on a plugin
  // device each step needs a kernel there (compile_plan lists the ops that have none), and
  // the bound tensors must be on it too.
  Device device;
  bool bf16 = false;             // KernelInfo::bf16
  bool sync_batch_norm = false;  // KernelInfo::sync_batch_norm
  bool fuse = true;
  // Tensors bound to `input` and `param` nodes, by name. They are used in place: a plan
  // reads the current contents of a parameter each run.
  std::map<std::string, Tensor> bindings;
};

struct PlanStep {
  std::string name, op, kernel_name;
  std::unique_ptr<Kernel> kernel;
  std::vector<int> in, out;  // value slots
  std::vector<int> succ;     // steps that wait for this one
  int num_deps = 0;
  uint64_t node_key = 0;
  double flops = 0;
  bool dense = false;  // a matrix product or convolution (OpDef::dense_flops)
  KernelArgs args;     // pointers into the plan's slots, made once (runs allocate nothing)
};

class Plan {
 public:
  std::vector<PlanStep> steps;
  std::vector<Tensor> slots;  // one per planned value
  std::map<ValueId, int> slot_of;
  std::vector<ValueId> targets;
  int64_t batch = 1;
  DType dtype = DType::f32;
  Device device;
  size_t buffer_bytes = 0;  // bytes of intermediate buffers after reuse
  size_t naive_bytes = 0;   // what they would take without reuse
  int fusions = 0;

  const Tensor& value(ValueId v) const;
  const Tensor& target(size_t i) const { return value(targets.at(i)); }
};

// Throws Error for a user's mistake (a missing binding, a shape that does not match, a
// plan whose bound tensors and buffers need more memory than the machine has: that is
// checked before any buffer is allocated or kernel made).
std::unique_ptr<Plan> compile_plan(const Graph& g, const std::vector<ValueId>& targets,
                                   const PlanOptions& opt);

// The first kernel of `def` that takes the node on info.device and info.dtype, by
// priority; `kernel_name` gets its name. Throws Error at `where` giving each candidate's
// reason to decline when none takes it.
std::unique_ptr<Kernel> make_kernel(const OpDef& def, const KernelInfo& info,
                                    std::string& kernel_name, const std::string& where);
// Whether `op` has any kernel for (device, dtype).
bool has_kernel(const OpDef& def, Device device, DType dtype);

// The machine's physical memory (sysconf), in bytes.
int64_t physical_memory_bytes();
// "1.5 GiB".
std::string bytes_str(int64_t bytes);
// Throws Error (without a file; callers add it) when `bytes` exceed physical memory,
// saying what `what` would need and what the machine has. No bytes: the count overflowed
// (more than 2^63).
void check_memory(std::optional<int64_t> bytes, const std::string& what);

}  // namespace weft

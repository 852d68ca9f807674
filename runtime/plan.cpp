#include "runtime/plan.h"

#include <fmt/format.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <set>

#include "runtime/device.h"

namespace weft {

const Tensor& Plan::value(ValueId v) const {
  auto it = slot_of.find(v);
  WEFT_ASSERT(it != slot_of.end(), "value is not in the plan");
  return slots[it->second];
}

static uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

static bool verbose_dispatch() {
  const char* v = std::getenv("WEFT_VERBOSE");
  return v && std::strstr(v, "dispatch");
}

int64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  WEFT_ASSERT(pages > 0 && page > 0, "sysconf cannot tell the physical memory");
  return int64_t(pages) * int64_t(page);
}

std::string bytes_str(int64_t bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) v /= 1024, ++u;
  return u == 0 ? fmt::format("{} bytes", bytes) : fmt::format("{:.1f} {}", v, units[u]);
}

void check_memory(std::optional<int64_t> bytes, const std::string& what) {
  const int64_t have = physical_memory_bytes();
  if (bytes && *bytes <= have) return;
  throw Error("", "",
              fmt::format("{} would need {} of memory, and this machine has {}", what,
                          bytes ? bytes_str(*bytes) : "more than 2^63 bytes", bytes_str(have)));
}

namespace {
// A logical buffer holds one computed value (and the aliases of it).
struct Logical {
  int64_t bytes = 0;
  int last_use = -1;  // the last step reading it; INT_MAX for targets
  int phys = -1;
  Tensor external;  // a bound input or param, or a constant
};

// A physical buffer, shared by logical buffers whose lives do not overlap.
struct Phys {
  int64_t bytes = 0;
  std::vector<int> touched;  // steps that used it since it was last taken
};

// A plan being compiled: its values placed in slots, its steps ordered, before any
// buffer is allocated or kernel made.
struct Draft {
  std::vector<Logical> logical;
  std::vector<Dims> slot_dims;
  std::vector<int> slot_logical, slot_producer;  // producer step, -1 for sources
  std::vector<KernelInfo> infos;                 // per step
  std::vector<const PlanNode*> step_nodes;       // per step
  std::vector<Phys> phys;
};
}  // namespace

bool has_kernel(const OpDef& def, Device device, DType dtype) {
  for (auto& e : def.kernel_list)
    if (e.device_kind == device.kind && e.dtype == dtype) return true;
  return false;
}

std::unique_ptr<Kernel> make_kernel(const OpDef& def, const KernelInfo& info,
                                    std::string& kernel_name, const std::string& where) {
  std::vector<std::string> reasons;
  std::unique_ptr<Kernel> k;
  for (auto& e : def.kernel_list) {
    if (e.device_kind != info.device.kind || e.dtype != info.dtype) continue;
    std::string why;
    k = e.make(info, why);
    if (k) {
      kernel_name = e.name;
      break;
    }
    reasons.push_back(e.name + ": " + why);
  }
  std::string skipped = fmt::format("{}", fmt::join(reasons, "; "));
  if (verbose_dispatch())
    fmt::print(stderr, "dispatch {} ({}) on {}: {}{}{}\n", info.node, def.name,
               device_name(info.device), k ? kernel_name : "none",
               reasons.empty() ? "" : "; skipped ", skipped);
  if (!k)
    throw Error("", where,
                fmt::format("no {} kernel for op {} on {}{}{}", dtype_name(info.dtype), def.name,
                            device_name(info.device), reasons.empty() ? "" : ": ", skipped));
  // The reference kernels compute in the plan's dtype: a matrix product there would quietly
  // not be bf16.
  if (info.bf16 && def.is_dense && kernel_name == "reference")
    throw Error(
        "", where,
        fmt::format("--precision bf16: no bf16 kernel takes op {} here ({})", def.name, skipped));
  return k;
}

namespace {

// Binds the batch into a node's output shapes; a size that overflows is the user's.
std::vector<Dims> bind_outputs(const PlanNode& n, int64_t batch) {
  std::vector<Dims> out;
  try {
    for (auto& s : n.shapes) out.push_back(bind_batch(s, batch));
  } catch (const ShapeError& e) {
    throw Error("", n.where, fmt::format("at batch {}, {}", batch, e.what()));
  }
  return out;
}

// Gives every value a slot and every computing node a step with its dependencies.
void place_values(Plan& plan, const std::vector<PlanNode>& nodes, const PlanOptions& opt,
                  Draft& d) {
  std::map<int, int> last_mutation;  // logical buffer -> last step updating it
  auto new_slot = [&](ValueId v, Dims dims, int lb, int producer) {
    int s = int(d.slot_dims.size());
    plan.slot_of[v] = s;
    d.slot_dims.push_back(std::move(dims));
    d.slot_logical.push_back(lb);
    d.slot_producer.push_back(producer);
    return s;
  };
  for (const PlanNode& n : nodes) {
    std::vector<Dims> out_dims = bind_outputs(n, opt.batch);
    if (n.def->is_source) {
      const Dims& dims = out_dims[0];
      Logical lb;
      if (n.def->name == "constant") {
        Tensor host(opt.dtype, {});
        host.fill(n.attrs.at("value").get<double>());
        lb.external = host;
        if (opt.device.kind != 0) {
          lb.external = zeros_on(opt.device, opt.dtype, {});
          upload(host, lb.external);
        }
      } else {
        std::string name = n.attrs.at("name");
        auto it = opt.bindings.find(name);
        if (it == opt.bindings.end())
          throw Error("", n.where,
                      fmt::format("{} '{}' has no value bound to it", n.def->name, name));
        const Tensor& t = it->second;
        WEFT_ASSERT(
            t.device() == opt.device,
            fmt::format("{} '{}' is bound to a tensor on {}, the plan runs on {}", n.def->name,
                        name, device_name(t.device()), device_name(opt.device)));
        if (t.dtype() != opt.dtype || numel(t.shape()) != checked_numel(dims))
          throw Error(
              "", n.where,
              fmt::format("{} '{}' is bound to a {} tensor of shape {}, the plan needs {} {}",
                          n.def->name, name, dtype_name(t.dtype()), dims_str(t.shape()),
                          dtype_name(opt.dtype), dims_str(dims)));
        lb.external = t.view(dims);
      }
      d.logical.push_back(lb);
      new_slot({n.id, 0}, dims, int(d.logical.size()) - 1, -1);
      continue;
    }
    if (n.def->is_alias) {  // a view: no step, no buffer
      int src = plan.slot_of.at(n.in.at(0));
      new_slot({n.id, 0}, out_dims[0], d.slot_logical[src], d.slot_producer[src]);
      continue;
    }
    int step = int(plan.steps.size());
    PlanStep st;
    st.name = n.name;
    st.op = n.def->name;
    st.node_key = fnv1a(n.name);
    std::set<int> deps;
    for (auto v : n.in) {
      auto it = plan.slot_of.find(v);
      WEFT_ASSERT(it != plan.slot_of.end(), "input of " + n.name + " not planned");
      st.in.push_back(it->second);
      d.logical[d.slot_logical[it->second]].last_use = step;
      if (d.slot_producer[it->second] >= 0) deps.insert(d.slot_producer[it->second]);
    }
    for (int o = 0; o < int(out_dims.size()); ++o) {
      int64_t bytes = 0;
      try {
        bytes = checked_mul(checked_numel(out_dims[o]), int64_t(dtype_size(opt.dtype)));
      } catch (const ShapeError& e) {
        throw Error("", n.where, fmt::format("at batch {}, {}", opt.batch, e.what()));
      }
      d.logical.push_back(Logical{bytes});
      st.out.push_back(new_slot({n.id, o}, out_dims[o], int(d.logical.size()) - 1, step));
    }
    KernelInfo info{n.name,    n.attrs,    {},       out_dims,
                    opt.dtype, opt.device, opt.bf16, opt.sync_batch_norm};
    for (int s : st.in) info.in.push_back(d.slot_dims[s]);
    d.infos.push_back(std::move(info));
    d.step_nodes.push_back(&n);
    for (int k : n.def->mutated_inputs) {  // updates of one tensor run in plan order
      int lb = d.slot_logical[st.in.at(k)];
      auto last = last_mutation.find(lb);
      if (last != last_mutation.end()) deps.insert(last->second);
      last_mutation[lb] = step;
    }
    for (int dep : deps) plan.steps[dep].succ.push_back(step);
    st.num_deps = int(deps.size());
    plan.steps.push_back(std::move(st));
  }
}

// Physical buffers: walk the steps in order; a buffer is free again after the step that
// reads its value last. A step that reuses a buffer must wait for every step that
// touched it before, or the executor could overwrite a value still being read.
void assign_buffers(Plan& plan, Draft& d) {
  std::multimap<int64_t, int> free_list;  // bytes -> phys
  for (int s = 0; s < int(plan.steps.size()); ++s) {
    PlanStep& st = plan.steps[s];
    for (int slot : st.out) {
      Logical& lb = d.logical[d.slot_logical[slot]];
      auto it = free_list.lower_bound(lb.bytes);
      if (it == free_list.end() && !free_list.empty()) it = std::prev(free_list.end());
      if (it != free_list.end()) {
        lb.phys = it->second;
        free_list.erase(it);
        Phys& p = d.phys[lb.phys];
        p.bytes = std::max(p.bytes, lb.bytes);
        std::set<int> extra(p.touched.begin(), p.touched.end());
        extra.erase(s);
        for (int dep : extra) {
          auto& succ = plan.steps[dep].succ;
          if (std::find(succ.begin(), succ.end(), s) == succ.end()) {
            succ.push_back(s);
            st.num_deps++;
          }
        }
        p.touched.clear();
      } else {
        lb.phys = int(d.phys.size());
        d.phys.push_back(Phys{lb.bytes, {}});
      }
      d.phys[lb.phys].touched.push_back(s);
      plan.naive_bytes = size_t(checked_add(int64_t(plan.naive_bytes), lb.bytes));
    }
    for (int slot : st.in) {
      Logical& lb = d.logical[d.slot_logical[slot]];
      if (lb.phys >= 0) d.phys[lb.phys].touched.push_back(s);
    }
    // Release what this step read last (a value nobody reads is released at once).
    std::set<int> released;
    for (int slot : st.in) released.insert(d.slot_logical[slot]);
    for (int slot : st.out) released.insert(d.slot_logical[slot]);
    for (int l : released) {
      Logical& lb = d.logical[l];
      if (lb.phys >= 0 && lb.last_use <= s && lb.last_use != INT_MAX)
        free_list.emplace(d.phys[lb.phys].bytes, lb.phys), lb.last_use = INT_MAX - 1;
    }
  }
}

// Refuses a plan that cannot fit before anything is allocated: the bound tensors (the
// parameters and inputs) and the plan's buffers must fit in physical memory. Past that,
// the allocation would fail or the machine would swap itself to a halt.
void check_plan_memory(const Plan& plan, const PlanOptions& opt, const Draft& d) {
  int64_t bound = 0, buffers = 0;
  std::optional<int64_t> total;
  try {
    std::set<const Storage*> seen;  // views share storage
    for (auto& [name, t] : opt.bindings)
      if (t.defined() && seen.insert(t.storage().get()).second)
        bound = checked_add(bound, int64_t(t.storage()->bytes));
    for (auto& p : d.phys) buffers = checked_add(buffers, p.bytes);
    total = checked_add(bound, buffers);
  } catch (const ShapeError&) {
  }
  check_memory(total, total ? fmt::format("the plan at batch {} (parameters and inputs {}, "
                                          "buffers {})",
                                          plan.batch, bytes_str(bound), bytes_str(buffers))
                            : fmt::format("the plan at batch {}", plan.batch));
}

}  // namespace

std::unique_ptr<Plan> compile_plan(const Graph& g, const std::vector<ValueId>& targets,
                                   const PlanOptions& opt) {
  auto plan = std::make_unique<Plan>();
  plan->targets = targets;
  plan->batch = opt.batch;
  plan->dtype = opt.dtype;
  plan->device = opt.device;
  std::vector<PlanNode> nodes = live_nodes(g, targets);
  if (opt.fuse) {
    skip_broadcasts(nodes);
    // A fused op is made only where the plan's device has a kernel for it.
    auto can = [&](const char* op) {
      const OpDef* d = Registry::get().find(op);
      return opt.dtype == DType::f32 && d && has_kernel(*d, opt.device, opt.dtype);
    };
    if (can("linear_act")) plan->fusions += fuse_linear_activation(nodes, targets);
    if (can("batch_norm_act")) plan->fusions += fuse_batch_norm_activation(nodes, targets);
    if (can("matmul_add")) plan->fusions += fuse_matmul_add(nodes, targets);
    prune(nodes, targets);
  }
  if (opt.device.kind != 0) {  // placed whole: every op needs a kernel on the device
    std::map<std::string, const PlanNode*> missing;  // op -> the first node needing it
    for (const PlanNode& n : nodes)
      if (!n.def->is_source && !n.def->is_alias && !has_kernel(*n.def, opt.device, opt.dtype))
        missing.emplace(n.def->name, &n);
    if (!missing.empty()) {
      std::vector<std::string> listed;
      for (auto& [op, n] : missing) listed.push_back(fmt::format("{} (node '{}')", op, n->name));
      throw Error("", missing.begin()->second->where,
                  fmt::format("device {} has no {} kernel for op{} {}: a plan runs wholly on one "
                              "device; run this graph on the CPU, or give the device's plugin "
                              "kernels for these ops",
                              device_name(opt.device), dtype_name(opt.dtype),
                              missing.size() > 1 ? "s" : "", fmt::join(listed, ", ")));
    }
  }
  Draft d;
  place_values(*plan, nodes, opt, d);
  for (auto t : targets) d.logical[d.slot_logical[plan->slot_of.at(t)]].last_use = INT_MAX;
  try {
    assign_buffers(*plan, d);
  } catch (const ShapeError& e) {
    throw Error("", "", fmt::format("at batch {}, the plan's buffers: {}", opt.batch, e.what()));
  }
  check_plan_memory(*plan, opt, d);

  for (size_t s = 0; s < plan->steps.size(); ++s) {
    PlanStep& st = plan->steps[s];
    const PlanNode& n = *d.step_nodes[s];
    st.kernel = make_kernel(*n.def, d.infos[s], st.kernel_name, n.where);
    st.dense = n.def->is_dense;
    st.flops = n.def->flops_rule ? n.def->flops_rule(d.infos[s]) : double(numel(d.infos[s].out[0]));
  }
  std::vector<std::shared_ptr<Storage>> storage;
  for (auto& p : d.phys) {
    storage.push_back(opt.device.kind == 0
                          ? std::make_shared<Storage>(size_t(p.bytes))
                          : zeros_on(opt.device, DType::f32, {(p.bytes + 3) / 4}).storage());
    plan->buffer_bytes += size_t(p.bytes);
  }
  for (size_t s = 0; s < d.slot_dims.size(); ++s) {
    const Logical& lb = d.logical[d.slot_logical[s]];
    if (lb.external.defined())
      plan->slots.push_back(lb.external.view(d.slot_dims[s]));
    else
      plan->slots.push_back(Tensor::over(storage.at(lb.phys), opt.dtype, d.slot_dims[s]));
  }
  for (auto& st : plan->steps) {
    st.args.node_key = st.node_key;
    for (int s : st.in) st.args.in.push_back(&plan->slots[s]);
    for (int s : st.out) st.args.out.push_back(&plan->slots[s]);
  }
  return plan;
}

}  // namespace weft

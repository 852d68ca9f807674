#include "runtime/plan.h"

#include <fmt/format.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <set>

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

namespace {
// A logical buffer holds one computed value (and the aliases of it).
struct Logical {
  size_t bytes = 0;
  int last_use = -1;  // the last step reading it; INT_MAX for targets
  int phys = -1;
  Tensor external;  // a bound input or param, or a constant
};
}  // namespace

static std::unique_ptr<Kernel> make_kernel(const OpDef& def, const KernelInfo& info,
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
    fmt::print(stderr, "dispatch {} ({}): {}{}{}\n", info.node, def.name, k ? kernel_name : "none",
               reasons.empty() ? "" : "; skipped ", skipped);
  if (!k)
    throw Error("", where,
                fmt::format("no {} kernel for op {} on {}{}{}", dtype_name(info.dtype), def.name,
                            device_name(info.device), reasons.empty() ? "" : ": ", skipped));
  return k;
}

std::unique_ptr<Plan> compile_plan(const Graph& g, const std::vector<ValueId>& targets,
                                   const PlanOptions& opt) {
  auto plan = std::make_unique<Plan>();
  plan->targets = targets;
  plan->batch = opt.batch;
  plan->dtype = opt.dtype;
  std::vector<PlanNode> nodes = live_nodes(g, targets);
  if (opt.fuse) {
    skip_broadcasts(nodes);
    if (opt.dtype == DType::f32) plan->fusions = fuse_linear_activation(nodes, targets);
    prune(nodes, targets);
  }

  std::vector<Logical> logical;
  std::vector<Dims> slot_dims;
  std::vector<int> slot_logical, slot_producer;  // producer step, -1 for sources
  std::map<int, int> last_mutation;              // logical buffer -> last step updating it

  auto new_slot = [&](ValueId v, Dims d, int lb, int producer) {
    int s = int(slot_dims.size());
    plan->slot_of[v] = s;
    slot_dims.push_back(std::move(d));
    slot_logical.push_back(lb);
    slot_producer.push_back(producer);
    return s;
  };

  for (const PlanNode& n : nodes) {
    std::vector<Dims> out_dims;
    for (auto& s : n.shapes) out_dims.push_back(bind_batch(s, opt.batch));
    if (n.def->is_source) {
      const Dims& d = out_dims[0];
      Logical lb;
      if (n.def->name == "constant") {
        lb.external = Tensor(opt.dtype, {});
        lb.external.fill(n.attrs.at("value").get<double>());
      } else {
        std::string name = n.attrs.at("name");
        auto it = opt.bindings.find(name);
        if (it == opt.bindings.end())
          throw Error("", n.where,
                      fmt::format("{} '{}' has no value bound to it", n.def->name, name));
        const Tensor& t = it->second;
        if (t.dtype() != opt.dtype || numel(t.shape()) != numel(d))
          throw Error(
              "", n.where,
              fmt::format("{} '{}' is bound to a {} tensor of shape {}, the plan needs {} {}",
                          n.def->name, name, dtype_name(t.dtype()), dims_str(t.shape()),
                          dtype_name(opt.dtype), dims_str(d)));
        lb.external = t.view(d);
      }
      logical.push_back(lb);
      new_slot({n.id, 0}, d, int(logical.size()) - 1, -1);
      continue;
    }
    if (n.def->is_alias) {  // a view: no step, no buffer
      int src = plan->slot_of.at(n.in.at(0));
      new_slot({n.id, 0}, out_dims[0], slot_logical[src], slot_producer[src]);
      continue;
    }
    int step = int(plan->steps.size());
    PlanStep st;
    st.name = n.name;
    st.op = n.def->name;
    st.node_key = fnv1a(n.name);
    std::set<int> deps;
    for (auto v : n.in) {
      auto it = plan->slot_of.find(v);
      WEFT_ASSERT(it != plan->slot_of.end(), "input of " + n.name + " not planned");
      st.in.push_back(it->second);
      logical[slot_logical[it->second]].last_use = step;
      if (slot_producer[it->second] >= 0) deps.insert(slot_producer[it->second]);
    }
    for (int o = 0; o < int(out_dims.size()); ++o) {
      logical.push_back(Logical{size_t(numel(out_dims[o])) * dtype_size(opt.dtype)});
      st.out.push_back(new_slot({n.id, o}, out_dims[o], int(logical.size()) - 1, step));
    }
    KernelInfo info{n.name, n.attrs, {}, out_dims, opt.dtype, Device::cpu()};
    for (int s : st.in) info.in.push_back(slot_dims[s]);
    st.kernel = make_kernel(*n.def, info, st.kernel_name, n.where);
    st.flops = n.def->flops_rule ? n.def->flops_rule(info) : double(numel(out_dims[0]));
    for (int k : n.def->mutated_inputs) {  // updates of one tensor run in plan order
      int lb = slot_logical[st.in.at(k)];
      auto last = last_mutation.find(lb);
      if (last != last_mutation.end()) deps.insert(last->second);
      last_mutation[lb] = step;
    }
    for (int d : deps) plan->steps[d].succ.push_back(step);
    st.num_deps = int(deps.size());
    plan->steps.push_back(std::move(st));
  }
  for (auto t : targets) logical[slot_logical[plan->slot_of.at(t)]].last_use = INT_MAX;

  // Physical buffers: walk the steps in order; a buffer is free again after the step that
  // reads its value last. A step that reuses a buffer must wait for every step that
  // touched it before, or the executor could overwrite a value still being read.
  struct Phys {
    size_t bytes = 0;
    std::vector<int> touched;
  };
  std::vector<Phys> phys;
  std::multimap<size_t, int> free_list;  // bytes -> phys
  std::vector<std::vector<int>> outs_of_step(plan->steps.size());
  for (int s = 0; s < int(plan->steps.size()); ++s) {
    PlanStep& st = plan->steps[s];
    for (int slot : st.out) {
      Logical& lb = logical[slot_logical[slot]];
      auto it = free_list.lower_bound(lb.bytes);
      if (it == free_list.end() && !free_list.empty()) it = std::prev(free_list.end());
      if (it != free_list.end()) {
        lb.phys = it->second;
        free_list.erase(it);
        Phys& p = phys[lb.phys];
        p.bytes = std::max(p.bytes, lb.bytes);
        std::set<int> extra(p.touched.begin(), p.touched.end());
        extra.erase(s);
        for (int d : extra) {
          auto& succ = plan->steps[d].succ;
          if (std::find(succ.begin(), succ.end(), s) == succ.end()) {
            succ.push_back(s);
            st.num_deps++;
          }
        }
        p.touched.clear();
      } else {
        lb.phys = int(phys.size());
        phys.push_back(Phys{lb.bytes, {}});
      }
      phys[lb.phys].touched.push_back(s);
      plan->naive_bytes += lb.bytes;
    }
    for (int slot : st.in) {
      Logical& lb = logical[slot_logical[slot]];
      if (lb.phys >= 0) phys[lb.phys].touched.push_back(s);
    }
    // Release what this step read last (a value nobody reads is released at once).
    std::set<int> released;
    for (int slot : st.in) released.insert(slot_logical[slot]);
    for (int slot : st.out) released.insert(slot_logical[slot]);
    for (int l : released) {
      Logical& lb = logical[l];
      if (lb.phys >= 0 && lb.last_use <= s && lb.last_use != INT_MAX)
        free_list.emplace(phys[lb.phys].bytes, lb.phys), lb.last_use = INT_MAX - 1;
    }
  }
  std::vector<std::shared_ptr<Storage>> storage;
  for (auto& p : phys) {
    storage.push_back(std::make_shared<Storage>(p.bytes));
    plan->buffer_bytes += p.bytes;
  }
  for (size_t s = 0; s < slot_dims.size(); ++s) {
    const Logical& lb = logical[slot_logical[s]];
    if (lb.external.defined())
      plan->slots.push_back(lb.external.view(slot_dims[s]));
    else
      plan->slots.push_back(Tensor::over(storage.at(lb.phys), opt.dtype, slot_dims[s]));
  }
  for (auto& st : plan->steps) {
    st.args.node_key = st.node_key;
    for (int s : st.in) st.args.in.push_back(&plan->slots[s]);
    for (int s : st.out) st.args.out.push_back(&plan->slots[s]);
  }
  return plan;
}

}  // namespace weft

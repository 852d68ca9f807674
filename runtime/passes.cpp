#include "runtime/passes.h"

#include <map>
#include <set>

namespace weft {

std::vector<PlanNode> live_nodes(const Graph& g, const std::vector<ValueId>& targets) {
  std::vector<PlanNode> out;
  for (int i : g.ancestors(targets)) {
    const Node& n = g.nodes[i];
    out.push_back({i, n.name, n.def, n.in, n.attrs, n.shapes, n.where});
  }
  return out;
}

namespace {
const Shape& shape_of(const std::map<int, const PlanNode*>& by_id, ValueId v) {
  return by_id.at(v.node)->shapes.at(v.out);
}
}  // namespace

int fuse_linear_activation(std::vector<PlanNode>& nodes, const std::vector<ValueId>& targets) {
  const OpDef* fused = Registry::get().find("linear_act");
  if (!fused) return 0;
  static const std::set<std::string> acts = {"relu", "leaky_relu", "sigmoid", "tanh"};
  std::map<int, int> uses, pos;
  for (size_t k = 0; k < nodes.size(); ++k) {
    pos[nodes[k].id] = int(k);
    for (auto v : nodes[k].in) uses[v.node]++;
  }
  for (auto t : targets) uses[t.node] += 1000;  // a target must stay visible
  int count = 0;
  std::vector<char> dead(nodes.size(), 0);
  for (auto& n : nodes) {
    if (!acts.count(n.def->name)) continue;
    auto it = pos.find(n.in[0].node);
    if (it == pos.end()) continue;
    PlanNode& lin = nodes[it->second];
    if (lin.def->name != "linear" || uses[lin.id] != 1) continue;
    json attrs = lin.attrs;
    attrs["activation"] = n.def->name;
    attrs["alpha"] = n.def->name == "leaky_relu" ? n.attrs.at("alpha").get<double>() : 0.0;
    n.def = fused;
    n.in = lin.in;
    n.attrs = attrs;
    dead[it->second] = 1;
    ++count;
  }
  std::vector<PlanNode> kept;
  for (size_t k = 0; k < nodes.size(); ++k)
    if (!dead[k]) kept.push_back(std::move(nodes[k]));
  nodes = std::move(kept);
  return count;
}

int fuse_batch_norm_activation(std::vector<PlanNode>& nodes, const std::vector<ValueId>& targets) {
  const OpDef* fused = Registry::get().find("batch_norm_act");
  if (!fused) return 0;
  static const std::set<std::string> acts = {"relu", "leaky_relu"};
  std::map<std::pair<int, int>, int> uses;  // per output
  std::map<int, int> pos;
  for (size_t k = 0; k < nodes.size(); ++k) {
    pos[nodes[k].id] = int(k);
    for (auto v : nodes[k].in) uses[{v.node, v.out}]++;
  }
  for (auto t : targets) uses[{t.node, t.out}] += 1000;  // a target must stay visible
  int count = 0;
  std::vector<char> dead(nodes.size(), 0);
  std::map<int, int> moved;  // a fused batch norm's id -> the fused node's
  for (size_t a = 0; a < nodes.size(); ++a) {
    PlanNode& n = nodes[a];
    if (!acts.count(n.def->name)) continue;
    auto it = pos.find(n.in[0].node);
    if (it == pos.end() || n.in[0].out != 0) continue;
    const int b = it->second;
    PlanNode& bn = nodes[b];
    if (bn.def->name != "batch_norm" || uses[{bn.id, 0}] != 1 || uses[{bn.id, 1}] >= 1000 ||
        uses[{bn.id, 2}] >= 1000)
      continue;
    // The statistics move to the activation's place: no node between may read them.
    bool read_early = false;
    for (int k = b + 1; k < int(a); ++k)
      for (auto v : nodes[k].in) read_early |= v.node == bn.id;
    if (read_early) continue;
    json attrs = bn.attrs;
    attrs["activation"] = n.def->name;
    attrs["alpha"] = n.def->name == "leaky_relu" ? n.attrs.at("alpha").get<double>() : 0.0;
    n.def = fused;
    n.in = bn.in;
    n.attrs = attrs;
    n.shapes = {n.shapes[0], bn.shapes[1], bn.shapes[2]};
    moved[bn.id] = n.id;
    dead[b] = 1;
    ++count;
  }
  for (auto& n : nodes)
    for (auto& v : n.in)
      if (moved.count(v.node)) v.node = moved[v.node];  // outputs 1 and 2 keep their index
  std::vector<PlanNode> kept;
  for (size_t k = 0; k < nodes.size(); ++k)
    if (!dead[k]) kept.push_back(std::move(nodes[k]));
  nodes = std::move(kept);
  return count;
}

int fuse_matmul_add(std::vector<PlanNode>& nodes, const std::vector<ValueId>& targets) {
  const OpDef* fused = Registry::get().find("matmul_add");
  if (!fused) return 0;
  std::map<int, int> uses, pos;
  for (size_t k = 0; k < nodes.size(); ++k) {
    pos[nodes[k].id] = int(k);
    for (auto v : nodes[k].in) uses[v.node]++;
  }
  for (auto t : targets) uses[t.node] += 1000;  // a target must stay visible
  int count = 0;
  std::vector<char> dead(nodes.size(), 0);
  for (auto& n : nodes) {
    if (n.def->name != "add" || n.in.size() != 2) continue;
    for (size_t k = 0; k < 2; ++k) {
      auto it = pos.find(n.in[k].node);
      if (it == pos.end() || dead[it->second]) continue;
      PlanNode& mm = nodes[it->second];
      // Both addends of the output's shape: the post-op adds without broadcasting.
      const ValueId other = n.in[1 - k];
      auto ot = pos.find(other.node);
      if (mm.def->name != "matmul" || uses[mm.id] != 1 || mm.shapes[0] != n.shapes[0] ||
          ot == pos.end() || nodes[ot->second].shapes.at(other.out) != n.shapes[0])
        continue;
      n.def = fused;
      n.in = {mm.in[0], mm.in[1], other};
      n.attrs = mm.attrs;
      dead[it->second] = 1;
      ++count;
      break;
    }
  }
  std::vector<PlanNode> kept;
  for (size_t k = 0; k < nodes.size(); ++k)
    if (!dead[k]) kept.push_back(std::move(nodes[k]));
  nodes = std::move(kept);
  return count;
}

int skip_broadcasts(std::vector<PlanNode>& nodes) {
  static const std::set<std::string> elementwise = {"add", "sub", "mul", "div"};
  std::map<int, const PlanNode*> by_id;
  for (auto& n : nodes) by_id[n.id] = &n;
  int count = 0;
  for (auto& n : nodes) {
    if (!elementwise.count(n.def->name)) continue;
    for (size_t k = 0; k < n.in.size(); ++k) {
      auto it = by_id.find(n.in[k].node);
      if (it == by_id.end() || it->second->def->name != "broadcast_like" ||
          it->second->attrs.at("mean").get<bool>())
        continue;
      const PlanNode& bc = *it->second;
      const Shape& src = shape_of(by_id, bc.in[0]);
      const Shape& other = shape_of(by_id, n.in[1 - k]);
      try {
        if (broadcast_shapes(k == 0 ? src : other, k == 0 ? other : src) != n.shapes[0]) continue;
      } catch (const ShapeError&) {
        continue;
      }
      n.in[k] = bc.in[0];
      ++count;
    }
  }
  return count;
}

void prune(std::vector<PlanNode>& nodes, const std::vector<ValueId>& targets) {
  std::set<int> needed;
  for (auto t : targets) needed.insert(t.node);
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it)
    if (needed.count(it->id))
      for (auto v : it->in) needed.insert(v.node);
  std::vector<PlanNode> kept;
  for (auto& n : nodes)
    if (needed.count(n.id)) kept.push_back(std::move(n));
  nodes = std::move(kept);
}

}  // namespace weft

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

// Where each node sits in the list and how many inputs read each of its outputs. A target
// counts as 1000 reads: a fusion must never hide a value the plan hands back.
struct UseIndex {
  std::map<int, int> pos;
  std::map<std::pair<int, int>, int> reads;

  UseIndex(const std::vector<PlanNode>& nodes, const std::vector<ValueId>& targets) {
    for (size_t k = 0; k < nodes.size(); ++k) {
      pos[nodes[k].id] = int(k);
      for (auto v : nodes[k].in) reads[{v.node, v.out}]++;
    }
    for (auto t : targets) reads[{t.node, t.out}] += 1000;
  }
  // The index in the list of the node, or -1 when it is not in the list.
  int position(int node) const {
    auto it = pos.find(node);
    return it == pos.end() ? -1 : it->second;
  }
  int uses(int node, int out = 0) const {
    auto it = reads.find({node, out});
    return it == reads.end() ? 0 : it->second;
  }
};

// Removes the nodes marked dead, keeping the order of the rest.
void drop_dead(std::vector<PlanNode>& nodes, const std::vector<char>& dead) {
  std::vector<PlanNode> kept;
  for (size_t k = 0; k < nodes.size(); ++k)
    if (!dead[k]) kept.push_back(std::move(nodes[k]));
  nodes = std::move(kept);
}

// The attributes of a producer with an activation folded in.
json with_activation(json attrs, const PlanNode& act) {
  attrs["activation"] = act.def->name;
  attrs["alpha"] = act.def->name == "leaky_relu" ? act.attrs.at("alpha").get<double>() : 0.0;
  return attrs;
}
}  // namespace

int fuse_linear_activation(std::vector<PlanNode>& nodes, const std::vector<ValueId>& targets) {
  const OpDef* fused = Registry::get().find("linear_act");
  if (!fused) return 0;
  static const std::set<std::string> acts = {"relu", "leaky_relu", "sigmoid", "tanh"};
  const UseIndex index(nodes, targets);
  int count = 0;
  std::vector<char> dead(nodes.size(), 0);
  for (auto& n : nodes) {
    if (!acts.count(n.def->name)) continue;
    const int p = index.position(n.in[0].node);
    if (p < 0) continue;
    PlanNode& lin = nodes[p];
    if (lin.def->name != "linear" || index.uses(lin.id) != 1) continue;
    n.attrs = with_activation(lin.attrs, n);
    n.def = fused;
    n.in = lin.in;
    dead[p] = 1;
    ++count;
  }
  drop_dead(nodes, dead);
  return count;
}

int fuse_batch_norm_activation(std::vector<PlanNode>& nodes, const std::vector<ValueId>& targets) {
  const OpDef* fused = Registry::get().find("batch_norm_act");
  if (!fused) return 0;
  static const std::set<std::string> acts = {"relu", "leaky_relu"};
  const UseIndex index(nodes, targets);
  int count = 0;
  std::vector<char> dead(nodes.size(), 0);
  std::map<int, int> moved;  // a fused batch norm's id -> the fused node's
  for (size_t a = 0; a < nodes.size(); ++a) {
    PlanNode& n = nodes[a];
    if (!acts.count(n.def->name)) continue;
    const int b = index.position(n.in[0].node);
    if (b < 0 || n.in[0].out != 0) continue;
    PlanNode& bn = nodes[b];
    if (bn.def->name != "batch_norm" || index.uses(bn.id, 0) != 1 || index.uses(bn.id, 1) >= 1000 ||
        index.uses(bn.id, 2) >= 1000)
      continue;
    // The statistics move to the activation's place: no node between may read them.
    bool read_early = false;
    for (int k = b + 1; k < int(a); ++k)
      for (auto v : nodes[k].in) read_early |= v.node == bn.id;
    if (read_early) continue;
    n.attrs = with_activation(bn.attrs, n);
    n.def = fused;
    n.in = bn.in;
    n.shapes = {n.shapes[0], bn.shapes[1], bn.shapes[2]};
    moved[bn.id] = n.id;
    dead[b] = 1;
    ++count;
  }
  for (auto& n : nodes)
    for (auto& v : n.in)
      if (moved.count(v.node)) v.node = moved[v.node];  // outputs 1 and 2 keep their index
  drop_dead(nodes, dead);
  return count;
}

int fuse_matmul_add(std::vector<PlanNode>& nodes, const std::vector<ValueId>& targets) {
  const OpDef* fused = Registry::get().find("matmul_add");
  if (!fused) return 0;
  const UseIndex index(nodes, targets);
  int count = 0;
  std::vector<char> dead(nodes.size(), 0);
  for (auto& n : nodes) {
    if (n.def->name != "add" || n.in.size() != 2) continue;
    for (size_t k = 0; k < 2; ++k) {
      const int p = index.position(n.in[k].node);
      if (p < 0 || dead[p]) continue;
      PlanNode& mm = nodes[p];
      // Both addends of the output's shape: the post-op adds without broadcasting.
      const ValueId other = n.in[1 - k];
      const int q = index.position(other.node);
      if (mm.def->name != "matmul" || index.uses(mm.id) != 1 || mm.shapes[0] != n.shapes[0] ||
          q < 0 || nodes[q].shapes.at(other.out) != n.shapes[0])
        continue;
      n.def = fused;
      n.in = {mm.in[0], mm.in[1], other};
      n.attrs = mm.attrs;
      dead[p] = 1;
      ++count;
      break;
    }
  }
  drop_dead(nodes, dead);
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

#include "runtime/autodiff.h"

#include <fmt/format.h>

#include <map>

namespace weft {

GradContext::GradContext(Builder& builder, int node, std::vector<Val> grad_out,
                         std::vector<bool> needs)
    : b(builder),
      node_(node),
      attrs_(builder.graph.nodes.at(node).attrs),
      in_(builder.graph.nodes.at(node).in),
      grad_out_(std::move(grad_out)),
      needs_(std::move(needs)) {}

Val GradContext::input(int i) const { return Val{&b, in_.at(i)}; }

std::vector<ValueId> gradients(Builder& b, ValueId loss, const std::vector<ValueId>& wrt) {
  Graph& g = b.graph;
  if (!g.shape(loss).empty())
    throw ShapeError(fmt::format("can only differentiate a scalar, but '{}' has shape {}",
                                 g.value_name(loss), shape_str(g.shape(loss))));
  const int end = int(g.nodes.size());  // nodes added below are not visited again

  // A node is on the path when it depends on some wrt value and loss depends on it.
  std::vector<char> from_wrt(end, 0), to_loss(end, 0);
  for (auto w : wrt) from_wrt.at(w.node) = 1;
  for (int i = 0; i < end; ++i)
    for (auto v : g.nodes[i].in)
      if (from_wrt[v.node]) from_wrt[i] = 1;
  to_loss.at(loss.node) = 1;
  for (int i = loss.node; i >= 0; --i)
    if (to_loss[i])
      for (auto v : g.nodes[i].in) to_loss[v.node] = 1;

  std::map<ValueId, std::vector<Val>> partial;
  partial[loss].push_back(b.constant(1.0));
  auto total = [&](ValueId v) -> Val {
    auto it = partial.find(v);
    if (it == partial.end() || it->second.empty()) return Val{};
    Val s = it->second[0];
    for (size_t k = 1; k < it->second.size(); ++k) s = s + it->second[k];
    it->second = {s};
    return s;
  };

  std::string saved_where = b.where;
  for (int i = loss.node; i >= 0; --i) {
    if (!from_wrt[i] || !to_loss[i]) continue;
    std::vector<Val> gout;
    bool any = false;
    for (int o = 0; o < int(g.nodes[i].shapes.size()); ++o) {
      gout.push_back(total({i, o}));
      any = any || bool(gout.back());
    }
    // Summing partials above may have grown the node vector: look the node up again.
    const Node& n = g.nodes[i];
    if (!any || n.def->is_source) continue;
    std::vector<bool> needs;
    bool any_need = false;
    for (auto v : n.in) {
      needs.push_back(from_wrt[v.node] && to_loss[v.node]);
      any_need = any_need || needs.back();
    }
    if (!any_need) continue;
    if (!n.def->grad_rule)
      throw ShapeError(
          fmt::format("op {} has no gradient rule, but node '{}' needs one", n.op(), n.name));
    std::string node_name = n.name;
    b.where = n.where;
    GradContext ctx(b, i, gout, needs);
    std::vector<Val> gin = g.nodes[i].def->grad_rule(ctx);
    WEFT_ASSERT(gin.size() <= needs.size(), "grad rule of " + g.nodes[i].op());
    for (size_t k = 0; k < gin.size(); ++k) {
      if (!needs[k] || !gin[k]) continue;
      ValueId src = g.nodes[i].in[k];
      WEFT_ASSERT(g.shape(gin[k].id) == g.shape(src),
                  fmt::format("gradient of {} input {} has shape {}, input has {}", node_name, k,
                              shape_str(g.shape(gin[k].id)), shape_str(g.shape(src))));
      partial[src].push_back(gin[k]);
    }
  }
  b.where = saved_where;

  std::vector<ValueId> out;
  for (auto w : wrt) {
    Val t = total(w);
    out.push_back(t ? t.id : b.op("zeros_like", {b.val(w)}).id);
  }
  return out;
}

// grad(of, wrt): the gradient of scalar `of` with respect to `wrt`, as graph nodes, so it
// can sit inside a loss (gradient penalties, contractive penalties).
WEFT_OP(grad)
    .doc(
        "Gradient of the scalar `of` with respect to `wrt`, built as graph nodes; usable "
        "inside losses and differentiable again.")
    .input("of")
    .input("wrt")
    .output("d_wrt")
    .expand([](Builder& b, const std::vector<Val>& in, const json&) {
      return std::vector<Val>{b.val(gradients(b, in[0].id, {in[1].id})[0])};
    });

}  // namespace weft

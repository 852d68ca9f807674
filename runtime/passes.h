// Graph passes that run while a plan is compiled, on the nodes the plan needs.
//  - dead code: only ancestors of the targets are kept (Graph::ancestors).
//  - fusion: linear followed by an activation becomes one linear_act node, which oneDNN
//    runs as an inner product with an eltwise post-op. Activation gradients are written in
//    terms of the activation's output, so in training too the linear's output usually has
//    the activation as its only consumer and the fusion applies.
#pragma once

#include <vector>

#include "runtime/graph.h"

namespace weft {

struct PlanNode {
  int id;  // the graph node whose outputs this node computes ({id, k})
  std::string name;
  const OpDef* def;
  std::vector<ValueId> in;
  json attrs;
  std::vector<Shape> shapes;
  std::string where;
};

std::vector<PlanNode> live_nodes(const Graph& g, const std::vector<ValueId>& targets);
// Returns the number of fusions made.
int fuse_linear_activation(std::vector<PlanNode>& nodes, const std::vector<ValueId>& targets);
// batch_norm whose output only relu or leaky_relu reads becomes one batch_norm_act node (the
// activation applied in batch norm's last pass); its statistics keep their output indices.
int fuse_batch_norm_activation(std::vector<PlanNode>& nodes, const std::vector<ValueId>& targets);
// add(matmul(a, b), c) whose product nothing else reads becomes one matmul_add node (the
// addition done in the product's last pass): a weight used twice, as a discriminator is on
// real and generated data, has the sum of two products as its gradient.
int fuse_matmul_add(std::vector<PlanNode>& nodes, const std::vector<ValueId>& targets);
// An elementwise op reading broadcast_like(s, ref) reads s directly when its own
// broadcasting gives the same result (gradients of sums feed such chains), sparing a
// tensor-sized write and read. Returns the number of inputs rewritten.
int skip_broadcasts(std::vector<PlanNode>& nodes);
// Drops nodes no target needs any more (after rewrites).
void prune(std::vector<PlanNode>& nodes, const std::vector<ValueId>& targets);

}  // namespace weft

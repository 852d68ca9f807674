// Reverse-mode autodiff, graph to graph. The gradient of a scalar with respect to some
// values is a set of new nodes appended to the same graph, built by each op's gradient
// rule from other ops. The result is an ordinary graph: it is planned like the forward
// pass, and can be differentiated again (gradient and contractive penalties).
#pragma once

#include "runtime/graph.h"

namespace weft {

// What a gradient rule sees: the node's inputs and outputs, the gradient flowing into
// each output (null where none flows), and which inputs need a gradient.
class GradContext {
 public:
  GradContext(Builder& b, int node, std::vector<Val> grad_out, std::vector<bool> needs);
  Builder& b;
  Val input(int i) const;
  Val output(int i = 0) const { return Val{&b, {node_, i}}; }
  Val grad_output(int i = 0) const { return grad_out_.at(i); }
  bool needs(int i) const { return needs_.at(i); }
  int num_inputs() const { return int(needs_.size()); }
  const json& attrs() const { return attrs_; }
  Val op(const std::string& name, const std::vector<Val>& in, const json& attrs = json::object()) {
    return b.op(name, in, attrs);
  }

 private:
  int node_;
  json attrs_;
  std::vector<ValueId> in_;
  std::vector<Val> grad_out_;
  std::vector<bool> needs_;
};

// Appends the nodes computing d(loss)/d(wrt[i]); loss must be a scalar (shape []).
// A value that loss does not depend on gets a zeros_like node. Throws ShapeError naming the
// op and the node when a needed gradient rule is missing.
std::vector<ValueId> gradients(Builder& b, ValueId loss, const std::vector<ValueId>& wrt);

}  // namespace weft

// The graph IR: nodes in topological order (a node only uses earlier nodes), each an op
// with attributes and typed outputs. The loader, autodiff and composite ops all add nodes
// through a Builder, which checks arity and attributes and runs the shape rule at once,
// so every value in a graph has a known symbolic shape.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "runtime/op.h"

namespace weft {

struct ValueId {
  int node = -1;
  int out = 0;
  bool valid() const { return node >= 0; }
  auto operator<=>(const ValueId&) const = default;
};

struct Node {
  std::string name;  // unique within the graph ("fake.linear_1", "d_loss")
  const OpDef* def = nullptr;
  std::vector<ValueId> in;
  json attrs;
  std::vector<Shape> shapes;  // one per output
  std::string where;          // the JSON pointer this node came from, for messages
  const std::string& op() const { return def->name; }
};

class Graph {
 public:
  std::vector<Node> nodes;
  const Shape& shape(ValueId v) const { return nodes.at(v.node).shapes.at(v.out); }
  std::string value_name(ValueId v) const;
  std::string unique_name(const std::string& base);
  int find(const std::string& name) const;  // -1 if absent
  // Nodes that are ancestors of `targets`, the targets included, ascending.
  std::vector<int> ancestors(const std::vector<ValueId>& targets) const;

 private:
  std::map<std::string, int> names_;
  std::map<std::string, int> counters_;
  friend class Builder;
};

class Builder;

// A value under construction; arithmetic on Vals adds nodes to the builder's graph.
struct Val {
  Builder* b = nullptr;
  ValueId id;
  explicit operator bool() const { return b != nullptr; }
  const Shape& shape() const;
};

class Builder {
 public:
  explicit Builder(Graph& g) : graph(g) {}
  Graph& graph;
  std::string prefix;  // prepended to generated node names
  std::string where;   // JSON pointer stamped on new nodes

  // Adds op `name` (or its expansion, for a composite op) and returns its outputs.
  std::vector<Val> ops(const std::string& name, const std::vector<Val>& in,
                       const json& attrs = json::object(), const std::string& node_name = "");
  Val op(const std::string& name, const std::vector<Val>& in, const json& attrs = json::object(),
         const std::string& node_name = "");
  Val constant(double v);
  Val val(ValueId v) { return Val{this, v}; }
  Val input(const std::string& name, const Shape& shape);
  Val param(const std::string& name, const Shape& shape);
  // Undo broadcasting: reduce x to like's shape (x itself when they match).
  Val sum_to(Val x, Val like);
};

Val operator+(Val a, Val b);
Val operator-(Val a, Val b);
Val operator*(Val a, Val b);
Val operator/(Val a, Val b);
Val operator-(Val a);
Val operator*(Val a, double s);
Val operator*(double s, Val a);
Val operator+(Val a, double s);
Val operator-(double s, Val a);

json shape_to_json(const Shape& s);
Shape shape_from_json(const json& j);  // accepts numbers and "B" (checked by the schema)

}  // namespace weft

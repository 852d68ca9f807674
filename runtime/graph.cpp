#include "runtime/graph.h"

#include <fmt/format.h>

#include <algorithm>

namespace weft {

std::string Graph::value_name(ValueId v) const {
  const Node& n = nodes.at(v.node);
  return n.def->outputs.size() > 1 ? n.name + ":" + n.def->outputs.at(v.out) : n.name;
}

std::string Graph::unique_name(const std::string& base) {
  if (!names_.count(base)) return base;
  for (int& k = counters_[base];; ++k) {
    std::string s = base + "#" + std::to_string(k);
    if (!names_.count(s)) return s;
  }
}

int Graph::find(const std::string& name) const {
  auto it = names_.find(name);
  return it == names_.end() ? -1 : it->second;
}

std::vector<int> Graph::ancestors(const std::vector<ValueId>& targets) const {
  std::vector<char> keep(nodes.size(), 0);
  for (auto t : targets) keep.at(t.node) = 1;
  for (int i = int(nodes.size()) - 1; i >= 0; --i)
    if (keep[i])
      for (auto v : nodes[i].in) keep[v.node] = 1;
  std::vector<int> r;
  for (int i = 0; i < int(nodes.size()); ++i)
    if (keep[i]) r.push_back(i);
  return r;
}

const Shape& Val::shape() const { return b->graph.shape(id); }

json shape_to_json(const Shape& s) {
  json j = json::array();
  for (auto& d : s) {
    if (!d.batch)
      j.push_back(d.n);
    else
      j.push_back(d.n == 1 ? json("B") : json(d.str()));
  }
  return j;
}

Shape shape_from_json(const json& j) {
  Shape s;
  for (auto& x : j) s.push_back(x == "B" ? Dim::B() : Dim(x.get<int64_t>()));
  return s;
}

std::vector<Val> Builder::ops(const std::string& name, const std::vector<Val>& in,
                              const json& attrs_given, const std::string& node_name) {
  const OpDef* def = Registry::get().find(name);
  if (!def) throw ShapeError(fmt::format("unknown op '{}' (weft ops lists them)", name));
  def->check_arity(in.size());
  json attrs = def->complete_attrs(attrs_given);
  for (auto& v : in) WEFT_ASSERT(v.b == this || v.b == nullptr || &v.b->graph == &graph);
  if (def->expansion) {
    std::string saved = prefix;
    prefix = node_name.empty() ? prefix : node_name + "/";
    auto outs = def->expansion(*this, in, attrs);
    prefix = saved;
    return outs;
  }
  std::vector<Shape> in_shapes;
  for (auto& v : in) in_shapes.push_back(graph.shape(v.id));
  Node n;
  n.def = def;
  n.attrs = std::move(attrs);
  for (auto& v : in) n.in.push_back(v.id);
  if (def->shape_rule) {
    n.shapes = def->shape_rule(ShapeContext{in_shapes, n.attrs});
    WEFT_ASSERT(n.shapes.size() == def->outputs.size(), "op " + name + " shape rule arity");
  }
  n.name = graph.unique_name(node_name.empty() ? prefix + name : node_name);
  n.where = where;
  int idx = int(graph.nodes.size());
  graph.names_[n.name] = idx;
  graph.nodes.push_back(std::move(n));
  std::vector<Val> outs;
  for (int i = 0; i < int(def->outputs.size()); ++i) outs.push_back(Val{this, {idx, i}});
  return outs;
}

Val Builder::op(const std::string& name, const std::vector<Val>& in, const json& attrs,
                const std::string& node_name) {
  auto outs = ops(name, in, attrs, node_name);
  WEFT_ASSERT(!outs.empty());
  return outs[0];
}

Val Builder::constant(double v) { return op("constant", {}, {{"value", v}}); }

Val Builder::input(const std::string& name, const Shape& shape) {
  return op("input", {}, {{"name", name}, {"shape", shape_to_json(shape)}}, name);
}

Val Builder::param(const std::string& name, const Shape& shape) {
  return op("param", {}, {{"name", name}, {"shape", shape_to_json(shape)}}, name);
}

Val Builder::sum_to(Val x, Val like) {
  if (x.shape() == like.shape()) return x;
  return op("sum_to_like", {x, like});
}

Val operator+(Val a, Val b) { return a.b->op("add", {a, b}); }
Val operator-(Val a, Val b) { return a.b->op("sub", {a, b}); }
Val operator*(Val a, Val b) { return a.b->op("mul", {a, b}); }
Val operator/(Val a, Val b) { return a.b->op("div", {a, b}); }
Val operator-(Val a) { return a.b->op("neg", {a}); }
Val operator*(Val a, double s) { return a * a.b->constant(s); }
Val operator*(double s, Val a) { return a.b->constant(s) * a; }
Val operator+(Val a, double s) { return a + a.b->constant(s); }
Val operator-(double s, Val a) { return a.b->constant(s) - a; }

// Sources: values the planner binds instead of computing.
static std::vector<Shape> attr_shape(const ShapeContext& c) {
  return {shape_from_json(c.attrs.at("shape"))};
}

WEFT_OP(input)
    .doc("A graph input filled before each run (data fields, noise).")
    .output("y")
    .required("name", AttrType::String, "the input's name")
    .required("shape", AttrType::ShapeSpec, "its shape, \"B\" for the batch")
    .shape(attr_shape)
    .source();

WEFT_OP(param)
    .doc("A parameter held by the model's parameter store.")
    .output("y")
    .required("name", AttrType::String, "the parameter's name (\"G.linear_0.weight\")")
    .required("shape", AttrType::ShapeSpec, "its shape")
    .shape(attr_shape)
    .source();

WEFT_OP(constant)
    .doc("A constant scalar (numbers written in a node's \"in\" become constants).")
    .output("y")
    .required("value", AttrType::Float, "the value")
    .shape([](const ShapeContext&) { return std::vector<Shape>{Shape{}}; })
    .source();

}  // namespace weft

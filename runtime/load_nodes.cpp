// The "nodes" section: the model's graph. Nodes are built in the order of what they use
// (a cycle is reported with its path); each node is an op, a net call or a reference.
// Also "outputs", which name values the nodes made.
#include <fmt/format.h>

#include <algorithm>
#include <functional>

#include "runtime/format.h"
#include "runtime/load.h"

namespace weft::load {

const std::set<std::string> kNodeKeys = format_key_names("node");

Val lookup(Load& l, const std::string& ref, Scope* scope, const std::string& where) {
  if (scope) {
    auto it = scope->local.find(ref);
    if (it != scope->local.end()) return it->second;
    if (scope->net) {
      auto p = scope->net->params.find(scope->net->name + "." + ref);
      if (p != scope->net->params.end()) return l.b.val(p->second);
    }
  }
  auto it = l.globals.find(ref);
  if (it != l.globals.end()) return it->second;
  if (!scope || !scope->net) {
    // "NET.layer": that layer's value in the net's first call.
    auto dot = ref.find('.');
    if (dot != std::string::npos) {
      auto fc = l.first_call.find(ref.substr(0, dot));
      if (fc != l.first_call.end()) {
        auto v = l.globals.find(fc->second + ref.substr(dot));
        if (v != l.globals.end()) return v->second;
      }
    }
  }
  l.fail(where, fmt::format("unknown id '{}'{}", ref,
                            scope && scope->net ? " in net " + scope->net->name : ""));
}

namespace {

Val resolve(Load& l, const json& ref, Scope* scope, const std::string& where, Val prev) {
  if (ref.is_string()) return lookup(l, ref.get<std::string>(), scope, where);
  if (ref.is_number()) {
    l.b.where = where;
    return l.b.constant(ref.get<double>());
  }
  if (ref.is_object()) return build_node(l, ref, scope, where, prev);
  l.fail(where, "expected an id, a number or an inline node, got " + brief(ref));
}

// A layer op (linear, conv2d) owns parameters: made on a net's first call, reused after.
// A parameter (or state) of a layer: made on a net's first call, reused after.
Val layer_param(Load& l, Scope* scope, const std::string& name, const ParamSpec& p,
                const std::string& where) {
  if (scope && scope->net && scope->net->params.count(name))
    return l.b.val(scope->net->params[name]);
  if (l.globals.count(name)) l.fail(where, "parameter '" + name + "' is defined twice");
  Val v = make_param(l, name, scope && scope->net ? scope->net->name : "", p.shape, p.init,
                     p.fan_in, p.fan_out, where);
  l.m.params.back().trainable = p.trainable;
  if (scope && scope->net) scope->net->params[name] = v.id;
  return v;
}

// A layer op (linear, conv2d) owns parameters: made on a net's first call, reused after.
void add_layer_params(Load& l, const OpDef& def, const json& full, Scope* scope,
                      const std::string& prefix, const std::string& where, std::vector<Val>& in) {
  std::vector<Shape> shapes{in[0].shape()};
  for (const ParamSpec& p : def.param_rule(shapes, full)) {
    check_init(l, p.init, ptr(where, p.name + "_init"));
    in.push_back(layer_param(l, scope, prefix + "." + p.name, p, where));
  }
  // "spectral_norm": true: the op sees weight / sigma(weight); the power-iteration vector u is
  // state of the layer, like batch norm's running statistics.
  if (full.value("spectral_norm", false)) {
    const ParamSpec u{"u",  {in.at(1).shape().at(0)}, {{"normal", {{"mean", 0}, {"std", 1}}}}, 1, 1,
                      false};
    in[1] = l.b.op("spectral_norm", {in[1], layer_param(l, scope, prefix + ".u", u, where)});
  }
}

}  // namespace

Val build_node(Load& l, const json& node, Scope* scope, const std::string& where, Val prev) {
  l.object(node, where, "a node object");
  l.doc(node, where);
  bool is_call = node.contains("call"), is_op = node.contains("op");
  if (is_call == is_op) l.fail(where, "a node has either \"op\" or \"call\"");
  std::vector<Val> in;
  if (node.contains("in")) {
    const json& list = node["in"];
    std::string iw = ptr(where, "in");
    if (list.is_array()) {
      for (size_t i = 0; i < list.size(); ++i)
        in.push_back(resolve(l, list[i], scope, ptr(iw, i), prev));
    } else {
      in.push_back(resolve(l, list, scope, iw, prev));
    }
  } else {
    if (!prev) l.fail(where, "has no \"in\" and there is no previous node to take its input from");
    in.push_back(prev);
  }
  std::string id;
  if (node.contains("id")) {
    id = l.string(node["id"], ptr(where, "id"), "a non-empty string");
    if (id.empty()) l.fail(ptr(where, "id"), "expected a non-empty string");
  }
  if (is_call) return call_net(l, node, in, id, scope, where);

  std::string op = l.string(node["op"], ptr(where, "op"), "an op name");
  const OpDef* def = Registry::get().find(op);
  if (!def || def->is_source || !def->internal_why.empty())
    l.fail(ptr(where, "op"), fmt::format("unknown op '{}' (weft ops lists the ops)", op));
  json attrs = json::object();
  for (auto& [k, v] : node.items())
    if (!kNodeKeys.count(k)) attrs[k] = v;

  // A name for the node and, in a net, for its parameters.
  const bool in_net = scope && scope->net;
  std::string local = id;
  if (in_net && local.empty()) local = fmt::format("{}_{}", op, scope->op_count[op]);
  if (in_net) scope->op_count[op]++;
  std::string node_name = in_net ? scope->call_id + "." + local : id;
  std::string loc = where + " (" + op + ")";
  if (in_net) loc += " in the call at " + scope->call_where;
  try {
    l.b.where = where;
    json full = def->complete_attrs(attrs);
    if (full.value("spectral_norm", false) && !(def->param_rule && in.size() == 1))
      throw AttrError("spectral_norm",
                      "spectral_norm normalizes a layer's own weight; with the weight given as "
                      "an input, use the spectral_norm op on it");
    if (def->param_rule && in.size() == 1) {
      std::string prefix = in_net ? scope->net->name + "." + local : (id.empty() ? op : id);
      add_layer_params(l, *def, full, scope, prefix, where, in);
    }
    l.b.where = where;
    Val out = l.b.ops(op, in, attrs, node_name)[0];
    if (!local.empty() && in_net) {
      scope->local[local] = out;
      l.globals[node_name] = out;
    } else if (!id.empty()) {
      l.globals[id] = out;  // inline nodes with ids can be named too (train.log, outputs)
    }
    return out;
  } catch (const AttrError& e) {
    l.fail(e.key().empty() ? where : ptr(where, e.key()), e.what());
  } catch (const ShapeError& e) {
    l.fail(loc, e.what());
  }
}

namespace {

// The node that each node depends on, by index: the ids in its "in" (inline nodes
// included), or the previous node when it has no "in".
std::vector<std::set<size_t>> node_deps(const json& nodes,
                                        const std::map<std::string, size_t>& index) {
  std::vector<std::set<size_t>> deps(nodes.size());
  std::function<void(const json&, size_t)> collect = [&](const json& n, size_t i) {
    if (!n.is_object() || !n.contains("in")) return;
    const json& in = n["in"];
    auto one = [&](const json& r) {
      if (r.is_string()) {
        std::string s = r.get<std::string>();
        auto it = index.find(s);
        if (it == index.end()) it = index.find(s.substr(0, s.find('.')));  // "call.layer"
        if (it != index.end()) deps[i].insert(it->second);
      } else if (r.is_object()) {
        collect(r, i);
      }
    };
    if (in.is_array())
      for (auto& r : in) one(r);
    else
      one(in);
  };
  for (size_t i = 0; i < nodes.size(); ++i) {
    collect(nodes[i], i);
    if (!nodes[i].contains("in") && i > 0) deps[i].insert(i - 1);
  }
  return deps;
}

// Depth-first order; a back edge is a cycle, reported with its path.
std::vector<size_t> node_order(const Load& l, const json& nodes,
                               const std::vector<std::set<size_t>>& deps) {
  std::vector<int> state(nodes.size(), 0);
  std::vector<size_t> order, path;
  auto label = [&](size_t k) {
    const json& n = nodes[k];
    return n.contains("id") && n["id"].is_string() ? n["id"].get<std::string>()
                                                   : fmt::format("#{}", k);
  };
  std::function<void(size_t)> visit = [&](size_t i) {
    if (state[i] == 2) return;
    if (state[i] == 1) {
      auto at = std::find(path.begin(), path.end(), i);
      std::vector<std::string> names;
      for (auto p = at; p != path.end(); ++p) names.push_back(label(*p));
      names.push_back(label(i));
      l.fail(ptr("/nodes", i), fmt::format("cycle: {}", fmt::join(names, " -> ")));
    }
    state[i] = 1;
    path.push_back(i);
    for (size_t d : deps[i]) visit(d);
    path.pop_back();
    state[i] = 2;
    order.push_back(i);
  };
  for (size_t i = 0; i < nodes.size(); ++i) visit(i);
  return order;
}

}  // namespace

void load_nodes(Load& l) {
  if (!l.root.contains("nodes")) return;
  const json& nodes = l.array(l.root["nodes"], "/nodes", "a list of nodes");
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < nodes.size(); ++i) {
    l.object(nodes[i], ptr("/nodes", i), "a node object");
    if (nodes[i].contains("id") && nodes[i]["id"].is_string()) {
      std::string id = nodes[i]["id"].get<std::string>();
      if (index.count(id) || l.globals.count(id))
        l.fail(ptr(ptr("/nodes", i), "id"), "id '" + id + "' is used twice");
      index[id] = i;
    }
  }
  std::map<size_t, Val> built;
  for (size_t i : node_order(l, nodes, node_deps(nodes, index))) {
    Val prev = i > 0 && built.count(i - 1) ? built[i - 1] : Val{};
    Val v = build_node(l, nodes[i], nullptr, ptr("/nodes", i), prev);
    built[i] = v;
    if (nodes[i].contains("id")) l.globals[nodes[i]["id"].get<std::string>()] = v;
  }
}

void load_outputs(Load& l) {
  if (!l.root.contains("outputs")) return;
  const json& outs = l.object(l.root["outputs"], "/outputs", "an object naming values");
  for (auto& [name, ref] : outs.items()) {
    std::string w = ptr("/outputs", name);
    l.m.outputs[name] = lookup(l, l.string(ref, w, "an id"), nullptr, w).id;
  }
}

}  // namespace weft::load

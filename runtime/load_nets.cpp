// The "nets" section: each net's inputs and layers, kept until a node calls the net;
// call_net then builds the layers for that call, sharing parameters between calls.
#include <fmt/format.h>

#include "runtime/format.h"
#include "runtime/load.h"

namespace weft::load {

void load_nets(Load& l) {
  if (!l.root.contains("nets")) return;
  const json& ns = l.object(l.root["nets"], "/nets", "an object of named nets");
  for (auto& [name, spec] : ns.items()) {
    std::string w = ptr("/nets", name);
    l.check_keys(spec, w, format_key_names("net"));
    l.doc(spec, w);
    if (name.find('.') != std::string::npos) l.fail(w, "a net's name cannot contain '.'");
    NetDef net;
    net.name = name;
    net.where = w;
    if (!spec.contains("in")) l.fail(w, "missing \"in\": the names of the net's inputs");
    const json& in = spec["in"];
    if (!in.is_array() || in.empty())
      l.fail(ptr(w, "in"), "expected a list of input names, got " + brief(in));
    for (size_t i = 0; i < in.size(); ++i)
      net.formals.push_back(l.string(in[i], ptr(ptr(w, "in"), i), "a name"));
    bool has_layers = spec.contains("layers"), has_nodes = spec.contains("nodes");
    if (has_layers == has_nodes) l.fail(w, "a net has either \"layers\" or \"nodes\"");
    const char* key = has_layers ? "layers" : "nodes";
    net.layers = &spec[key];
    net.layers_where = ptr(w, key);
    if (!net.layers->is_array() || net.layers->empty())
      l.fail(net.layers_where, "expected a non-empty list, got " + brief(*net.layers));
    if (spec.contains("out")) net.out = l.string(spec["out"], ptr(w, "out"), "the id of a layer");
    l.nets[name] = net;
  }
}

Val call_net(Load& l, const json& node, const std::vector<Val>& in, const std::string& id,
             Scope* outer, const std::string& where) {
  for (auto& [k, v] : node.items())
    if (!kNodeKeys.count(k)) l.fail(ptr(where, k), "unknown key \"" + k + "\" in a net call");
  std::string name = l.string(node["call"], ptr(where, "call"), "a net name");
  auto it = l.nets.find(name);
  if (it == l.nets.end()) l.fail(ptr(where, "call"), fmt::format("unknown net '{}'", name));
  if (outer && outer->net) l.fail(ptr(where, "call"), "nets cannot call nets");
  NetDef& net = it->second;
  if (in.size() != net.formals.size())
    l.fail(where, fmt::format("net {} takes {} input(s) ({}), got {}", name, net.formals.size(),
                              fmt::join(net.formals, ", "), in.size()));
  Scope s;
  s.net = &net;
  s.call_id = id.empty() ? l.b.graph.unique_name(name + "_call") : id;
  s.call_where = where;
  for (size_t i = 0; i < in.size(); ++i) s.local[net.formals[i]] = in[i];
  if (!l.first_call.count(name)) l.first_call[name] = s.call_id;
  Val prev = in[0], last;
  for (size_t i = 0; i < net.layers->size(); ++i) {
    const json& layer = (*net.layers)[i];
    std::string lw = ptr(net.layers_where, i);
    if (layer.is_object() && layer.contains("call"))
      l.fail(ptr(lw, "call"), "nets cannot call nets");
    last = build_node(l, layer, &s, lw, prev);
    prev = last;
  }
  if (!net.out.empty()) {
    auto o = s.local.find(net.out);
    if (o == s.local.end()) l.fail(ptr(net.where, "out"), "no layer has id '" + net.out + "'");
    last = o->second;
  }
  return last;
}

}  // namespace weft::load

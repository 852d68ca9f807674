// Loading a model file: parse, check every key against what it may hold, expand layer
// lists and net calls into ops, infer every shape, and report the first mistake with the
// file, its JSON pointer and what was expected. Nothing is run and nothing is written.
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "runtime/init.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"
#include "runtime/plugin.h"

namespace weft {

const ModelParam* Model::param(const std::string& pname) const {
  for (auto& p : params)
    if (p.name == pname) return &p;
  return nullptr;
}

namespace {

std::string esc(const std::string& key) {  // JSON pointer escaping
  std::string r;
  for (char c : key) r += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
  return r;
}

std::string ptr(const std::string& base, const std::string& key) { return base + "/" + esc(key); }
std::string ptr(const std::string& base, size_t i) { return base + "/" + std::to_string(i); }

std::string brief(const json& v) {
  std::string s = v.dump();
  return s.size() > 50 ? s.substr(0, 47) + "..." : s;
}

// The keys a node may have besides its attributes.
const std::set<std::string> kNodeKeys = {"id", "op", "in", "call", "doc"};

class Loader {
 public:
  Loader(Model& m, const json& root) : m_(m), root_(root), b_(m.graph) {}

  void run() {
    check_keys(root_, "",
               {"weft", "name", "doc", "requires", "data", "inputs", "params", "nets", "nodes",
                "train", "outputs"});
    if (!root_.contains("weft")) fail("", "missing \"weft\": 1 (the format version)");
    if (root_["weft"] != 1) fail("/weft", "expected format version 1, got " + brief(root_["weft"]));
    m_.name = root_.value("name", "");
    if (root_.contains("requires")) {  // plugins are loaded by the user, never by a graph
      const json& r = root_["requires"];
      if (!r.is_array()) fail("/requires", "expected a list of plugin names");
      for (size_t i = 0; i < r.size(); ++i) {
        if (!r[i].is_string()) fail(ptr("/requires", i), "expected a plugin name");
        if (!find_plugin(r[i]))
          fail(ptr("/requires", i), fmt::format("the graph requires plugin '{}', which is not "
                                                "loaded: pass --plugin PATH to its library "
                                                "(or list the library in WEFT_PLUGIN_PATH)",
                                                r[i].get<std::string>()));
      }
    }
    load_data();
    load_inputs();
    load_params();
    load_nets();
    load_nodes();
    load_outputs();
    load_train();
  }

 private:
  Model& m_;
  const json& root_;
  Builder b_;

  struct NetDef {
    std::string name, where;
    std::vector<std::string> formals;
    const json* layers = nullptr;
    std::string layers_where, out;
    bool called = false;
    std::map<std::string, ValueId> params;  // full name -> node
  };
  std::map<std::string, NetDef> nets_;
  std::map<std::string, Val> globals_;             // node ids, inputs, params, "call.layer"
  std::map<std::string, std::string> first_call_;  // net -> first call id

  [[noreturn]] void fail(const std::string& where, const std::string& what) {
    throw Error(m_.file, where, what);
  }

  void check_keys(const json& obj, const std::string& where, const std::set<std::string>& allowed) {
    if (!obj.is_object()) fail(where, "expected an object, got " + brief(obj));
    for (auto& [k, v] : obj.items())
      if (!allowed.count(k))
        fail(ptr(where, k),
             fmt::format("unknown key \"{}\" (expected one of: {})", k, fmt::join(allowed, ", ")));
  }

  double number(const json& obj, const std::string& key, const std::string& where, double dflt) {
    if (!obj.contains(key)) return dflt;
    if (!obj[key].is_number()) fail(ptr(where, key), "expected a number, got " + brief(obj[key]));
    return obj[key].get<double>();
  }

  int64_t positive(const json& obj, const std::string& key, const std::string& where,
                   int64_t dflt) {
    if (!obj.contains(key)) return dflt;
    const json& v = obj[key];
    if (!v.is_number_integer() || v.get<int64_t>() <= 0)
      fail(ptr(where, key), "expected a positive integer, got " + brief(v));
    return v.get<int64_t>();
  }

  Shape shape_at(const json& v, const std::string& where) {
    if (!v.is_array())
      fail(where, "expected a shape (a list of positive integers and \"B\"), got " + brief(v));
    Shape s;
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] == "B")
        s.push_back(Dim::B());
      else if (v[i].is_number_integer() && v[i].get<int64_t>() > 0)
        s.push_back(Dim(v[i].get<int64_t>()));
      else
        fail(ptr(where, i), "expected a positive integer or \"B\", got " + brief(v[i]));
    }
    return s;
  }

  void load_data() {
    if (!root_.contains("data")) return;
    const json& d = root_["data"];
    check_keys(d, "/data", {"dataset", "split", "range"});
    m_.data.dataset = d.value("dataset", "fashion-mnist");
    if (m_.data.dataset != "fashion-mnist")
      fail("/data/dataset",
           "expected \"fashion-mnist\" (the dataset weft reads), got " + brief(d["dataset"]));
    m_.data.split = d.value("split", "train");
    if (m_.data.split != "train" && m_.data.split != "test")
      fail("/data/split", "expected \"train\" or \"test\", got " + brief(d["split"]));
    if (d.contains("range")) {
      const json& r = d["range"];
      if (!r.is_array() || r.size() != 2 || !r[0].is_number() || !r[1].is_number() || r[0] >= r[1])
        fail("/data/range", "expected [low, high] with low < high, got " + brief(r));
      m_.data.low = r[0];
      m_.data.high = r[1];
    }
  }

  void load_inputs() {
    if (!root_.contains("inputs")) return;
    const json& ins = root_["inputs"];
    if (!ins.is_object()) fail("/inputs", "expected an object of named inputs");
    for (auto& [name, spec] : ins.items()) {
      std::string w = ptr("/inputs", name);
      check_keys(spec, w, {"shape", "from", "doc"});
      if (!spec.contains("shape")) fail(w, "missing \"shape\"");
      if (!spec.contains("from"))
        fail(w,
             "missing \"from\" (\"data.images\", \"data.labels\", \"data.onehot\", {\"normal\": "
             "...} or {\"uniform\": ...})");
      ModelInput in;
      in.name = name;
      in.shape = shape_at(spec["shape"], ptr(w, "shape"));
      if (in.shape.empty() || in.shape[0] != Dim::B())
        fail(ptr(w, "shape"), "an input's first axis must be the batch \"B\"");
      const json& from = spec["from"];
      std::string fw = ptr(w, "from");
      Shape rest(in.shape.begin() + 1, in.shape.end());
      Dim per = shape_numel(rest);
      if (from.is_string()) {
        in.source = from;
        m_.uses_data = true;
        if (in.source == "data.images") {
          if (per != Dim(784))
            fail(
                ptr(w, "shape"),
                fmt::format("data.images has 784 values per example (1x28x28), the shape {} has {}",
                            shape_str(in.shape), per.str()));
        } else if (in.source == "data.labels") {
          if (per != Dim(1))
            fail(ptr(w, "shape"),
                 "data.labels has one value per example: use [\"B\"] or [\"B\", 1]");
        } else if (in.source == "data.onehot") {
          if (per != Dim(10))
            fail(ptr(w, "shape"), "data.onehot has 10 values per example: use [\"B\", 10]");
        } else {
          fail(fw,
               "expected \"data.images\", \"data.labels\", \"data.onehot\", {\"normal\": {...}} or "
               "{\"uniform\": {...}}, got " +
                   brief(from));
        }
      } else if (from.is_object() && from.size() == 1 && from.contains("normal")) {
        check_keys(from["normal"], ptr(fw, "normal"), {"mean", "std"});
        in.source = "normal";
        in.a = number(from["normal"], "mean", ptr(fw, "normal"), 0);
        in.b = number(from["normal"], "std", ptr(fw, "normal"), 1);
        if (in.b < 0) fail(ptr(ptr(fw, "normal"), "std"), "expected std >= 0");
      } else if (from.is_object() && from.size() == 1 && from.contains("uniform")) {
        check_keys(from["uniform"], ptr(fw, "uniform"), {"low", "high"});
        in.source = "uniform";
        in.a = number(from["uniform"], "low", ptr(fw, "uniform"), -1);
        in.b = number(from["uniform"], "high", ptr(fw, "uniform"), 1);
        if (in.a >= in.b) fail(fw, "expected low < high");
      } else {
        fail(fw,
             "expected \"data.images\", \"data.labels\", \"data.onehot\", {\"normal\": {...}} or "
             "{\"uniform\": {...}}, got " +
                 brief(from));
      }
      b_.where = w;
      in.id = b_.input(name, in.shape).id;
      globals_[name] = b_.val(in.id);
      m_.inputs.push_back(in);
    }
  }

  Val make_param(const std::string& name, const std::string& net, const Shape& shape,
                 const json& init, double fan_in, double fan_out, const std::string& where) {
    ModelParam p{name, net, shape, init, fan_in, fan_out, true, {}};
    b_.where = where;
    p.id = b_.param(name, shape).id;
    m_.params.push_back(p);
    if (!net.empty()) m_.net_params[net].push_back(name);
    globals_[name] = b_.val(p.id);
    return b_.val(p.id);
  }

  void load_params() {
    if (!root_.contains("params")) return;
    const json& ps = root_["params"];
    if (!ps.is_object()) fail("/params", "expected an object of named parameters");
    for (auto& [name, spec] : ps.items()) {
      std::string w = ptr("/params", name);
      check_keys(spec, w, {"shape", "init", "trainable", "doc"});
      if (!spec.contains("shape")) fail(w, "missing \"shape\"");
      Shape s = shape_at(spec["shape"], ptr(w, "shape"));
      for (auto& d : s)
        if (d.batch) fail(ptr(w, "shape"), "a parameter's shape cannot depend on the batch");
      json init = spec.value("init", json("zeros"));
      try {
        check_initializer(init);
      } catch (const AttrError& e) {
        fail(ptr(w, "init"), e.what());
      }
      int64_t fan_in = s.size() > 1 ? numel(bind_batch(Shape(s.begin() + 1, s.end()), 1)) : 1;
      make_param(name, "", s, init, double(fan_in), s.empty() ? 1.0 : double(s[0].n), w);
      if (spec.contains("trainable")) {
        if (!spec["trainable"].is_boolean()) fail(ptr(w, "trainable"), "expected true or false");
        m_.params.back().trainable = spec["trainable"];
      }
    }
  }

  void load_nets() {
    if (!root_.contains("nets")) return;
    const json& ns = root_["nets"];
    if (!ns.is_object()) fail("/nets", "expected an object of named nets");
    for (auto& [name, spec] : ns.items()) {
      std::string w = ptr("/nets", name);
      check_keys(spec, w, {"in", "layers", "nodes", "out", "doc"});
      if (name.find('.') != std::string::npos) fail(w, "a net's name cannot contain '.'");
      NetDef net;
      net.name = name;
      net.where = w;
      if (!spec.contains("in")) fail(w, "missing \"in\": the names of the net's inputs");
      const json& in = spec["in"];
      if (!in.is_array() || in.empty()) fail(ptr(w, "in"), "expected a list of input names");
      for (size_t i = 0; i < in.size(); ++i) {
        if (!in[i].is_string()) fail(ptr(ptr(w, "in"), i), "expected a name");
        net.formals.push_back(in[i]);
      }
      bool has_layers = spec.contains("layers"), has_nodes = spec.contains("nodes");
      if (has_layers == has_nodes) fail(w, "a net has either \"layers\" or \"nodes\"");
      const char* key = has_layers ? "layers" : "nodes";
      net.layers = &spec[key];
      net.layers_where = ptr(w, key);
      if (!net.layers->is_array() || net.layers->empty())
        fail(net.layers_where, "expected a non-empty list");
      if (spec.contains("out")) {
        if (!spec["out"].is_string()) fail(ptr(w, "out"), "expected the id of a layer");
        net.out = spec["out"];
      }
      nets_[name] = net;
    }
  }

  // --- nodes -------------------------------------------------------------------------

  struct Scope {
    std::map<std::string, Val> local;  // net formals and layer ids
    NetDef* net = nullptr;
    std::string call_id, call_where;
    std::map<std::string, int> op_count;
  };

  Val lookup(const std::string& ref, Scope* scope, const std::string& where) {
    if (scope) {
      auto it = scope->local.find(ref);
      if (it != scope->local.end()) return it->second;
      if (scope->net) {
        auto p = scope->net->params.find(scope->net->name + "." + ref);
        if (p != scope->net->params.end()) return b_.val(p->second);
      }
    }
    auto it = globals_.find(ref);
    if (it != globals_.end()) return it->second;
    if (!scope || !scope->net) {
      // "NET.layer": that layer's value in the net's first call.
      auto dot = ref.find('.');
      if (dot != std::string::npos) {
        auto fc = first_call_.find(ref.substr(0, dot));
        if (fc != first_call_.end()) {
          auto v = globals_.find(fc->second + ref.substr(dot));
          if (v != globals_.end()) return v->second;
        }
      }
    }
    fail(where, fmt::format("unknown id '{}'{}", ref,
                            scope && scope->net ? " in net " + scope->net->name : ""));
  }

  Val resolve(const json& ref, Scope* scope, const std::string& where, Val prev) {
    if (ref.is_string()) return lookup(ref, scope, where);
    if (ref.is_number()) {
      b_.where = where;
      return b_.constant(ref.get<double>());
    }
    if (ref.is_object()) return build(ref, scope, where, prev);
    fail(where, "expected an id, a number or an inline node, got " + brief(ref));
  }

  // Builds one node (a layer, a top-level node or an inline node) and returns its value.
  Val build(const json& node, Scope* scope, const std::string& where, Val prev) {
    if (!node.is_object()) fail(where, "expected a node object, got " + brief(node));
    bool is_call = node.contains("call"), is_op = node.contains("op");
    if (is_call == is_op) fail(where, "a node has either \"op\" or \"call\"");
    std::vector<Val> in;
    if (node.contains("in")) {
      const json& list = node["in"];
      std::string iw = ptr(where, "in");
      if (list.is_array()) {
        for (size_t i = 0; i < list.size(); ++i)
          in.push_back(resolve(list[i], scope, ptr(iw, i), prev));
      } else {
        in.push_back(resolve(list, scope, iw, prev));
      }
    } else {
      if (!prev) fail(where, "has no \"in\" and there is no previous node to take its input from");
      in.push_back(prev);
    }
    std::string id;
    if (node.contains("id")) {
      if (!node["id"].is_string() || node["id"].get<std::string>().empty())
        fail(ptr(where, "id"), "expected a non-empty string");
      id = node["id"];
    }
    if (is_call) return call(node, in, id, scope, where);

    if (!node["op"].is_string()) fail(ptr(where, "op"), "expected an op name");
    std::string op = node["op"];
    const OpDef* def = Registry::get().find(op);
    if (!def || def->is_source || !def->internal_why.empty())
      fail(ptr(where, "op"), fmt::format("unknown op '{}' (weft ops lists the ops)", op));
    json attrs = json::object();
    for (auto& [k, v] : node.items())
      if (!kNodeKeys.count(k)) attrs[k] = v;

    // A name for the node and, in a net, for its parameters.
    std::string local = id;
    if (scope && scope->net && local.empty()) local = fmt::format("{}_{}", op, scope->op_count[op]);
    if (scope && scope->net) scope->op_count[op]++;
    std::string node_name = scope && scope->net ? scope->call_id + "." + local : id;
    std::string loc = where + " (" + op + ")";
    if (scope && scope->net) loc += " in the call at " + scope->call_where;
    try {
      b_.where = where;
      json full = def->complete_attrs(attrs);
      if (def->param_rule && in.size() == 1) {
        std::vector<Shape> shapes{in[0].shape()};
        std::string prefix =
            scope && scope->net ? scope->net->name + "." + local : (id.empty() ? op : id);
        for (const ParamSpec& p : def->param_rule(shapes, full)) {
          std::string name = prefix + "." + p.name;
          try {
            check_initializer(p.init);
          } catch (const AttrError& e) {
            throw AttrError(p.name + "_init", e.what());
          }
          Val v;
          if (scope && scope->net && scope->net->params.count(name)) {
            v = b_.val(scope->net->params[name]);
          } else {
            if (globals_.count(name)) fail(where, "parameter '" + name + "' is defined twice");
            v = make_param(name, scope && scope->net ? scope->net->name : "", p.shape, p.init,
                           p.fan_in, p.fan_out, where);
            m_.params.back().trainable = p.trainable;
            if (scope && scope->net) scope->net->params[name] = v.id;
          }
          in.push_back(v);
        }
      }
      b_.where = where;
      Val out = b_.ops(op, in, attrs, node_name)[0];
      if (!local.empty() && scope && scope->net) {
        scope->local[local] = out;
        globals_[node_name] = out;
      } else if (!id.empty()) {
        globals_[id] = out;  // inline nodes with ids can be named too (train.log, outputs)
      }
      return out;
    } catch (const AttrError& e) {
      fail(e.key().empty() ? where : ptr(where, e.key()), e.what());
    } catch (const ShapeError& e) {
      fail(loc, e.what());
    }
  }

  Val call(const json& node, const std::vector<Val>& in, const std::string& id, Scope* outer,
           const std::string& where) {
    for (auto& [k, v] : node.items())
      if (!kNodeKeys.count(k)) fail(ptr(where, k), "unknown key \"" + k + "\" in a net call");
    if (!node["call"].is_string()) fail(ptr(where, "call"), "expected a net name");
    std::string name = node["call"];
    auto it = nets_.find(name);
    if (it == nets_.end()) fail(ptr(where, "call"), fmt::format("unknown net '{}'", name));
    if (outer && outer->net) fail(ptr(where, "call"), "nets cannot call nets");
    NetDef& net = it->second;
    if (in.size() != net.formals.size())
      fail(where, fmt::format("net {} takes {} input(s) ({}), got {}", name, net.formals.size(),
                              fmt::join(net.formals, ", "), in.size()));
    Scope s;
    s.net = &net;
    s.call_id = id.empty() ? b_.graph.unique_name(name + "_call") : id;
    s.call_where = where;
    for (size_t i = 0; i < in.size(); ++i) s.local[net.formals[i]] = in[i];
    if (!first_call_.count(name)) first_call_[name] = s.call_id;
    Val prev = in[0], last;
    for (size_t i = 0; i < net.layers->size(); ++i) {
      const json& layer = (*net.layers)[i];
      std::string lw = ptr(net.layers_where, i);
      if (layer.is_object() && layer.contains("call"))
        fail(ptr(lw, "call"), "nets cannot call nets");
      last = build(layer, &s, lw, prev);
      prev = last;
    }
    net.called = true;
    if (!net.out.empty()) {
      auto o = s.local.find(net.out);
      if (o == s.local.end()) fail(ptr(net.where, "out"), "no layer has id '" + net.out + "'");
      last = o->second;
    }
    return last;
  }

  // Top-level nodes may come in any order: they are sorted by what they use, and a cycle
  // is reported with its path.
  void load_nodes() {
    if (!root_.contains("nodes")) return;
    const json& nodes = root_["nodes"];
    if (!nodes.is_array()) fail("/nodes", "expected a list of nodes");
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (!nodes[i].is_object())
        fail(ptr("/nodes", i), "expected a node object, got " + brief(nodes[i]));
      if (nodes[i].contains("id") && nodes[i]["id"].is_string()) {
        std::string id = nodes[i]["id"];
        if (index.count(id) || globals_.count(id))
          fail(ptr(ptr("/nodes", i), "id"), "id '" + id + "' is used twice");
        index[id] = i;
      }
    }
    std::vector<std::set<size_t>> deps(nodes.size());
    std::function<void(const json&, size_t)> collect = [&](const json& n, size_t i) {
      if (!n.is_object() || !n.contains("in")) return;
      const json& in = n["in"];
      auto one = [&](const json& r) {
        if (r.is_string()) {
          std::string s = r;
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
    // Depth-first order; a back edge is a cycle.
    std::vector<int> state(nodes.size(), 0);
    std::vector<size_t> order, path;
    std::function<void(size_t)> visit = [&](size_t i) {
      if (state[i] == 2) return;
      if (state[i] == 1) {
        auto at = std::find(path.begin(), path.end(), i);
        std::vector<std::string> names;
        auto label = [&](size_t k) {
          return nodes[k].contains("id") ? nodes[k]["id"].get<std::string>()
                                         : fmt::format("#{}", k);
        };
        for (auto p = at; p != path.end(); ++p) names.push_back(label(*p));
        names.push_back(label(i));
        fail(ptr("/nodes", i), fmt::format("cycle: {}", fmt::join(names, " -> ")));
      }
      state[i] = 1;
      path.push_back(i);
      for (size_t d : deps[i]) visit(d);
      path.pop_back();
      state[i] = 2;
      order.push_back(i);
    };
    for (size_t i = 0; i < nodes.size(); ++i) visit(i);
    std::map<size_t, Val> built;
    for (size_t i : order) {
      Val prev = i > 0 && built.count(i - 1) ? built[i - 1] : Val{};
      Val v = build(nodes[i], nullptr, ptr("/nodes", i), prev);
      built[i] = v;
      if (nodes[i].contains("id")) globals_[nodes[i]["id"]] = v;
    }
  }

  void load_outputs() {
    if (!root_.contains("outputs")) return;
    const json& outs = root_["outputs"];
    if (!outs.is_object()) fail("/outputs", "expected an object naming values");
    for (auto& [name, ref] : outs.items()) {
      if (!ref.is_string()) fail(ptr("/outputs", name), "expected an id");
      m_.outputs[name] = lookup(ref, nullptr, ptr("/outputs", name)).id;
    }
  }

  void load_train() {
    if (!root_.contains("train")) return;
    const json& t = root_["train"];
    check_keys(t, "/train",
               {"batch", "steps", "seed", "phases", "log", "log_every", "sample_every",
                "checkpoint_every"});
    TrainSpec& ts = m_.train;
    ts.batch = positive(t, "batch", "/train", ts.batch);
    ts.steps = positive(t, "steps", "/train", ts.steps);
    if (t.contains("seed")) {
      if (!t["seed"].is_number_unsigned())
        fail("/train/seed", "expected a non-negative integer, got " + brief(t["seed"]));
      ts.seed = t["seed"];
    }
    ts.log_every = positive(t, "log_every", "/train", ts.log_every);
    ts.sample_every = positive(t, "sample_every", "/train", ts.sample_every);
    ts.checkpoint_every = positive(t, "checkpoint_every", "/train", ts.checkpoint_every);
    if (!t.contains("phases")) fail("/train", "missing \"phases\"");
    const json& ps = t["phases"];
    if (!ps.is_array() || ps.empty()) fail("/train/phases", "expected a non-empty list of phases");
    for (size_t i = 0; i < ps.size(); ++i) {
      std::string w = ptr("/train/phases", i);
      const json& p = ps[i];
      check_keys(p, w, {"minimize", "params", "optimizer", "repeat", "doc"});
      PhaseSpec ph;
      ph.where = w;
      if (!p.contains("minimize") || !p["minimize"].is_string())
        fail(w, "missing \"minimize\": the id of a scalar loss");
      ph.loss_name = p["minimize"];
      ph.loss = lookup(ph.loss_name, nullptr, ptr(w, "minimize")).id;
      const Shape& ls = m_.graph.shape(ph.loss);
      if (!ls.empty())
        fail(ptr(w, "minimize"), fmt::format("a phase minimizes a scalar, but '{}' has shape {}",
                                             ph.loss_name, shape_str(ls)));
      if (!p.contains("params") || !p["params"].is_array() || p["params"].empty())
        fail(ptr(w, "params"), "expected a list of nets or parameter names");
      for (size_t k = 0; k < p["params"].size(); ++k) {
        const json& r = p["params"][k];
        std::string rw = ptr(ptr(w, "params"), k);
        if (!r.is_string()) fail(rw, "expected a net or parameter name");
        std::string s = r;
        if (nets_.count(s)) {
          if (!m_.net_params.count(s))
            fail(rw, "net " + s + " has no parameters (or is never called)");
          for (auto& n : m_.net_params[s])
            if (m_.param(n)->trainable) ph.params.push_back(n);
        } else if (const ModelParam* mp = m_.param(s)) {
          if (!mp->trainable) fail(rw, "parameter " + s + " is not trainable");
          ph.params.push_back(s);
        } else {
          fail(rw, "unknown net or parameter '" + s + "'");
        }
      }
      if (!p.contains("optimizer")) fail(w, "missing \"optimizer\"");
      try {
        ph.optimizer = check_optimizer(p["optimizer"]);
      } catch (const AttrError& e) {
        fail(e.key().empty() ? ptr(w, "optimizer") : ptr(w, "optimizer") + "/" + e.key(), e.what());
      }
      if (p.contains("repeat")) ph.repeat = int(positive(p, "repeat", w, 1));
      ts.phases.push_back(ph);
    }
    if (t.contains("log")) {
      const json& l = t["log"];
      if (!l.is_array()) fail("/train/log", "expected a list of ids of scalars");
      for (size_t i = 0; i < l.size(); ++i) {
        std::string w = ptr("/train/log", i);
        if (!l[i].is_string()) fail(w, "expected an id");
        ValueId v = lookup(l[i], nullptr, w).id;
        if (!m_.graph.shape(v).empty())
          fail(w, fmt::format("only scalars are logged, but '{}' has shape {}",
                              l[i].get<std::string>(), shape_str(m_.graph.shape(v))));
        ts.log.push_back({l[i], v});
      }
    }
  }
};

std::string line_col(const std::string& text, size_t byte) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < std::min(byte, text.size()); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return fmt::format("line {}, column {}", line, col);
}

}  // namespace

Model parse_model(const std::string& text, const std::string& file) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    std::string what = e.what();
    auto p = what.find("syntax error");
    throw Error(file, "",
                fmt::format("invalid JSON at {}: {}", line_col(text, e.byte ? e.byte - 1 : 0),
                            p == std::string::npos ? what : what.substr(p)));
  }
  Model m;
  m.file = file;
  if (!root.is_object()) throw Error(file, "", "expected a JSON object at the top level");
  Loader(m, root).run();
  return m;
}

Model load_model(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "", "cannot open the graph file");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_model(ss.str(), path);
}

}  // namespace weft

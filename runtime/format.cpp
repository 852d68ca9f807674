#include "runtime/format.h"

#include <map>

#include "runtime/error.h"
#include "runtime/optimizer.h"
#include "runtime/sources.h"

namespace weft {

namespace {

json def_ref(const std::string& def) { return {{"$ref", "#/$defs/" + def}}; }
json list_of(json items) { return {{"type", "array"}, {"items", std::move(items)}}; }
const json kString = {{"type", "string"}};
const json kPositive = {{"type", "integer"}, {"minimum", 1}};
const json kNonNegative = {{"type", "integer"}, {"minimum", 0}};

const std::map<std::string, std::vector<FormatKey>>& tables() {
  static const std::map<std::string, std::vector<FormatKey>> t = {
      {"graph",
       {{"$schema", kString, "the schema an editor checks this file by (weft.schema.json)"},
        {"weft", {{"const", 1}}, "the format version", true},
        {"name", kString, "the model's name"},
        {"doc", kString, "what the model is"},
        {"requires", list_of(kString), "plugins the graph needs (loaded with --plugin)"},
        {"data", def_ref("data"), "the dataset the data inputs read"},
        {"inputs",
         {{"type", "object"}, {"additionalProperties", def_ref("input")}},
         "the graph's inputs by name: data fields and noise"},
        {"params",
         {{"type", "object"}, {"additionalProperties", def_ref("param")}},
         "free parameters by name (layers make their own)"},
        {"nets",
         {{"type", "object"}, {"additionalProperties", def_ref("net")}},
         "named subgraphs that own their parameters and are called like functions"},
        {"nodes", list_of(def_ref("node")), "the graph's nodes, in order"},
        {"train", def_ref("train"), "how the graph is trained"},
        {"outputs",
         {{"type", "object"}, {"additionalProperties", kString}},
         "named outputs (samples, features...): node ids"}}},
      {"data",
       {{"dataset",
         {{"enum", {"fashion-mnist", "ring8", "grid25"}}},
         "fashion-mnist (MNIST's files read the same with --data) or a 2-D mixture"},
        {"split", {{"enum", {"train", "test"}}}, "the split training reads"},
        {"range",
         {{"type", "array"}, {"items", {{"type", "number"}}}, {"minItems", 2}, {"maxItems", 2}},
         "[low, high]: the pixel range images are scaled to"}}},
      {"input",
       {{"shape", def_ref("shape"), "the input's shape, \"B\" for the batch", true},
        {"from", def_ref("source"), "a data field or a noise distribution", true},
        {"doc", kString, "what the input is"}}},
      {"param",
       {{"shape", def_ref("shape"), "the parameter's shape", true},
        {"init", def_ref("initializer"), "its initializer"},
        {"trainable", {{"type", "boolean"}}, "false: state the optimizers never touch"},
        {"doc", kString, "what the parameter is"}}},
      {"net",
       {{"in", list_of(kString), "the names its layers or nodes read"},
        {"layers", list_of(def_ref("node")), "a chain of layers (each reads the previous)"},
        {"nodes", list_of(def_ref("node")), "a general subgraph"},
        {"out", kString, "the id of the output layer (default: the last)"},
        {"doc", kString, "what the net is"}}},
      {"train",
       {{"batch", kPositive, "the (global) batch size"},
        {"steps", kPositive, "training steps"},
        {"seed", kNonNegative, "the seed every draw is keyed by"},
        {"phases", list_of(def_ref("phase")), "what each step minimizes, in order", true},
        {"log", list_of(kString), "ids of scalars logged every step"},
        {"log_every", kPositive, "steps between progress lines"},
        {"sample_every", kPositive, "steps between sample grids"},
        {"checkpoint_every", kPositive, "steps between checkpoints"}}},
      {"phase",
       {{"minimize", kString, "the id of a scalar loss", true},
        {"params", list_of(kString), "the nets and parameters it updates", true},
        {"optimizer", def_ref("optimizer"), "its optimizer", true},
        {"repeat", kPositive, "runs per step (a critic's n_critic)"},
        {"steps",
         {{"type", "array"},
          {"items", {{"type", {"integer", "null"}}, {"minimum", 0}}},
          {"minItems", 1},
          {"maxItems", 2}},
         "[from, until) or [from]: the steps it runs at"},
        {"doc", kString, "what the phase is"}}},
      {"node",
       {{"id", kString, "the node's id (default: made from its op)"},
        {"op", kString, "the op (weft ops lists them)"},
        {"call", kString, "a net to call instead of an op"},
        {"in", list_of({{"anyOf", {kString, {{"type", "number"}}, def_ref("node")}}}),
         "its inputs: ids, numbers or inline nodes (default: the previous node)"},
        {"doc", kString, "what the node is"}}},
  };
  return t;
}

json object_schema(const std::vector<FormatKey>& keys) {
  json props = json::object(), required = json::array();
  for (auto& k : keys) {
    json s = k.schema;
    s["description"] = k.doc;
    props[k.name] = s;
    if (k.required) required.push_back(k.name);
  }
  json o = {{"type", "object"}, {"properties", props}, {"additionalProperties", false}};
  if (!required.empty()) o["required"] = required;
  return o;
}

json attr_schema(const AttrSpec& a) {
  json s;
  switch (a.type) {
    case AttrType::Int:
      s = {{"type", "integer"}};
      break;
    case AttrType::PosInt:
      s = kPositive;
      break;
    case AttrType::NonNegInt:
      s = kNonNegative;
      break;
    case AttrType::Float:
      s = {{"type", "number"}};
      break;
    case AttrType::Bool:
      s = {{"type", "boolean"}};
      break;
    case AttrType::String:
      s = kString;
      break;
    case AttrType::Choice:
      s = {{"enum", a.choices}};
      break;
    case AttrType::Ints:
      s = list_of({{"type", "integer"}});
      break;
    case AttrType::ShapeSpec:
      s = def_ref("shape");
      break;
    case AttrType::Initializer:
      s = def_ref("initializer");
      break;
    case AttrType::Pair:
      s = {{"anyOf",
            {kNonNegative,
             {{"type", "array"}, {"items", kNonNegative}, {"minItems", 2}, {"maxItems", 2}}}}};
      break;
    case AttrType::Any:
      s = json::object();
      break;
  }
  s["description"] = a.doc;
  if (!a.default_value.is_null()) s["default"] = a.default_value;
  return s;
}

}  // namespace

const std::vector<FormatKey>& format_keys(const std::string& object) {
  auto it = tables().find(object);
  WEFT_ASSERT(it != tables().end(), "no format object " + object);
  return it->second;
}

std::set<std::string> format_key_names(const std::string& object) {
  std::set<std::string> names;
  for (auto& k : format_keys(object)) names.insert(k.name);
  return names;
}

json graph_schema() {
  json defs = json::object();
  for (auto& [name, keys] : tables())
    if (name != "graph" && name != "node") defs[name] = object_schema(keys);
  // A node: an op with its attributes, or a call of a net.
  json op_names = json::array(), cases = json::array();
  const std::vector<FormatKey>& node_keys = format_keys("node");
  for (const OpDef* d : Registry::get().all()) {
    if (d->is_source || !d->internal_why.empty()) continue;  // graphs do not name these
    op_names.push_back(d->name);
    json then = object_schema(node_keys);
    then["properties"].erase("call");
    json required = json::array();
    for (auto& a : d->attrs) {
      then["properties"][a.name] = attr_schema(a);
      if (a.required) required.push_back(a.name);
    }
    if (!required.empty()) then["required"] = required;
    then["description"] = d->docs;
    defs["op." + d->name] = then;
    cases.push_back({{"if", {{"required", {"op"}}, {"properties", {{"op", {{"const", d->name}}}}}}},
                     {"then", def_ref("op." + d->name)}});
  }
  json call = object_schema(node_keys);
  call["properties"].erase("op");
  call["required"] = {"call"};
  defs["node"] = {{"type", "object"},
                  {"properties", {{"op", {{"enum", op_names}, {"description", "the op"}}}}},
                  {"anyOf", {{{"required", {"op"}}}, {{"required", {"call"}}}}},
                  {"allOf", cases},
                  {"if", {{"required", {"call"}}}},
                  {"then", call}};
  // Shapes, sources, initializers and optimizers.
  defs["shape"] = list_of({{"anyOf", {kPositive, {{"const", "B"}}, {{"const", -1}}}}});
  json sources = json::array();
  for (const InputSource& s : input_sources()) {
    if (s.from_data) {
      sources.push_back({{"const", s.name}, {"description", s.per_example_doc}});
      continue;
    }
    json settings = json::object();
    for (auto& [name, dflt] : s.settings) settings[name] = {{"type", "number"}, {"default", dflt}};
    sources.push_back(
        {{"type", "object"},
         {"properties",
          {{s.name,
            {{"type", "object"}, {"properties", settings}, {"additionalProperties", false}}}}},
         {"required", {s.name}},
         {"additionalProperties", false}});
  }
  defs["source"] = {{"anyOf", sources}};
  defs["initializer"] = {
      {"anyOf",
       {{{"enum",
          {"zeros", "ones", "default", "xavier_uniform", "xavier_normal", "glorot_uniform",
           "glorot_normal", "kaiming_uniform", "kaiming_normal"}}},
        {{"type", "object"}, {"minProperties", 1}, {"maxProperties", 1}}}},
      {"description", "a named initializer, or {\"normal\": {...}}, {\"uniform\": {...}}, ..."}};
  json optimizers = json::array();
  for (auto& [kind, settings] : optimizer_settings()) {
    json props = json::object();
    for (auto& [k, v] : settings.items())
      props[k] = v.is_boolean() ? json{{"type", "boolean"}, {"default", v}}
                                : json{{"type", "number"}, {"default", v}};
    optimizers.push_back(
        {{"type", "object"},
         {"properties",
          {{kind, {{"type", "object"}, {"properties", props}, {"additionalProperties", false}}}}},
         {"required", {kind}},
         {"additionalProperties", false}});
  }
  defs["optimizer"] = {{"oneOf", optimizers}};

  json root = object_schema(format_keys("graph"));
  json schema = {{"$schema", "https://json-schema.org/draft/2020-12/schema"},
                 {"$id", "weft.schema.json"},
                 {"title", "weft graph"},
                 {"description",
                  "A model as a weft graph file (graphs/README.md). Generated by `weft schema` "
                  "from the op registry and the loader's own keys."}};
  schema.update(root);
  schema["$defs"] = defs;
  return schema;
}

}  // namespace weft

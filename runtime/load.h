// The loader's shared pieces. The loader reads a graph file section by section, one
// reader per top-level section, in the order a file is written (runtime/loader.cpp calls
// them; runtime/load_*.cpp define them):
//   load_data.cpp    data, inputs
//   load_params.cpp  params
//   load_nets.cpp    nets (and the expansion of a net call)
//   load_nodes.cpp   nodes, outputs
//   load_train.cpp   train
// Every value is read through Reader's typed accessors, which know the value's JSON pointer
// and say what was expected ("/nodes/2/op: expected an op name, got null"), so a value of
// the wrong type is reported, never passed on to code that assumes its type.
#pragma once

#include <map>
#include <set>
#include <string>

#include "runtime/model.h"

namespace weft::load {

// JSON pointers: ptr("/nets", "a/b") is "/nets/a~1b".
std::string ptr(const std::string& base, const std::string& key);
std::string ptr(const std::string& base, size_t i);
// A value as it appears in a message, shortened.
std::string brief(const json& v);

class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}
  const std::string& file() const { return file_; }

  [[noreturn]] void fail(const std::string& where, const std::string& what) const;
  // The value must be an object whose keys are all in `allowed`.
  void check_keys(const json& obj, const std::string& where,
                  const std::set<std::string>& allowed) const;

  // Each returns the value at `where` or fails with "expected <expected>, got <value>".
  const json& object(const json& v, const std::string& where, const std::string& expected) const;
  const json& array(const json& v, const std::string& where, const std::string& expected) const;
  std::string string(const json& v, const std::string& where,
                     const std::string& expected = "a string") const;
  double number(const json& v, const std::string& where) const;
  bool boolean(const json& v, const std::string& where) const;
  // A list of positive integers and "B", whose element count fits in int64_t.
  Shape shape(const json& v, const std::string& where) const;

  // Members of an object `obj` found at `where`, or `dflt` when absent.
  std::string string_or(const json& obj, const std::string& key, const std::string& where,
                        const std::string& dflt) const;
  double number_or(const json& obj, const std::string& key, const std::string& where,
                   double dflt) const;
  // An integer in [1, max].
  int64_t positive_or(const json& obj, const std::string& key, const std::string& where,
                      int64_t dflt, int64_t max = INT64_MAX) const;
  // "doc" is free text, but text.
  void doc(const json& obj, const std::string& where) const;

 private:
  std::string file_;
};

struct NetDef {
  std::string name, where;
  std::vector<std::string> formals;
  const json* layers = nullptr;
  std::string layers_where, out;
  std::map<std::string, ValueId> params;  // full name -> node
};

// Names visible while building a node: a net's formals, layer ids and parameters inside
// a call; nothing more at the top level.
struct Scope {
  std::map<std::string, Val> local;  // net formals and layer ids
  NetDef* net = nullptr;
  std::string call_id, call_where;
  std::map<std::string, int> op_count;
};

// What the section readers build and share.
struct Load : Reader {
  Load(Model& model, const json& root_json)
      : Reader(model.file), m(model), root(root_json), b(model.graph) {}
  Model& m;
  const json& root;
  Builder b;
  std::map<std::string, NetDef> nets;
  std::map<std::string, Val> globals;             // node ids, inputs, params, "call.layer"
  std::map<std::string, std::string> first_call;  // net -> first call id
};

// The section readers, in the order of a file.
void load_data(Load& l);
void load_inputs(Load& l);
void load_params(Load& l);
void load_nets(Load& l);
void load_nodes(Load& l);
void load_outputs(Load& l);
void load_train(Load& l);

// Shared between sections.
Val make_param(Load& l, const std::string& name, const std::string& net, const Shape& shape,
               const json& init, double fan_in, double fan_out, const std::string& where);
// Checks a parameter initializer found at `where`.
void check_init(const Load& l, const json& init, const std::string& where);
Val lookup(Load& l, const std::string& ref, Scope* scope, const std::string& where);
// Builds one node (a layer, a top-level node or an inline node) and returns its value.
Val build_node(Load& l, const json& node, Scope* scope, const std::string& where, Val prev);
// Expands a call of a net with the given inputs.
Val call_net(Load& l, const json& node, const std::vector<Val>& in, const std::string& id,
             Scope* outer, const std::string& where);

// The keys a node may have besides its attributes.
extern const std::set<std::string> kNodeKeys;

}  // namespace weft::load

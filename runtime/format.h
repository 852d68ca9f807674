// The graph format's keys, in one table: the loader checks every object of a graph file
// against it, and `weft schema` turns it and the op registry into a JSON Schema, so that an
// editor checks a graph as it is typed by the rules weft loads it by.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "runtime/op.h"

namespace weft {

struct FormatKey {
  std::string name;
  json schema;  // a JSON Schema fragment; "#/$defs/..." refers to graph_schema()'s $defs
  std::string doc;
  bool required = false;
};

// The objects of the format: "graph" (the file), "data", "input", "param", "net", "train",
// "phase"; a node's own keys are "node" (the rest of a node are its op's attributes).
const std::vector<FormatKey>& format_keys(const std::string& object);
// Their names, for the loader's unknown-key check.
std::set<std::string> format_key_names(const std::string& object);

// The JSON Schema (draft 2020-12) of a graph file: the tables above, every op in the
// registry that a graph may name (inputs, typed attributes with defaults and docs), the
// input sources, initializers and optimizers.
json graph_schema();

}  // namespace weft

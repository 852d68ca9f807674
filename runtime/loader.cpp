// Loading a model file: parse, check every key against what it may hold, expand layer
// lists and net calls into ops, infer every shape, and report the first mistake with the
// file, its JSON pointer and what was expected. Nothing is run and nothing is written.
// Each top-level section has its reader (runtime/load.h); this file checks the header and
// calls them in the order a file is read.
#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "runtime/format.h"
#include "runtime/load.h"
#include "runtime/plugin.h"

namespace weft {

const ModelParam* Model::param(const std::string& pname) const {
  for (auto& p : params)
    if (p.name == pname) return &p;
  return nullptr;
}

namespace {

using load::brief;
using load::ptr;

void load_header(load::Load& l) {
  const json& root = l.root;
  l.check_keys(root, "", format_key_names("graph"));
  if (!root.contains("weft")) l.fail("", "missing \"weft\": 1 (the format version)");
  if (root["weft"] != 1) l.fail("/weft", "expected format version 1, got " + brief(root["weft"]));
  l.m.name = l.string_or(root, "name", "", "");
  l.doc(root, "");
  if (root.contains("doc")) l.m.doc = root["doc"].get<std::string>();
  if (root.contains("requires")) {  // plugins are loaded by the user, never by a graph
    const json& r = l.array(root["requires"], "/requires", "a list of plugin names");
    for (size_t i = 0; i < r.size(); ++i) {
      std::string name = l.string(r[i], ptr("/requires", i), "a plugin name");
      if (!find_plugin(name))
        l.fail(ptr("/requires", i), fmt::format("the graph requires plugin '{}', which is not "
                                                "loaded: pass --plugin PATH to its library "
                                                "(or list the library in WEFT_PLUGIN_PATH)",
                                                name));
    }
  }
}

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
  load::Load l(m, root);
  load_header(l);
  load::load_data(l);
  load::load_inputs(l);
  load::load_params(l);
  load::load_nets(l);
  load::load_nodes(l);
  load::load_outputs(l);
  load::load_train(l);
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

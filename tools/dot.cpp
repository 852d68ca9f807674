// `weft dot`: a graph in Graphviz's DOT language. Each net call is a cluster, each node is
// labelled with its op and output shape, inputs and parameters are drawn apart; on request
// the gradient nodes autodiff added for the training phases, or a phase's plan (its fused
// steps and their kernels). With Graphviz's library at build time, --svg lays it out and
// renders it in-process.
#include <fmt/format.h>

#include <map>
#include <set>
#include <sstream>

#include "runtime/autodiff.h"
#include "tools/commands.h"

#ifdef WEFT_GRAPHVIZ
#include <graphviz/cgraph.h>
#include <graphviz/gvc.h>
#endif

namespace weft {

namespace {

std::string dot_string(const std::string& s) {
  std::string r = "\"";
  for (char c : s) {
    if (c == '\n') {  // a line break in a label
      r += "\\n";
      continue;
    }
    if (c == '"' || c == '\\') r += '\\';
    r += c;
  }
  return r + "\"";
}

std::string shapes_of(const Node& n) {
  std::vector<std::string> s;
  for (auto& shape : n.shapes) s.push_back(shape_str(shape));
  return fmt::format("{}", fmt::join(s, " "));
}

// The net call a node belongs to ("fake" of "fake.linear_0", made from /nets/G/...), or "".
std::pair<std::string, std::string> call_of(const Node& n) {
  const std::string prefix = "/nets/";
  if (n.where.rfind(prefix, 0) != 0 || n.name.find('.') == std::string::npos) return {"", ""};
  const std::string net =
      n.where.substr(prefix.size(), n.where.find('/', prefix.size()) - prefix.size());
  std::string call = n.name.substr(0, n.name.find('.'));
  if (n.def->is_source) return {"", ""};  // a net's parameters are drawn apart
  return {call, net};
}

const char* kInputStyle = "shape=ellipse style=filled fillcolor=\"#d6e6f5\"";
const char* kParamStyle = "shape=box style=\"rounded,filled\" fillcolor=\"#f9e2c0\"";
const char* kGradStyle = "style=filled fillcolor=\"#f2d5d5\"";

// The whole graph (or the nodes `keep` lists), autodiff's nodes from `first_grad` on.
std::string graph_dot(const Model& m, const Graph& g, const std::vector<int>& keep,
                      size_t first_grad) {
  std::ostringstream out;
  out << "digraph " << dot_string(m.name) << " {\n"
      << "  rankdir=TB;\n  node [fontname=\"Helvetica\" fontsize=10 shape=box];\n"
      << "  edge [fontname=\"Helvetica\" fontsize=8 color=\"#666666\"];\n";
  std::map<std::string, std::vector<int>> clusters;
  std::map<std::string, std::string> cluster_net;
  for (int i : keep) {
    const Node& n = g.nodes[size_t(i)];
    auto [call, net] = call_of(n);
    if (!call.empty() && size_t(i) < first_grad) {
      clusters[call].push_back(i);
      cluster_net[call] = net;
      continue;
    }
    std::string style;
    std::string label = n.name + "\n" + shapes_of(n);
    if (n.op() == "input") {
      style = kInputStyle;
    } else if (n.op() == "param") {
      style = kParamStyle;
    } else if (n.op() == "constant") {
      label = n.attrs.at("value").dump();
      style = "shape=plaintext";
    } else {
      label = n.name + "\n" + n.op() + " " + shapes_of(n);
      if (size_t(i) >= first_grad) style = kGradStyle;
    }
    out << "  n" << i << " [label=" << dot_string(label) << (style.empty() ? "" : " ") << style
        << "];\n";
  }
  for (auto& [call, members] : clusters) {
    out << "  subgraph " << dot_string("cluster_" + call)
        << " {\n    label=" << dot_string(call + " = " + cluster_net[call] + "(...)")
        << ";\n    style=\"rounded\"; color=\"#8899aa\";\n";
    for (int i : members) {
      const Node& n = g.nodes[size_t(i)];
      out << "    n" << i << " [label="
          << dot_string(n.name.substr(n.name.find('.') + 1) + "\n" + n.op() + " " + shapes_of(n))
          << "];\n";
    }
    out << "  }\n";
  }
  const std::set<int> kept(keep.begin(), keep.end());
  for (int i : keep)
    for (const ValueId& v : g.nodes[size_t(i)].in)
      if (kept.count(v.node))
        out << "  n" << v.node << " -> n" << i
            << (g.nodes[size_t(v.node)].shapes.size() > 1 ? fmt::format(" [label=\"{}\"]", v.out)
                                                          : "")
            << ";\n";
  out << "}\n";
  return out.str();
}

// A phase's plan: its steps (fused ops, with kernels) and the values bound to it.
std::string plan_dot(const Model& m, const Graph& g, const Plan& plan, const std::string& phase) {
  std::ostringstream out;
  out << "digraph " << dot_string(m.name + " plan " + phase) << " {\n"
      << "  rankdir=TB;\n  node [fontname=\"Helvetica\" fontsize=10 shape=box];\n"
      << "  edge [fontname=\"Helvetica\" fontsize=8 color=\"#666666\"];\n";
  std::map<int, std::string> producer;  // slot -> the node that writes it
  std::map<int, ValueId> value_of;
  for (auto& [v, slot] : plan.slot_of) value_of.emplace(slot, v);
  for (size_t s = 0; s < plan.steps.size(); ++s)
    for (int o : plan.steps[s].out) producer[o] = fmt::format("s{}", s);
  std::set<int> sources;
  for (size_t s = 0; s < plan.steps.size(); ++s) {
    const PlanStep& st = plan.steps[s];
    std::vector<std::string> outs;
    for (int o : st.out) outs.push_back(dims_str(plan.slots[size_t(o)].shape()));
    out << "  s" << s << " [label="
        << dot_string(
               fmt::format("{}\n{} ({})  {}", st.name, st.op, st.kernel_name, fmt::join(outs, " ")))
        << (st.dense ? " style=filled fillcolor=\"#e3f0d9\"" : "") << "];\n";
    for (int i : st.in)
      if (!producer.count(i)) sources.insert(i);
  }
  for (int slot : sources) {
    auto it = value_of.find(slot);
    const Node* n = it == value_of.end() ? nullptr : &g.nodes[size_t(it->second.node)];
    const bool param = n && n->op() == "param";
    const std::string label =
        n && n->op() == "constant"
            ? n->attrs.at("value").dump()
            : fmt::format("{}\n{}", n ? n->name : "?", dims_str(plan.slots[size_t(slot)].shape()));
    producer[slot] = fmt::format("v{}", slot);
    out << "  v" << slot << " [label=" << dot_string(label) << " "
        << (param                        ? kParamStyle
            : n && n->op() == "constant" ? "shape=plaintext"
                                         : kInputStyle)
        << "];\n";
  }
  for (size_t s = 0; s < plan.steps.size(); ++s)
    for (int i : plan.steps[s].in) out << "  " << producer[i] << " -> s" << s << ";\n";
  out << "}\n";
  return out.str();
}

}  // namespace

// In the sanitizer build, LeakSanitizer reads these at exit: Graphviz's library and the
// fontconfig it loads keep their caches until the process ends (gvFreeContext releases what
// weft made). They are not weft's leaks; a leak of weft's own is still reported.
extern "C" const char* __lsan_default_suppressions() {
  return "leak:libgvc.so\nleak:libcgraph.so\nleak:libcdt.so\nleak:libfontconfig.so\n";
}
extern "C" const char* __lsan_default_options() { return "print_suppressions=0"; }

bool dot_can_render() {
#ifdef WEFT_GRAPHVIZ
  return true;
#else
  return false;
#endif
}

std::string render_svg(const std::string& dot) {
#ifdef WEFT_GRAPHVIZ
  GVC_t* gvc = gvContext();
  Agraph_t* g = agmemread(dot.c_str());
  if (!g) {
    gvFreeContext(gvc);
    throw Error("Graphviz could not read the DOT text weft made (a bug in weft)");
  }
  gvLayout(gvc, g, "dot");
  char* data = nullptr;
  unsigned int length = 0;
  gvRenderData(gvc, g, "svg", &data, &length);
  std::string svg(data ? data : "", length);
  gvFreeRenderData(data);
  gvFreeLayout(gvc, g);
  agclose(g);
  gvFreeContext(gvc);
  return svg;
#else
  (void)dot;
  throw Error(
      "weft was built without Graphviz's library (libgraphviz-dev): --svg is not available; "
      "the DOT text (without --svg) renders with `dot -Tsvg`");
#endif
}

std::string graph_to_dot(const Model& model, const SessionOptions& so, const std::string& phase,
                         bool grads, bool plan) {
  const size_t original = model.graph.nodes.size();
  if (!grads && !plan) {
    std::vector<int> all;
    for (size_t i = 0; i < original; ++i) all.push_back(int(i));
    return graph_dot(model, model.graph, all, original);
  }
  if (model.train.phases.empty())
    throw Error(model.file, "/train", "the graph has no training phases to differentiate or plan");
  Session s(model, so);  // differentiates every phase and compiles its plan
  std::vector<size_t> chosen;
  for (size_t i = 0; i < s.phases.size(); ++i)
    if (phase.empty() || s.phases[i].spec.loss_name == phase) chosen.push_back(i);
  if (chosen.empty()) {
    std::vector<std::string> names;
    for (auto& ph : s.phases) names.push_back(ph.spec.loss_name);
    throw Error(model.file, "/train/phases",
                fmt::format("no phase minimizes \"{}\" (the phases minimize: {})", phase,
                            fmt::join(names, ", ")));
  }
  if (plan) {
    if (chosen.size() > 1)
      throw Error("--plan draws one phase's plan: name it with --phase (one of its losses)");
    const auto& ph = s.phases[chosen[0]];
    return plan_dot(s.model, s.model.graph, *ph.bound.plan, ph.spec.loss_name);
  }
  std::vector<ValueId> targets;
  for (size_t i : chosen) {
    targets.push_back(s.phases[i].spec.loss);
    targets.insert(targets.end(), s.phases[i].grads.begin(), s.phases[i].grads.end());
  }
  return graph_dot(s.model, s.model.graph, s.model.graph.ancestors(targets), original);
}

}  // namespace weft

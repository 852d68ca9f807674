#pragma once

#include <string>

#include "runtime/model.h"
#include "runtime/trainer.h"

namespace weft {
// `weft bench`: samples/s over `steps` training steps and a per-op time table.
int run_bench(const Model& m, const SessionOptions& so, int64_t steps, int64_t warmup, int nodes);

// `weft dot`: the graph in Graphviz's DOT language (tools/dot.cpp). `phase` picks a phase by
// its loss ("" for all); `grads` adds autodiff's nodes, `plan` draws the phase's plan.
std::string graph_to_dot(const Model& m, const SessionOptions& so, const std::string& phase,
                         bool grads, bool plan);
// Whether weft was built with Graphviz's library, and DOT text rendered as SVG by it.
bool dot_can_render();
std::string render_svg(const std::string& dot);

// RUN_DIR/report.html from the folder's run.json, metrics.csv, sample grids, weft eval's
// files and graph.svg (tools/report.cpp).
void write_report(const std::string& dir);
}  // namespace weft

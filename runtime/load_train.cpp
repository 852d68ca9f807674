// The "train" section: batch, steps, seed, the logging rhythm, the phases (minimize a
// scalar loss over some parameters with an optimizer) and the extra scalars to log.
#include <fmt/format.h>

#include "runtime/format.h"
#include "runtime/load.h"
#include "runtime/optimizer.h"

namespace weft::load {

namespace {

// A phase runs `repeat` times a step; the trainer keys each repeat's noise by its index
// below this (runtime/trainer.cpp), so more would reuse another phase's noise.
constexpr int64_t kMaxRepeat = 1024;

PhaseSpec read_phase(Load& l, const json& p, const std::string& w) {
  l.check_keys(p, w, format_key_names("phase"));
  l.doc(p, w);
  PhaseSpec ph;
  ph.where = w;
  if (!p.contains("minimize")) l.fail(w, "missing \"minimize\": the id of a scalar loss");
  ph.loss_name = l.string(p["minimize"], ptr(w, "minimize"), "the id of a scalar loss");
  ph.loss = lookup(l, ph.loss_name, nullptr, ptr(w, "minimize")).id;
  const Shape& ls = l.m.graph.shape(ph.loss);
  if (!ls.empty())
    l.fail(ptr(w, "minimize"), fmt::format("a phase minimizes a scalar, but '{}' has shape {}",
                                           ph.loss_name, shape_str(ls)));
  if (!p.contains("params") || !p["params"].is_array() || p["params"].empty())
    l.fail(ptr(w, "params"), "expected a list of nets or parameter names");
  for (size_t k = 0; k < p["params"].size(); ++k) {
    std::string rw = ptr(ptr(w, "params"), k);
    std::string s = l.string(p["params"][k], rw, "a net or parameter name");
    if (l.nets.count(s)) {
      if (!l.m.net_params.count(s))
        l.fail(rw, "net " + s + " has no parameters (or is never called)");
      for (auto& n : l.m.net_params[s])
        if (l.m.param(n)->trainable) ph.params.push_back(n);
    } else if (const ModelParam* mp = l.m.param(s)) {
      if (!mp->trainable) l.fail(rw, "parameter " + s + " is not trainable");
      ph.params.push_back(s);
    } else {
      l.fail(rw, "unknown net or parameter '" + s + "'");
    }
  }
  if (!p.contains("optimizer")) l.fail(w, "missing \"optimizer\"");
  try {
    ph.optimizer = check_optimizer(p["optimizer"]);
  } catch (const AttrError& e) {
    l.fail(e.key().empty() ? ptr(w, "optimizer") : ptr(w, "optimizer") + "/" + e.key(), e.what());
  }
  ph.repeat = int(l.positive_or(p, "repeat", w, 1, kMaxRepeat));
  if (p.contains("steps")) {
    // [from, until): the phase runs at steps from, from + 1, ..., until - 1 (counted from 0);
    // [from] or [from, null] runs to the end. Pre-training, then the rest.
    const json& r = p["steps"];
    const std::string rw = ptr(w, "steps");
    const std::string expected =
        "expected [from, until] with 0 <= from < until (steps counted from 0), or [from]";
    if (!r.is_array() || r.empty() || r.size() > 2) l.fail(rw, expected + ", got " + brief(r));
    if (!r[0].is_number_unsigned()) l.fail(ptr(rw, 0), expected + ", got " + brief(r[0]));
    ph.from = r[0].get<int64_t>();
    if (r.size() == 2 && !r[1].is_null()) {
      if (!r[1].is_number_unsigned() || r[1].get<int64_t>() <= ph.from)
        l.fail(ptr(rw, 1), expected + ", got " + brief(r[1]));
      ph.until = r[1].get<int64_t>();
    }
  }
  return ph;
}

}  // namespace

void load_train(Load& l) {
  if (!l.root.contains("train")) return;
  const json& t = l.root["train"];
  l.check_keys(t, "/train", format_key_names("train"));
  TrainSpec& ts = l.m.train;
  ts.batch = l.positive_or(t, "batch", "/train", ts.batch);
  ts.steps = l.positive_or(t, "steps", "/train", ts.steps);
  if (t.contains("seed")) {
    if (!t["seed"].is_number_unsigned())
      l.fail("/train/seed", "expected a non-negative integer, got " + brief(t["seed"]));
    ts.seed = t["seed"].get<uint64_t>();
  }
  ts.log_every = l.positive_or(t, "log_every", "/train", ts.log_every);
  ts.sample_every = l.positive_or(t, "sample_every", "/train", ts.sample_every);
  ts.checkpoint_every = l.positive_or(t, "checkpoint_every", "/train", ts.checkpoint_every);
  if (!t.contains("phases")) l.fail("/train", "missing \"phases\"");
  const json& ps = t["phases"];
  if (!ps.is_array() || ps.empty())
    l.fail("/train/phases", "expected a non-empty list of phases, got " + brief(ps));
  for (size_t i = 0; i < ps.size(); ++i)
    ts.phases.push_back(read_phase(l, ps[i], ptr("/train/phases", i)));
  if (t.contains("log")) {
    const json& log = l.array(t["log"], "/train/log", "a list of ids of scalars");
    for (size_t i = 0; i < log.size(); ++i) {
      std::string w = ptr("/train/log", i);
      std::string name = l.string(log[i], w, "an id");
      ValueId v = lookup(l, name, nullptr, w).id;
      if (!l.m.graph.shape(v).empty())
        l.fail(w, fmt::format("only scalars are logged, but '{}' has shape {}", name,
                              shape_str(l.m.graph.shape(v))));
      ts.log.push_back({name, v});
    }
  }
}

}  // namespace weft::load

namespace weft {

void apply_overrides(Model& m, const TrainOverrides& o) {
  TrainSpec& t = m.train;
  auto take = [](const std::optional<int64_t>& v, int64_t& dst, const char* option) {
    if (!v) return;
    if (*v <= 0)
      throw Error("", "", fmt::format("{}: expected a positive integer, got {}", option, *v));
    dst = *v;
  };
  take(o.batch, t.batch, "--batch");
  take(o.steps, t.steps, "--steps");
  take(o.log_every, t.log_every, "--log-every");
  take(o.sample_every, t.sample_every, "--sample-every");
  take(o.checkpoint_every, t.checkpoint_every, "--checkpoint-every");
  if (o.seed && *o.seed < 0)
    throw Error("", "", fmt::format("--seed: expected a non-negative integer, got {}", *o.seed));
  if (o.seed) t.seed = uint64_t(*o.seed);
}

}  // namespace weft

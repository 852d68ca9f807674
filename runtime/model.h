// A model as loaded from its JSON file: the graph with every net call expanded and every
// shape inferred, the inputs to fill, the parameters to create, the training phases and
// the named outputs. graphs/README.md is the reference of the file format.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "runtime/graph.h"

namespace weft {

struct DataSpec {
  std::string dataset = "fashion-mnist";
  std::string split = "train";
  double low = 0, high = 1;  // pixel range after scaling
};

struct ModelInput {
  std::string name;
  Shape shape;
  std::string source;   // an InputSource's name (runtime/sources.h): "data.images", "normal"...
  double a = 0, b = 1;  // noise: its two settings (normal: mean, std; uniform: low, high)
  ValueId id;
};

struct ModelParam {
  std::string name, net;  // net is "" for a free parameter
  Shape shape;
  json init;
  double fan_in = 1, fan_out = 1;
  bool trainable = true;
  ValueId id;
};

struct PhaseSpec {
  std::string loss_name;
  ValueId loss;
  std::vector<std::string> params;  // names of the parameters it updates
  json optimizer;                   // checked {"adam": {...}} and the like
  int repeat = 1;
  // The steps it runs at: [from, until); until < 0: to the end. Step k is the (k+1)-th.
  int64_t from = 0, until = -1;
  bool active_at(int64_t step) const { return step >= from && (until < 0 || step < until); }
  std::string where;
};

struct TrainSpec {
  int64_t batch = 64;
  int64_t steps = 1000;
  uint64_t seed = 0;
  int64_t log_every = 50, sample_every = 500, checkpoint_every = 500;
  std::vector<PhaseSpec> phases;
  std::vector<std::pair<std::string, ValueId>> log;  // extra scalars written to the metrics
};

// What the command line may set in place of the graph's "train" values. apply_overrides
// settles "the command line's value, else the graph's" once, right after loading; from then
// on everything reads model.train.
struct TrainOverrides {
  std::optional<int64_t> batch, steps, log_every, sample_every, checkpoint_every, seed;
};

struct Model {
  std::string file, name, doc;
  Graph graph;
  DataSpec data;
  bool uses_data = false;
  std::vector<ModelInput> inputs;
  std::vector<ModelParam> params;
  std::map<std::string, std::vector<std::string>> net_params;  // net -> its parameter names
  std::map<std::string, ValueId> outputs;                      // "samples", "features", ...
  TrainSpec train;

  const ModelParam* param(const std::string& pname) const;
};

// Throws Error with the file, the JSON pointer and what was expected.
Model load_model(const std::string& path);
// Throws Error naming the option when a value is out of range.
void apply_overrides(Model& m, const TrainOverrides& o);
Model parse_model(const std::string& text, const std::string& file);

}  // namespace weft

// Where a graph's inputs come from: the fields of the dataset ("data.images",
// "data.labels", "data.onehot"; "data.points" of a 2-D mixture) and noise ({"normal": {...}},
// {"uniform": {...}}). One table says what each source is, how many values per example it has,
// which settings it takes and how it fills a tensor; the loader checks inputs against it and the
// trainer fills inputs with it.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "runtime/dataset.h"

namespace weft {

// What filling one input needs; which fields are read depends on the source.
struct SourceFill {
  const Dataset* data = nullptr;                   // data fields: the split read
  const std::vector<int64_t>* examples = nullptr;  // data fields: which examples
  double low = 0, high = 1;                        // data.images: the pixel range
  double a = 0, b = 1;                             // noise: its two settings, in table order
  uint64_t key = 0;                                // noise: the stream drawn from
  uint64_t offset = 0;  // noise: the first element's index in the stream (a rank's shard)
};

struct InputSource {
  std::string name;  // as written in "from": "data.images", or the noise's key "normal"
  bool from_data = false;
  // Data fields: values per example, and how to say it when an input's shape disagrees.
  int64_t per_example = 0;
  std::string per_example_doc, hint;
  // Noise: its two settings with their defaults ({"mean", 0}, {"std", 1}), stored in
  // ModelInput::a and ::b, and what they must satisfy.
  std::vector<std::pair<std::string, double>> settings;
  bool (*settings_ok)(double a, double b) = nullptr;
  std::string settings_key;  // the setting a failure points at; "" for the whole "from"
  std::string settings_rule;
  void (*fill)(Tensor& t, const SourceFill& f) = nullptr;
};

// Noise as the sources draw it: normal (a mean, b std) or uniform in [a, b), element i
// from (key, offset + i). The noise ops (ops/random.cpp) call it too, so that a device
// drawing its own noise draws the same values; a rank drawing its shard of a batch starts
// at its shard's first element, so that the ranks together draw what one process would.
void draw_noise(bool normal, Tensor& t, double a, double b, uint64_t key, uint64_t offset = 0);

// Every source, data fields first.
const std::vector<InputSource>& input_sources();
// null for an unknown name.
const InputSource* find_input_source(const std::string& name);
// The forms "from" may take, for messages: "\"data.images\", ... or {\"uniform\": {...}}".
std::string input_source_forms();

}  // namespace weft

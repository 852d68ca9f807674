#include "runtime/sources.h"

#include <fmt/format.h>

#include <type_traits>

#include "runtime/rng.h"

namespace weft {

namespace {

void fill_images_source(Tensor& t, const SourceFill& f) {
  fill_images(*f.data, *f.examples, t, f.low, f.high);
}
void fill_labels_source(Tensor& t, const SourceFill& f) {
  fill_labels(*f.data, *f.examples, t, false);
}
void fill_onehot_source(Tensor& t, const SourceFill& f) {
  fill_labels(*f.data, *f.examples, t, true);
}
void fill_points_source(Tensor& t, const SourceFill& f) { fill_points(*f.data, *f.examples, t); }

}  // namespace

void draw_noise(bool normal, Tensor& t, double a, double b, uint64_t key, uint64_t offset) {
  // Element i is a function of (key, i) alone: a counter-based stream, so a value depends
  // only on (seed, step, phase, input, i), and the elements are shared out on the OpenMP
  // team that runs oneDNN's primitives (a normal costs a log, a square root and a cosine:
  // dcgan's two 64 x 100 draws per step took 0.4 ms on one thread).
  auto fill = [&](auto* p) {
    using T = std::remove_pointer_t<decltype(p)>;
    const int64_t n = t.numel();
#pragma omp parallel for schedule(static) if (n >= 2048)
    for (int64_t i = 0; i < n; ++i)
      p[i] = normal ? T(a + b * normal01(key, offset + uint64_t(i)))
                    : T(a + (b - a) * uniform01(key, offset + uint64_t(i)));
  };
  if (t.dtype() == DType::f32)
    fill(t.data<float>());
  else
    fill(t.data<double>());
}

namespace {

void fill_normal(Tensor& t, const SourceFill& f) { draw_noise(true, t, f.a, f.b, f.key, f.offset); }
void fill_uniform(Tensor& t, const SourceFill& f) {
  draw_noise(false, t, f.a, f.b, f.key, f.offset);
}

}  // namespace

const std::vector<InputSource>& input_sources() {
  static const std::vector<InputSource> sources = {
      {.name = "data.images",
       .from_data = true,
       .per_example = 784,
       .per_example_doc = "784 values per example (1x28x28)",
       .fill = fill_images_source},
      {.name = "data.labels",
       .from_data = true,
       .per_example = 1,
       .per_example_doc = "one value per example",
       .hint = "use [\"B\"] or [\"B\", 1]",
       .fill = fill_labels_source},
      {.name = "data.onehot",
       .from_data = true,
       .per_example = 10,
       .per_example_doc = "10 values per example",
       .hint = "use [\"B\", 10]",
       .fill = fill_onehot_source},
      {.name = "data.points",
       .from_data = true,
       .per_example = 2,
       .per_example_doc = "2 values per example (x, y)",
       .hint = "use [\"B\", 2]",
       .fill = fill_points_source},
      {.name = "normal",
       .settings = {{"mean", 0.0}, {"std", 1.0}},
       .settings_ok = [](double, double std) { return std >= 0; },
       .settings_key = "std",
       .settings_rule = "expected std >= 0",
       .fill = fill_normal},
      {.name = "uniform",
       .settings = {{"low", -1.0}, {"high", 1.0}},
       .settings_ok = [](double low, double high) { return low < high; },
       .settings_rule = "expected low < high",
       .fill = fill_uniform},
  };
  return sources;
}

const InputSource* find_input_source(const std::string& name) {
  for (auto& s : input_sources())
    if (s.name == name) return &s;
  return nullptr;
}

std::string input_source_forms() {
  std::vector<std::string> forms;
  for (auto& s : input_sources())
    forms.push_back(s.from_data ? "\"" + s.name + "\"" : "{\"" + s.name + "\": {...}}");
  std::string last = forms.back();
  forms.pop_back();
  return fmt::format("{} or {}", fmt::join(forms, ", "), last);
}

}  // namespace weft

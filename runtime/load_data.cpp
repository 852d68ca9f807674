// The "data" and "inputs" sections: which dataset split the data fields come from, and
// each input's shape and source (runtime/sources.h).
#include <fmt/format.h>

#include "runtime/format.h"
#include "runtime/load.h"
#include "runtime/sources.h"

namespace weft::load {

void load_data(Load& l) {
  if (!l.root.contains("data")) return;
  const json& d = l.root["data"];
  l.check_keys(d, "/data", format_key_names("data"));
  l.m.data.dataset = l.string_or(d, "dataset", "/data", "fashion-mnist");
  if (l.m.data.dataset != "fashion-mnist" && !is_mixture(l.m.data.dataset))
    l.fail("/data/dataset",
           "expected \"fashion-mnist\" (images; MNIST's files read the same way with --data) or "
           "a 2-D mixture, \"ring8\" or \"grid25\", got " +
               brief(d["dataset"]));
  l.m.data.split = l.string_or(d, "split", "/data", "train");
  if (l.m.data.split != "train" && l.m.data.split != "test")
    l.fail("/data/split", "expected \"train\" or \"test\", got " + brief(d["split"]));
  if (d.contains("range")) {
    const json& r = d["range"];
    if (!r.is_array() || r.size() != 2 || !r[0].is_number() || !r[1].is_number() || r[0] >= r[1])
      l.fail("/data/range", "expected [low, high] with low < high, got " + brief(r));
    l.m.data.low = r[0].get<double>();
    l.m.data.high = r[1].get<double>();
  }
}

namespace {

// A data field: its values per example must match the input's shape.
void check_data_field(Load& l, const InputSource& src, const ModelInput& in,
                      const std::string& where) {
  Shape rest(in.shape.begin() + 1, in.shape.end());
  Dim per = shape_numel(rest);  // the shape reader checked that it fits
  if (per == Dim(src.per_example)) return;
  l.fail(ptr(where, "shape"),
         fmt::format("{} has {}, the shape {} has {}{}", src.name, src.per_example_doc,
                     shape_str(in.shape), per.str(), src.hint.empty() ? "" : ": " + src.hint));
}

// Noise: {"normal": {settings}}; the settings default to the table's.
void read_noise(Load& l, const InputSource& src, const json& from, ModelInput& in,
                const std::string& fw) {
  const std::string sw = ptr(fw, src.name);
  const json& settings = from[src.name];
  std::set<std::string> names;
  for (auto& [name, dflt] : src.settings) names.insert(name);
  l.check_keys(settings, sw, names);
  in.a = l.number_or(settings, src.settings[0].first, sw, src.settings[0].second);
  in.b = l.number_or(settings, src.settings[1].first, sw, src.settings[1].second);
  if (!src.settings_ok(in.a, in.b))
    l.fail(src.settings_key.empty() ? fw : ptr(sw, src.settings_key), src.settings_rule);
}

}  // namespace

void load_inputs(Load& l) {
  if (!l.root.contains("inputs")) return;
  const json& ins = l.object(l.root["inputs"], "/inputs", "an object of named inputs");
  for (auto& [name, spec] : ins.items()) {
    std::string w = ptr("/inputs", name);
    l.check_keys(spec, w, format_key_names("input"));
    l.doc(spec, w);
    if (!spec.contains("shape")) l.fail(w, "missing \"shape\"");
    if (!spec.contains("from")) l.fail(w, "missing \"from\" (" + input_source_forms() + ")");
    ModelInput in;
    in.name = name;
    in.shape = l.shape(spec["shape"], ptr(w, "shape"));
    if (in.shape.empty() || in.shape[0] != Dim::B())
      l.fail(ptr(w, "shape"), "an input's first axis must be the batch \"B\"");
    const json& from = spec["from"];
    std::string fw = ptr(w, "from");
    const InputSource* src = nullptr;
    if (from.is_string())
      src = find_input_source(from.get<std::string>());
    else if (from.is_object() && from.size() == 1)
      src = find_input_source(from.begin().key());
    if (!src || src->from_data != from.is_string())
      l.fail(fw, "expected " + input_source_forms() + ", got " + brief(from));
    in.source = src->name;
    if (src->from_data) {
      l.m.uses_data = true;
      const bool mixture = is_mixture(l.m.data.dataset), points = src->name == "data.points";
      if (mixture && (src->name == "data.images" || src->name == "data.onehot"))
        l.fail(fw, fmt::format("the dataset \"{}\" is 2-D points, it has no {}; use "
                               "\"data.points\" (and \"data.labels\" for each point's mode)",
                               l.m.data.dataset, src->name));
      if (points && !mixture)
        l.fail(fw, fmt::format("\"data.points\" is a field of the 2-D mixtures (\"ring8\", "
                               "\"grid25\" in /data/dataset), not of \"{}\"",
                               l.m.data.dataset));
      check_data_field(l, *src, in, w);
    } else {
      read_noise(l, *src, from, in, fw);
    }
    l.b.where = w;
    in.id = l.b.input(name, in.shape).id;
    l.globals[name] = l.b.val(in.id);
    l.m.inputs.push_back(in);
  }
}

}  // namespace weft::load

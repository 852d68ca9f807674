// The "params" section: free parameters, outside any net. Layer parameters are made here
// too (make_param), when a net call first builds its layers.
#include "runtime/format.h"
#include "runtime/init.h"
#include "runtime/load.h"

namespace weft::load {

void check_init(const Load& l, const json& init, const std::string& where) {
  try {
    check_initializer(init);
  } catch (const AttrError& e) {
    l.fail(e.key().empty() ? where : where + "/" + e.key(), e.what());
  }
}

Val make_param(Load& l, const std::string& name, const std::string& net, const Shape& shape,
               const json& init, double fan_in, double fan_out, const std::string& where) {
  // Parameters are created whatever the batch, so their size is known now: each one, and
  // all together, must have an element count that fits (memory is checked when a
  // session creates them).
  try {
    int64_t total = shape_numel(shape).n;
    for (auto& p : l.m.params) total = checked_add(total, shape_numel(p.shape).n);
  } catch (const ShapeError& e) {
    l.fail(where,
           "parameter '" + name + "' of shape " + shape_str(shape) + " is too large: " + e.what());
  }
  ModelParam p{name, net, shape, init, fan_in, fan_out, true, {}};
  l.b.where = where;
  p.id = l.b.param(name, shape).id;
  l.m.params.push_back(p);
  if (!net.empty()) l.m.net_params[net].push_back(name);
  l.globals[name] = l.b.val(p.id);
  return l.b.val(p.id);
}

void load_params(Load& l) {
  if (!l.root.contains("params")) return;
  const json& ps = l.object(l.root["params"], "/params", "an object of named parameters");
  for (auto& [name, spec] : ps.items()) {
    std::string w = ptr("/params", name);
    l.check_keys(spec, w, format_key_names("param"));
    l.doc(spec, w);
    if (!spec.contains("shape")) l.fail(w, "missing \"shape\"");
    Shape s = l.shape(spec["shape"], ptr(w, "shape"));
    for (auto& d : s)
      if (d.batch) l.fail(ptr(w, "shape"), "a parameter's shape cannot depend on the batch");
    json init = spec.contains("init") ? spec["init"] : json("zeros");
    check_init(l, init, ptr(w, "init"));
    int64_t fan_in = s.size() > 1 ? shape_numel(Shape(s.begin() + 1, s.end())).n : 1;
    make_param(l, name, "", s, init, double(fan_in), s.empty() ? 1.0 : double(s[0].n), w);
    if (spec.contains("trainable"))
      l.m.params.back().trainable = l.boolean(spec["trainable"], ptr(w, "trainable"));
  }
}

}  // namespace weft::load

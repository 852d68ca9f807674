#include "runtime/op.h"

#include <fmt/format.h>

#include <algorithm>

namespace weft {

const char* attr_type_name(AttrType t) {
  switch (t) {
    case AttrType::Int:
      return "integer";
    case AttrType::PosInt:
      return "positive integer";
    case AttrType::NonNegInt:
      return "non-negative integer";
    case AttrType::Float:
      return "number";
    case AttrType::Bool:
      return "boolean";
    case AttrType::String:
      return "string";
    case AttrType::Choice:
      return "choice";
    case AttrType::Ints:
      return "list of integers";
    case AttrType::ShapeSpec:
      return "shape";
    case AttrType::Initializer:
      return "initializer";
    case AttrType::Pair:
      return "integer or [height, width]";
    case AttrType::Any:
      return "any";
  }
  return "?";
}

OpDef::OpDef(std::string n) : name(std::move(n)) {}

OpDef::OpDef(const OpDef& o)
    : name(o.name),
      docs(o.docs),
      origin_name(o.origin_name),
      internal_why(o.internal_why),
      inputs(o.inputs),
      outputs(o.outputs),
      attrs(o.attrs),
      shape_rule(o.shape_rule),
      kernel_list(o.kernel_list),
      grad_rule(o.grad_rule),
      expansion(o.expansion),
      param_rule(o.param_rule),
      flops_rule(o.flops_rule),
      test_spec(o.test_spec ? std::make_unique<OpTest>(*o.test_spec) : nullptr),
      is_alias(o.is_alias),
      is_source(o.is_source),
      is_dense(o.is_dense),
      mutated_inputs(o.mutated_inputs) {}

OpDef& OpDef::doc(std::string t) {
  docs = std::move(t);
  return *this;
}
OpDef& OpDef::input(std::string n) {
  inputs.push_back({std::move(n)});
  return *this;
}
OpDef& OpDef::optional_input(std::string n) {
  inputs.push_back({std::move(n), true, false});
  return *this;
}
OpDef& OpDef::variadic_input(std::string n) {
  inputs.push_back({std::move(n), false, true});
  return *this;
}
OpDef& OpDef::output(std::string n) {
  outputs.push_back(std::move(n));
  return *this;
}
OpDef& OpDef::attr(std::string n, AttrType t, json d, std::string doc_text) {
  attrs.push_back({std::move(n), t, std::move(d), false, std::move(doc_text), {}});
  return *this;
}
OpDef& OpDef::required(std::string n, AttrType t, std::string doc_text) {
  attrs.push_back({std::move(n), t, nullptr, true, std::move(doc_text), {}});
  return *this;
}
OpDef& OpDef::choice(std::string n, std::vector<std::string> c, std::string d,
                     std::string doc_text) {
  attrs.push_back({std::move(n), AttrType::Choice, d, false, std::move(doc_text), std::move(c)});
  return *this;
}
OpDef& OpDef::shape(ShapeRule r) {
  shape_rule = std::move(r);
  return *this;
}
OpDef& OpDef::kernel(int dev, DType dt, std::string n, KernelMaker m, int prio) {
  kernel_list.push_back({dev, dt, std::move(n), std::move(m), prio});
  std::stable_sort(
      kernel_list.begin(), kernel_list.end(),
      [](const KernelEntry& a, const KernelEntry& b) { return a.priority > b.priority; });
  return *this;
}
OpDef& OpDef::kernels(const std::vector<KernelEntry>& entries) {
  for (auto& e : entries) kernel(e.device_kind, e.dtype, e.name, e.make, e.priority);
  return *this;
}
OpDef& OpDef::grad(GradRule r) {
  grad_rule = std::move(r);
  return *this;
}
OpDef& OpDef::expand(Expansion e) {
  expansion = std::move(e);
  return *this;
}
OpDef& OpDef::params(ParamRule r) {
  param_rule = std::move(r);
  return *this;
}
OpDef& OpDef::flops(FlopsRule r) {
  flops_rule = std::move(r);
  return *this;
}
OpDef& OpDef::dense_flops(FlopsRule r) {
  is_dense = true;
  return flops(std::move(r));
}
OpDef& OpDef::test(OpTest t) {
  test_spec = std::make_unique<OpTest>(std::move(t));
  return *this;
}
OpDef& OpDef::alias() {
  is_alias = true;
  return *this;
}
OpDef& OpDef::mutates(std::vector<int> which) {
  mutated_inputs = std::move(which);
  return *this;
}
OpDef& OpDef::internal(std::string why) {
  internal_why = std::move(why);
  return *this;
}
OpDef& OpDef::source() {
  is_source = true;
  return *this;
}
OpDef& OpDef::origin(std::string w) {
  origin_name = std::move(w);
  return *this;
}

static std::string got(const json& v) {
  std::string s = v.dump();
  return s.size() > 40 ? s.substr(0, 40) + "..." : s;
}

// Integer attributes are counts, sizes, strides and axes. Beyond 2^31 they can only be a
// mistake, and oneDNN's kernels keep such geometry in 32-bit integers, so values outside
// [-2^31, 2^31) are refused here rather than truncated inside a primitive.
constexpr int64_t kAttrIntLimit = int64_t(1) << 31;

static void check_value(const AttrSpec& a, const json& v) {
  auto fail = [&](const std::string& expected) {
    throw AttrError(a.name, fmt::format("expected {}, got {}", expected, got(v)));
  };
  // Where x is an integer: -1 below `min`, 0 in [min, 2^31), 1 at or above 2^31. A JSON
  // integer above 2^63 is unsigned, and get<int64_t> would wrap it around.
  auto range = [&](const json& x, int64_t min) {
    if (x.is_number_unsigned() && x.get<uint64_t>() >= uint64_t(kAttrIntLimit)) return 1;
    const int64_t i = x.get<int64_t>();
    return i < min ? -1 : i >= kAttrIntLimit ? 1 : 0;
  };
  auto integer = [&](const json& x, int64_t min) {
    return x.is_number_integer() && range(x, min) == 0;
  };
  auto bounded = [&](const std::string& what, int64_t min) {
    if (!v.is_number_integer()) fail(what);
    const int r = range(v, min);
    if (r > 0) fail(what + " below 2^31");
    if (r < 0) fail(min == -kAttrIntLimit ? what + " of at least -2^31" : what);
  };
  switch (a.type) {
    case AttrType::Int:
      bounded("an integer", -kAttrIntLimit);
      break;
    case AttrType::PosInt:
      bounded("a positive integer", 1);
      break;
    case AttrType::NonNegInt:
      bounded("a non-negative integer", 0);
      break;
    case AttrType::Float:
      if (!v.is_number()) fail("a number");
      break;
    case AttrType::Bool:
      if (!v.is_boolean()) fail("true or false");
      break;
    case AttrType::String:
      if (!v.is_string()) fail("a string");
      break;
    case AttrType::Choice: {
      std::string list = fmt::format("one of \"{}\"", fmt::join(a.choices, "\", \""));
      if (!v.is_string()) fail(list);
      if (std::find(a.choices.begin(), a.choices.end(), v.get<std::string>()) == a.choices.end())
        fail(list);
      break;
    }
    case AttrType::Ints:
      if (!v.is_array()) fail("a list of integers");
      for (auto& x : v)
        if (!integer(x, -kAttrIntLimit)) fail("a list of integers in [-2^31, 2^31)");
      break;
    case AttrType::ShapeSpec:
      if (!v.is_array()) fail("a shape (a list of positive integers, \"B\" or -1)");
      for (auto& x : v) {
        const bool positive = x.is_number_unsigned()
                                  ? x.get<uint64_t>() > 0 && x.get<uint64_t>() <= INT64_MAX
                                  : x.is_number_integer() && x.get<int64_t>() > 0;
        if (!(x == "B" || x == -1 || positive))
          fail("a shape (a list of positive integers, \"B\" or -1)");
      }
      break;
    case AttrType::Pair: {
      auto ok = [&](const json& x) { return integer(x, 0); };
      if (!(ok(v) || (v.is_array() && v.size() == 2 && ok(v[0]) && ok(v[1]))))
        fail("a non-negative integer below 2^31 or a list of two");
      break;
    }
    case AttrType::Initializer:
    case AttrType::Any:
      break;
  }
}

json OpDef::complete_attrs(const json& given) const {
  json out = json::object();
  if (!given.is_null() && !given.is_object()) throw AttrError("", "attributes must be an object");
  for (auto& [k, v] : given.items()) {
    auto it =
        std::find_if(attrs.begin(), attrs.end(), [&](const AttrSpec& a) { return a.name == k; });
    if (it == attrs.end()) {
      std::vector<std::string> known;
      for (auto& a : attrs) known.push_back(a.name);
      throw AttrError(
          k, fmt::format("unknown attribute '{}' of op {} (it takes: {})", k, name,
                         known.empty() ? "none" : fmt::format("{}", fmt::join(known, ", "))));
    }
    // null leaves an optional attribute unset, as if it were not written; an attribute
    // with a value by default must be given one.
    if (!v.is_null() || !it->default_value.is_null() || it->required) check_value(*it, v);
    out[k] = v;
  }
  for (auto& a : attrs) {
    if (out.contains(a.name)) continue;
    if (a.required)
      throw AttrError(a.name, fmt::format("op {} needs attribute '{}' ({})", name, a.name, a.doc));
    out[a.name] = a.default_value;
  }
  return out;
}

void OpDef::check_arity(size_t n) const {
  size_t required_n = 0, max_n = 0;
  bool variadic = false;
  for (auto& i : inputs) {
    if (!i.optional) ++required_n;
    ++max_n;
    variadic = variadic || i.variadic;
  }
  if (n < required_n || (!variadic && n > max_n)) {
    std::vector<std::string> names;
    for (auto& i : inputs)
      names.push_back(i.name + (i.optional ? "?" : "") + (i.variadic ? "..." : ""));
    throw ShapeError(
        fmt::format("op {} takes inputs ({}), got {}", name, fmt::join(names, ", "), n));
  }
}

Registry& Registry::get() {
  static Registry r;
  return r;
}

void Registry::add(const OpDef& def) {
  if (ops_.count(def.name))
    throw Error(fmt::format("op '{}' is defined twice ({} and {})", def.name,
                            ops_[def.name]->origin_name, def.origin_name));
  WEFT_ASSERT(def.is_source || def.expansion || def.shape_rule,
              "op " + def.name + " has no shape rule");
  ops_[def.name] = std::make_unique<OpDef>(def);
}

void Registry::add_kernel(const std::string& op, const KernelEntry& k) {
  auto it = ops_.find(op);
  WEFT_ASSERT(it != ops_.end(), "kernel for unknown op " + op);
  it->second->kernel(k.device_kind, k.dtype, k.name, k.make, k.priority);
}

void Registry::remove(const std::string& n) {
  const size_t removed = ops_.erase(n);
  WEFT_ASSERT(removed == 1, "removing op " + n + ", which is not registered");
}

const OpDef* Registry::find(const std::string& n) const {
  auto it = ops_.find(n);
  return it == ops_.end() ? nullptr : it->second.get();
}

std::vector<const OpDef*> Registry::all() const {
  std::vector<const OpDef*> v;
  for (auto& [k, d] : ops_) v.push_back(d.get());
  return v;
}

OpRegistrar::OpRegistrar(const OpDef& def) { Registry::get().add(def); }

ScopedOp::ScopedOp(const OpDef& d) : name_(d.name) { Registry::get().add(d); }

ScopedOp::~ScopedOp() { Registry::get().remove(name_); }

const OpDef& ScopedOp::def() const { return *Registry::get().find(name_); }

std::string op_signature(const OpDef& d) {
  std::vector<std::string> in;
  for (auto& i : d.inputs)
    in.push_back(i.name + (i.optional ? "?" : "") + (i.variadic ? "..." : ""));
  return fmt::format("{}({}) -> {}", d.name, fmt::join(in, ", "), fmt::join(d.outputs, ", "));
}

}  // namespace weft

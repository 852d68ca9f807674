// Typed accessors of the loader: each value of a graph file is read here, at its JSON
// pointer, or refused with what was expected.
#include <fmt/format.h>

#include "runtime/load.h"

namespace weft::load {

std::string ptr(const std::string& base, const std::string& key) {
  return base + (json::json_pointer() / key).to_string();
}
std::string ptr(const std::string& base, size_t i) { return base + "/" + std::to_string(i); }

std::string brief(const json& v) {
  std::string s = v.dump();
  return s.size() > 50 ? s.substr(0, 47) + "..." : s;
}

void Reader::fail(const std::string& where, const std::string& what) const {
  throw Error(file_, where, what);
}

void Reader::check_keys(const json& obj, const std::string& where,
                        const std::set<std::string>& allowed) const {
  object(obj, where, "an object");
  for (auto& [k, v] : obj.items())
    if (!allowed.count(k))
      fail(ptr(where, k),
           fmt::format("unknown key \"{}\" (expected one of: {})", k, fmt::join(allowed, ", ")));
}

const json& Reader::object(const json& v, const std::string& where,
                           const std::string& expected) const {
  if (!v.is_object()) fail(where, "expected " + expected + ", got " + brief(v));
  return v;
}

const json& Reader::array(const json& v, const std::string& where,
                          const std::string& expected) const {
  if (!v.is_array()) fail(where, "expected " + expected + ", got " + brief(v));
  return v;
}

std::string Reader::string(const json& v, const std::string& where,
                           const std::string& expected) const {
  if (!v.is_string()) fail(where, "expected " + expected + ", got " + brief(v));
  return v.get<std::string>();
}

double Reader::number(const json& v, const std::string& where) const {
  if (!v.is_number()) fail(where, "expected a number, got " + brief(v));
  return v.get<double>();
}

bool Reader::boolean(const json& v, const std::string& where) const {
  if (!v.is_boolean()) fail(where, "expected true or false, got " + brief(v));
  return v.get<bool>();
}

Shape Reader::shape(const json& v, const std::string& where) const {
  if (!v.is_array())
    fail(where, "expected a shape (a list of positive integers and \"B\"), got " + brief(v));
  Shape s;
  for (size_t i = 0; i < v.size(); ++i) {
    // A JSON integer above 2^63 is unsigned; as int64_t it would wrap around.
    const bool fits = !v[i].is_number_unsigned() || v[i].get<uint64_t>() <= INT64_MAX;
    if (v[i] == "B")
      s.push_back(Dim::B());
    else if (v[i].is_number_integer() && fits && v[i].get<int64_t>() > 0)
      s.push_back(Dim(v[i].get<int64_t>()));
    else
      fail(ptr(where, i), "expected a positive integer or \"B\", got " + brief(v[i]));
  }
  try {
    shape_numel(s);
  } catch (const ShapeError& e) {
    fail(where, e.what());
  }
  return s;
}

std::string Reader::string_or(const json& obj, const std::string& key, const std::string& where,
                              const std::string& dflt) const {
  return obj.contains(key) ? string(obj[key], ptr(where, key)) : dflt;
}

double Reader::number_or(const json& obj, const std::string& key, const std::string& where,
                         double dflt) const {
  return obj.contains(key) ? number(obj[key], ptr(where, key)) : dflt;
}

int64_t Reader::positive_or(const json& obj, const std::string& key, const std::string& where,
                            int64_t dflt, int64_t max) const {
  if (!obj.contains(key)) return dflt;
  const json& v = obj[key];
  const bool fits = !v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t(max);
  if (!v.is_number_integer() || !fits || v.get<int64_t>() <= 0 || v.get<int64_t>() > max)
    fail(ptr(where, key), max == INT64_MAX ? "expected a positive integer, got " + brief(v)
                                           : fmt::format("expected a positive integer up to {}, "
                                                         "got {}",
                                                         max, brief(v)));
  return v.get<int64_t>();
}

void Reader::doc(const json& obj, const std::string& where) const {
  if (obj.is_object() && obj.contains("doc")) string(obj["doc"], ptr(where, "doc"));
}

}  // namespace weft::load

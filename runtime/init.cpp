#include "runtime/init.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "runtime/rng.h"

namespace weft {

namespace {
const char* kForms =
    "an initializer: \"zeros\", \"ones\", \"default\", \"xavier_uniform\", \"xavier_normal\", "
    "\"kaiming_uniform\", \"kaiming_normal\", {\"constant\": v}, {\"normal\": {\"mean\": m, "
    "\"std\": s}} or {\"uniform\": {\"low\": a, \"high\": b}}";

uint64_t name_hash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}
}  // namespace

void check_initializer(const json& spec) {
  auto fail = [&] {
    throw AttrError("", std::string("expected ") + kForms + ", got " + spec.dump());
  };
  if (spec.is_string()) {
    static const char* names[] = {
        "zeros",          "ones",          "default",         "xavier_uniform", "xavier_normal",
        "glorot_uniform", "glorot_normal", "kaiming_uniform", "kaiming_normal"};
    for (auto* n : names)
      if (spec == n) return;
    fail();
  }
  if (!spec.is_object() || spec.size() != 1) fail();
  const std::string k = spec.begin().key();
  const json& v = spec.begin().value();
  auto number = [&](const std::string& where, const json& x) {
    if (!x.is_number()) throw AttrError(where, "expected a number, got " + x.dump());
    return x.get<double>();
  };
  if (k == "constant") {
    number(k, v);
    return;
  }
  // normal and uniform: an object of settings, each a number; which are required and
  // which have defaults (mean 0, std 1) follows initialize() below.
  std::vector<std::string> settings;
  if (k == "normal") settings = {"mean", "std"};
  if (k == "uniform") settings = {"low", "high"};
  if (settings.empty()) fail();
  if (!v.is_object())
    throw AttrError(k, fmt::format("expected an object of settings ({}), got {}",
                                   fmt::join(settings, ", "), v.dump()));
  for (auto& [f, x] : v.items()) {
    if (std::find(settings.begin(), settings.end(), f) == settings.end())
      throw AttrError((json::json_pointer() / k / f).to_string().substr(1),
                      fmt::format("unknown setting \"{}\" of {} (it takes: {})", f, k,
                                  fmt::join(settings, ", ")));
    number(k + "/" + f, x);
  }
  if (k == "normal" && v.contains("std") && v["std"].get<double>() < 0)
    throw AttrError(k + "/std", "expected std >= 0");
  if (k == "uniform")
    for (auto& f : settings)
      if (!v.contains(f)) throw AttrError(k, fmt::format("missing \"{}\"", f));
}

void initialize(Tensor& t, const json& spec, double fan_in, double fan_out, uint64_t seed,
                const std::string& name) {
  const uint64_t key = stream_key(seed, name_hash(name));
  auto uniform = [&](double lo, double hi) {
    for (int64_t i = 0; i < t.numel(); ++i) t.set(i, lo + (hi - lo) * uniform01(key, uint64_t(i)));
  };
  auto normal = [&](double mean, double std) {
    for (int64_t i = 0; i < t.numel(); ++i) t.set(i, mean + std * normal01(key, uint64_t(i)));
  };
  if (spec.is_string()) {
    std::string s = spec;
    if (s == "zeros") return t.fill(0);
    if (s == "ones") return t.fill(1);
    if (s == "default") {
      double a = 1 / std::sqrt(fan_in);
      return uniform(-a, a);
    }
    if (s == "xavier_uniform" || s == "glorot_uniform") {
      double a = std::sqrt(6.0 / (fan_in + fan_out));
      return uniform(-a, a);
    }
    if (s == "xavier_normal" || s == "glorot_normal")
      return normal(0, std::sqrt(2.0 / (fan_in + fan_out)));
    if (s == "kaiming_uniform") {
      double a = std::sqrt(6.0 / fan_in);
      return uniform(-a, a);
    }
    if (s == "kaiming_normal") return normal(0, std::sqrt(2.0 / fan_in));
  } else {
    const std::string k = spec.begin().key();
    const json& v = spec.begin().value();
    if (k == "constant") return t.fill(v.get<double>());
    if (k == "normal") return normal(v.value("mean", 0.0), v.value("std", 1.0));
    if (k == "uniform") return uniform(v.at("low").get<double>(), v.at("high").get<double>());
  }
  WEFT_ASSERT(false, "initializer not checked: " + spec.dump());
}

}  // namespace weft

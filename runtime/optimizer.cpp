#include "runtime/optimizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/device.h"
#include "runtime/plan.h"

namespace weft {

namespace {

const std::map<std::string, json> kDefaults = {
    {"sgd", {{"lr", 0.01}, {"momentum", 0.0}, {"weight_decay", 0.0}, {"nesterov", false}}},
    {"adam",
     {{"lr", 1e-3}, {"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}, {"weight_decay", 0.0}}},
    {"rmsprop",
     {{"lr", 1e-2}, {"alpha", 0.99}, {"eps", 1e-8}, {"momentum", 0.0}, {"weight_decay", 0.0}}},
};
// Settings every optimizer takes; 0 is off.
const json kClipping = {{"clip_norm", 0.0}, {"clip_value", 0.0}, {"clip_weights", 0.0}};

// The state each optimizer keeps per parameter, in checkpoint order.
std::vector<std::string> state_names(const std::string& kind, const json& c) {
  if (kind == "adam") return {"m", "v"};
  if (kind == "rmsprop") return {"square_avg", "momentum"};
  if (c["momentum"].get<double>() != 0) return {"momentum"};
  return {};
}

}  // namespace

Optimizer::Optimizer(const json& spec, const std::vector<Tensor>& params,
                     const std::vector<std::string>& names)
    : params_(params) {
  const json c = check_optimizer(spec);
  kind_ = c.begin().key();
  settings_ = c.begin().value();
  clip_norm_ = settings_["clip_norm"];
  const std::vector<std::string> per = state_names(kind_, settings_);
  per_param_ = per.size();
  const Device dev = params.empty() ? Device::cpu() : params[0].device();
  for (size_t i = 0; i < params.size(); ++i) {
    WEFT_ASSERT(params[i].device() == dev, "an optimizer's parameters on two devices");
    for (auto& s : per)
      state_.push_back({names[i] + "." + s, zeros_on(dev, params[i].dtype(), params[i].shape())});
  }
  state_.push_back({"t", Tensor(DType::f64, {1})});  // on the host: it sets each step's scalars
  sumsq_ = zeros_on(dev, DType::f64, {1});
  const OpDef* update = Registry::get().find(kind_ + "_update");
  const OpDef* squares = Registry::get().find("sum_squares");
  WEFT_ASSERT(update && squares, "the optimizer ops are not registered");
  for (size_t i = 0; i < params.size(); ++i) {
    const Dims& d = params[i].shape();
    KernelInfo info{names[i], settings_, {d, d, {1}}, {}, params[i].dtype(), dev, false};
    for (size_t k = 0; k < per_param_; ++k) info.in.push_back(d);
    std::string kernel_name;
    updates_.push_back(make_kernel(*update, info, kernel_name, ""));
    KernelInfo sq{names[i], json::object(), {d, {1}}, {}, params[i].dtype(), dev, false};
    squares_.push_back(make_kernel(*squares, sq, kernel_name, ""));
  }
}

void Optimizer::update(const std::vector<const Tensor*>& grads) {
  WEFT_ASSERT(grads.size() == params_.size(), "one gradient per parameter");
  Tensor& t = state_.back().second;
  const double step = t.at(0) + 1;  // this update's number, from 1
  zero_within(sumsq_);
  double scale = 1;
  if (clip_norm_ > 0) {  // the norm scales the update: a pass of its own first
    for (size_t i = 0; i < grads.size(); ++i) {
      KernelArgs a;
      a.in = {grads[i], &sumsq_};
      a.ctx = &ctx_;
      squares_[i]->run(a);
    }
    const double norm = std::sqrt(on_host(sumsq_).at(0));
    // A non-finite norm is left alone: scaling by it would hide which gradient broke.
    if (std::isfinite(norm) && norm > clip_norm_) scale = clip_norm_ / norm;
  }
  std::vector<double> scalars = {scale, clip_norm_ > 0 ? 0.0 : 1.0};
  if (kind_ == "sgd") scalars.push_back(step == 1 ? 1 : 0);
  if (kind_ == "adam") {
    const double b1 = settings_["beta1"], b2 = settings_["beta2"], lr = settings_["lr"];
    scalars.push_back(lr / (1 - std::pow(b1, step)));
    scalars.push_back(1 / std::sqrt(1 - std::pow(b2, step)));
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    KernelArgs a;
    a.in = {&params_[i], grads[i], &sumsq_};
    for (size_t k = 0; k < per_param_; ++k) a.in.push_back(&state_[i * per_param_ + k].second);
    a.ctx = &ctx_;
    a.scalars = scalars.data();
    a.n_scalars = int(scalars.size());
    updates_[i]->run(a);
  }
  t.set(0, step);
}

double Optimizer::step(const std::vector<const Tensor*>& grads) {
  update(grads);
  return std::sqrt(on_host(sumsq_).at(0));
}

std::map<std::string, json> optimizer_settings() {
  std::map<std::string, json> all = kDefaults;
  for (auto& [kind, settings] : all) settings.update(kClipping);
  return all;
}

json check_optimizer(const json& spec) {
  if (!spec.is_object() || spec.size() != 1 || !kDefaults.count(spec.begin().key()))
    throw AttrError(
        "", "expected one of {\"adam\": {...}}, {\"sgd\": {...}}, {\"rmsprop\": {...}}, got " +
                spec.dump());
  std::string kind = spec.begin().key();
  const json& given = spec.begin().value();
  if (!given.is_object()) throw AttrError(kind, "expected an object of settings");
  json out = kDefaults.at(kind);
  out.update(kClipping);
  for (auto& [k, v] : given.items()) {
    if (!out.contains(k)) {
      std::vector<std::string> known;
      for (auto& [kk, vv] : out.items()) known.push_back(kk);
      throw AttrError(kind + "/" + k, fmt::format("unknown setting \"{}\" of {} (it takes: {})", k,
                                                  kind, fmt::join(known, ", ")));
    }
    if (out[k].is_boolean() ? !v.is_boolean() : !v.is_number())
      throw AttrError(kind + "/" + k,
                      fmt::format("expected {}, got {}",
                                  out[k].is_boolean() ? "true or false" : "a number", v.dump()));
    out[k] = v;
  }
  if (!(out["lr"].get<double>() > 0)) throw AttrError(kind + "/lr", "expected lr > 0");
  for (const char* c : {"clip_norm", "clip_value", "clip_weights"})
    if (!(out[c].get<double>() >= 0))
      throw AttrError(kind + "/" + c, fmt::format("expected {} >= 0 (0 is off)", c));
  for (const char* b : {"beta1", "beta2", "alpha", "momentum"})
    if (out.contains(b) && !(out[b].get<double>() >= 0 && out[b].get<double>() < 1))
      throw AttrError(kind + "/" + b, fmt::format("expected {} in [0, 1)", b));
  return json{{kind, out}};
}

std::unique_ptr<Optimizer> make_optimizer(const json& spec, const std::vector<Tensor>& params,
                                          const std::vector<std::string>& names) {
  return std::make_unique<Optimizer>(spec, params, names);
}

}  // namespace weft

#include "runtime/optimizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

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

// Runs body(k) for every element k of a parameter in parallel chunks, on the OpenMP team
// oneDNN uses: its threads are still spinning from the last primitive, and a second (TBB)
// pool on the same cores would fight them (see runtime/threading.h). With `squares` it
// also returns the sum of the squared raw gradient, in the same pass (the norm that is
// logged, when clipping by norm does not need it before the update). The body captures
// its pointers by value and the loops are `omp simd`: captured by reference, each pointer
// was reloaded from the closure after every store (it might alias), and GCC vectorized
// none of the update loops.
// Sixteen partial sums, so that the loop vectorizes without reassociating a single sum
// (omp simd's reduction was not vectorized inside the parallel loop below).
template <class T>
double sum_squares(const T* g, int64_t b, int64_t e) {
  double part[16] = {};
  int64_t k = b;
  for (; k + 16 <= e; k += 16)
    for (int l = 0; l < 16; ++l) part[l] += double(g[k + l]) * double(g[k + l]);
  double s = 0;
  for (; k < e; ++k) s += double(g[k]) * double(g[k]);
  for (double v : part) s += v;
  return s;
}

template <class T, class Body>
double for_elements(int64_t n, const T* g, bool squares, Body body) {
  const int64_t grain = 1 << 15, pieces = (n + grain - 1) / grain;
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (pieces > 1)
  for (int64_t c = 0; c < pieces; ++c) {
    const int64_t b = c * grain, e = std::min(n, b + grain);
    // The squares first, over a chunk small enough (128 KiB of f32) that the update reads
    // it again from cache: one loop doing both was not vectorized.
    if (squares) total += sum_squares(g, b, e);
#pragma omp simd
    for (int64_t k = b; k < e; ++k) body(k);
  }
  return total;
}

// Calls apply<float> or apply<double> for each parameter; sums what they return.
template <class Apply>
double each_param(const std::vector<Tensor>& params, Apply apply) {
  double total = 0;
  for (size_t i = 0; i < params.size(); ++i)
    total += params[i].dtype() == DType::f32 ? apply(float{}, i) : apply(double{}, i);
  return total;
}

class Sgd : public Optimizer {
 public:
  Sgd(const json& c, const std::vector<Tensor>& params, const std::vector<std::string>& names)
      : Optimizer(c),
        lr_(c["lr"]),
        mom_(c["momentum"]),
        wd_(c["weight_decay"]),
        nesterov_(c["nesterov"]) {
    if (mom_ != 0)
      for (size_t i = 0; i < params.size(); ++i)
        state_.push_back({names[i] + ".momentum", Tensor(params[i].dtype(), params[i].shape())});
    state_.push_back({"t", Tensor(DType::f64, {1})});
  }
  double update(const std::vector<Tensor>& params, const std::vector<const Tensor*>& grads,
                const GradTransform& gt) override {
    const double t = state_.back().second.at(0);
    const double sum = each_param(params, [&](auto zero, size_t i) {
      using T = decltype(zero);
      T* p = params[i].data<T>();
      const T* g = grads[i]->data<T>();
      const T gs = T(gt.scale), gc = T(gt.clip);
      T* buf = mom_ != 0 ? state_[i].second.data<T>() : nullptr;
      const T lr = T(lr_), mom = T(mom_), wd = T(wd_);
      const bool first = t == 0, nesterov = nesterov_;
      return for_elements(params[i].numel(), g, gt.squares, [=](int64_t k) {
        T d = std::clamp(g[k] * gs, -gc, gc) + wd * p[k];
        if (buf) {
          buf[k] = first ? d : mom * buf[k] + d;
          d = nesterov ? d + mom * buf[k] : buf[k];
        }
        p[k] -= lr * d;
      });
    });
    state_.back().second.set(0, t + 1);
    return sum;
  }

 private:
  double lr_, mom_, wd_;
  bool nesterov_;
};

class Adam : public Optimizer {
 public:
  Adam(const json& c, const std::vector<Tensor>& params, const std::vector<std::string>& names)
      : Optimizer(c),
        lr_(c["lr"]),
        b1_(c["beta1"]),
        b2_(c["beta2"]),
        eps_(c["eps"]),
        wd_(c["weight_decay"]) {
    for (size_t i = 0; i < params.size(); ++i) {
      state_.push_back({names[i] + ".m", Tensor(params[i].dtype(), params[i].shape())});
      state_.push_back({names[i] + ".v", Tensor(params[i].dtype(), params[i].shape())});
    }
    state_.push_back({"t", Tensor(DType::f64, {1})});
  }
  double update(const std::vector<Tensor>& params, const std::vector<const Tensor*>& grads,
                const GradTransform& gt) override {
    const double t = state_.back().second.at(0) + 1;
    state_.back().second.set(0, t);
    return each_param(params, [&](auto zero, size_t i) {
      using T = decltype(zero);
      T* p = params[i].data<T>();
      const T* g = grads[i]->data<T>();
      const T gs = T(gt.scale), gc = T(gt.clip);
      T* m = state_[2 * i].second.data<T>();
      T* v = state_[2 * i + 1].second.data<T>();
      const T b1 = T(b1_), b2 = T(b2_), wd = T(wd_), eps = T(eps_);
      // lr * mhat / (sqrt(vhat) + eps) with the bias corrections folded into two scalars.
      const T step = T(lr_ / (1 - std::pow(b1_, t)));
      const T vscale = T(1 / std::sqrt(1 - std::pow(b2_, t)));
      return for_elements(params[i].numel(), g, gt.squares, [=](int64_t k) {
        const T d = std::clamp(g[k] * gs, -gc, gc) + wd * p[k];
        m[k] = b1 * m[k] + (1 - b1) * d;
        v[k] = b2 * v[k] + (1 - b2) * d * d;
        p[k] -= step * m[k] / (std::sqrt(v[k]) * vscale + eps);
      });
    });
  }

 private:
  double lr_, b1_, b2_, eps_, wd_;
};

class RmsProp : public Optimizer {
 public:
  RmsProp(const json& c, const std::vector<Tensor>& params, const std::vector<std::string>& names)
      : Optimizer(c),
        lr_(c["lr"]),
        alpha_(c["alpha"]),
        eps_(c["eps"]),
        mom_(c["momentum"]),
        wd_(c["weight_decay"]) {
    for (size_t i = 0; i < params.size(); ++i) {
      state_.push_back({names[i] + ".square_avg", Tensor(params[i].dtype(), params[i].shape())});
      state_.push_back({names[i] + ".momentum", Tensor(params[i].dtype(), params[i].shape())});
    }
    state_.push_back({"t", Tensor(DType::f64, {1})});
  }
  double update(const std::vector<Tensor>& params, const std::vector<const Tensor*>& grads,
                const GradTransform& gt) override {
    const double sum = each_param(params, [&](auto zero, size_t i) {
      using T = decltype(zero);
      T* p = params[i].data<T>();
      const T* g = grads[i]->data<T>();
      const T gs = T(gt.scale), gc = T(gt.clip);
      T* sq = state_[2 * i].second.data<T>();
      T* buf = state_[2 * i + 1].second.data<T>();
      const T lr = T(lr_), a = T(alpha_), eps = T(eps_), mom = T(mom_), wd = T(wd_);
      auto step = [=](int64_t k) {
        const T d = std::clamp(g[k] * gs, -gc, gc) + wd * p[k];
        sq[k] = a * sq[k] + (1 - a) * d * d;
        return d / (std::sqrt(sq[k]) + eps);
      };
      const int64_t n = params[i].numel();
      // Two bodies: a branch inside one kept the loop from being vectorized.
      if (mom != 0)
        return for_elements(n, g, gt.squares,
                            [=](int64_t k) { p[k] -= lr * (buf[k] = mom * buf[k] + step(k)); });
      return for_elements(n, g, gt.squares, [=](int64_t k) { p[k] -= lr * step(k); });
    });
    state_.back().second.set(0, state_.back().second.at(0) + 1);
    return sum;
  }

 private:
  double lr_, alpha_, eps_, mom_, wd_;
};

}  // namespace

Optimizer::Optimizer(const json& c)
    : clip_norm_(c.value("clip_norm", 0.0)),
      clip_value_(c.value("clip_value", 0.0)),
      clip_weights_(c.value("clip_weights", 0.0)) {}

double Optimizer::step(const std::vector<Tensor>& params, const std::vector<const Tensor*>& grads) {
  GradTransform gt;
  gt.clip = clip_value_ > 0 ? clip_value_ : std::numeric_limits<double>::infinity();
  double norm = 0;
  if (clip_norm_ > 0) {  // the norm scales the update: a pass of its own first
    double sum = 0;
    for (size_t i = 0; i < grads.size(); ++i) {
      const Tensor* g = grads[i];
      sum += g->dtype() == DType::f32
                 ? for_elements(g->numel(), g->data<float>(), true, [](int64_t) {})
                 : for_elements(g->numel(), g->data<double>(), true, [](int64_t) {});
    }
    norm = std::sqrt(sum);
    // A non-finite norm is left alone: scaling by it would hide which gradient broke.
    if (std::isfinite(norm) && norm > clip_norm_) gt.scale = clip_norm_ / norm;
    update(params, grads, gt);
  } else {
    gt.squares = true;  // measured in the update's own pass
    norm = std::sqrt(update(params, grads, gt));
  }
  if (clip_weights_ > 0)
    each_param(params, [&](auto zero, size_t i) {
      using T = decltype(zero);
      T* q = params[i].data<T>();
      const T c = T(clip_weights_);
      return for_elements(params[i].numel(), q, false,
                          [=](int64_t k) { q[k] = std::clamp(q[k], -c, c); });
    });
  return norm;
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
  json c = check_optimizer(spec);
  std::string kind = c.begin().key();
  const json& s = c.begin().value();
  if (kind == "sgd") return std::make_unique<Sgd>(s, params, names);
  if (kind == "adam") return std::make_unique<Adam>(s, params, names);
  return std::make_unique<RmsProp>(s, params, names);
}

}  // namespace weft

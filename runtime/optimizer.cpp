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

// Runs f(begin, end) over [0, n) in parallel chunks, on the OpenMP team oneDNN uses: its
// threads are still spinning from the last primitive, and a second (TBB) pool on the
// same cores would fight them (see runtime/threading.h). The element loops below capture
// their pointers by value and are marked `omp simd`: captured by reference, each pointer
// is reloaded from the closure after every store (it might alias), and GCC vectorized
// none of the update loops.
template <class F>
void chunks(int64_t n, F f) {
  const int64_t grain = 1 << 15, pieces = (n + grain - 1) / grain;
#pragma omp parallel for schedule(static) if (pieces > 1)
  for (int64_t c = 0; c < pieces; ++c) f(c * grain, std::min(n, (c + 1) * grain));
}

template <class T>
struct Typed {
  static T* p(const Tensor& t) { return t.data<T>(); }
};

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
  void update(const std::vector<Tensor>& params, const std::vector<const Tensor*>& grads,
              const GradTransform& gt) override {
    double t = state_.back().second.at(0);
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].dtype() == DType::f32)
        apply<float>(params[i], *grads[i], i, t, gt);
      else
        apply<double>(params[i], *grads[i], i, t, gt);
    }
    state_.back().second.set(0, t + 1);
  }

 private:
  template <class T>
  void apply(const Tensor& pt, const Tensor& gt_, size_t i, double t, const GradTransform& gt) {
    T* __restrict p = pt.data<T>();
    const T* __restrict g = gt_.data<T>();
    const T gs = T(gt.scale), gc = T(gt.clip);
    T* __restrict buf = mom_ != 0 ? state_[i].second.data<T>() : nullptr;
    const T lr = T(lr_), mom = T(mom_), wd = T(wd_);
    const bool first = t == 0, nesterov = nesterov_;
    chunks(pt.numel(), [=](int64_t b, int64_t e) {
#pragma omp simd
      for (int64_t k = b; k < e; ++k) {
        T d = std::clamp(g[k] * gs, -gc, gc) + wd * p[k];
        if (buf) {
          buf[k] = first ? d : mom * buf[k] + d;
          d = nesterov ? d + mom * buf[k] : buf[k];
        }
        p[k] -= lr * d;
      }
    });
  }
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
  void update(const std::vector<Tensor>& params, const std::vector<const Tensor*>& grads,
              const GradTransform& gt) override {
    double t = state_.back().second.at(0) + 1;
    state_.back().second.set(0, t);
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].dtype() == DType::f32)
        apply<float>(params[i], *grads[i], i, t, gt);
      else
        apply<double>(params[i], *grads[i], i, t, gt);
    }
  }

 private:
  template <class T>
  void apply(const Tensor& pt, const Tensor& gt_, size_t i, double t, const GradTransform& gt) {
    T* __restrict p = pt.data<T>();
    const T* __restrict g = gt_.data<T>();
    const T gs = T(gt.scale), gc = T(gt.clip);
    T* __restrict m = state_[2 * i].second.data<T>();
    T* __restrict v = state_[2 * i + 1].second.data<T>();
    const T b1 = T(b1_), b2 = T(b2_), wd = T(wd_), eps = T(eps_);
    // lr * mhat / (sqrt(vhat) + eps) with the bias corrections folded into two scalars.
    const T step = T(lr_ / (1 - std::pow(b1_, t)));
    const T vscale = T(1 / std::sqrt(1 - std::pow(b2_, t)));
    chunks(pt.numel(), [=](int64_t b, int64_t e) {
#pragma omp simd
      for (int64_t k = b; k < e; ++k) {
        T d = std::clamp(g[k] * gs, -gc, gc) + wd * p[k];
        m[k] = b1 * m[k] + (1 - b1) * d;
        v[k] = b2 * v[k] + (1 - b2) * d * d;
        p[k] -= step * m[k] / (std::sqrt(v[k]) * vscale + eps);
      }
    });
  }
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
  void update(const std::vector<Tensor>& params, const std::vector<const Tensor*>& grads,
              const GradTransform& gt) override {
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].dtype() == DType::f32)
        apply<float>(params[i], *grads[i], i, gt);
      else
        apply<double>(params[i], *grads[i], i, gt);
    }
    state_.back().second.set(0, state_.back().second.at(0) + 1);
  }

 private:
  template <class T>
  void apply(const Tensor& pt, const Tensor& gt_, size_t i, const GradTransform& gt) {
    T* __restrict p = pt.data<T>();
    const T* __restrict g = gt_.data<T>();
    const T gs = T(gt.scale), gc = T(gt.clip);
    T* __restrict sq = state_[2 * i].second.data<T>();
    T* __restrict buf = state_[2 * i + 1].second.data<T>();
    const T lr = T(lr_), a = T(alpha_), eps = T(eps_), mom = T(mom_), wd = T(wd_);
    auto step = [=](int64_t k) {
      const T d = std::clamp(g[k] * gs, -gc, gc) + wd * p[k];
      sq[k] = a * sq[k] + (1 - a) * d * d;
      return d / (std::sqrt(sq[k]) + eps);
    };
    chunks(pt.numel(), [=](int64_t b, int64_t e) {
      if (mom != 0) {  // two loops: a branch inside one keeps it from being vectorized
#pragma omp simd
        for (int64_t k = b; k < e; ++k) p[k] -= lr * (buf[k] = mom * buf[k] + step(k));
      } else {
#pragma omp simd
        for (int64_t k = b; k < e; ++k) p[k] -= lr * step(k);
      }
    });
  }
  double lr_, alpha_, eps_, mom_, wd_;
};

}  // namespace

Optimizer::Optimizer(const json& c)
    : clip_norm_(c.value("clip_norm", 0.0)),
      clip_value_(c.value("clip_value", 0.0)),
      clip_weights_(c.value("clip_weights", 0.0)) {}

double Optimizer::step(const std::vector<Tensor>& params, const std::vector<const Tensor*>& grads) {
  double sum = 0;
  for (const Tensor* g : grads) {
    const int64_t n = g->numel();
    if (g->dtype() == DType::f32) {
      const float* p = g->data<float>();
#pragma omp parallel for simd reduction(+ : sum) schedule(static) if (n > (1 << 16))
      for (int64_t k = 0; k < n; ++k) sum += double(p[k]) * p[k];
    } else {
      const double* p = g->data<double>();
#pragma omp parallel for simd reduction(+ : sum) schedule(static) if (n > (1 << 16))
      for (int64_t k = 0; k < n; ++k) sum += p[k] * p[k];
    }
  }
  const double norm = std::sqrt(sum);
  GradTransform gt;
  // A non-finite norm is left alone: scaling by it would hide which gradient broke.
  if (clip_norm_ > 0 && std::isfinite(norm) && norm > clip_norm_) gt.scale = clip_norm_ / norm;
  gt.clip = clip_value_ > 0 ? clip_value_ : std::numeric_limits<double>::infinity();
  update(params, grads, gt);
  if (clip_weights_ > 0)
    for (const Tensor& p : params) {
      const int64_t n = p.numel();
      if (p.dtype() == DType::f32) {
        float* q = p.data<float>();
        const float c = float(clip_weights_);
        chunks(n, [=](int64_t b, int64_t e) {
#pragma omp simd
          for (int64_t k = b; k < e; ++k) q[k] = std::clamp(q[k], -c, c);
        });
      } else {
        double* q = p.data<double>();
        const double c = clip_weights_;
        chunks(n, [=](int64_t b, int64_t e) {
#pragma omp simd
          for (int64_t k = b; k < e; ++k) q[k] = std::clamp(q[k], -c, c);
        });
      }
    }
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

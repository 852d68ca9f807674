// Optimizers update parameters in place from their gradients. They follow PyTorch's
// definitions (weight decay added to the gradient), so a run can be compared with one.
//   sgd:     {"lr", "momentum": 0, "weight_decay": 0, "nesterov": false}
//   adam:    {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0}
//   rmsprop: {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "momentum": 0, "weight_decay": 0}
// Each also takes, off when 0:
//   "clip_norm": c     the gradients scaled together so that their global L2 norm is at
//                      most c (PyTorch's clip_grad_norm_), before weight decay
//   "clip_value": c    each gradient element clamped to [-c, c] (after clip_norm)
//   "clip_weights": c  each parameter clamped to [-c, c] after the update (WGAN's critic)
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/op.h"

namespace weft {

// Checks {"adam": {...}} and the like and fills defaults; throws AttrError whose key is the
// pointer below the optimizer ("adam/lr").
json check_optimizer(const json& spec);

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // One update of every parameter from its gradient, clipped as configured. Returns the
  // gradients' global L2 norm before any clipping (what the metrics log).
  double step(const std::vector<Tensor>& params, const std::vector<const Tensor*>& grads);
  // Named state tensors (moments, step count), for checkpoints; restored in place.
  std::vector<std::pair<std::string, Tensor>>& state() { return state_; }

 protected:
  explicit Optimizer(const json& settings);
  // What every update does to a gradient element first: g * scale, clamped to [-clip, clip].
  struct GradTransform {
    double scale = 1, clip = 0;  // clip is infinite when off
    bool squares = false;        // also sum the squared raw gradients, in the same pass
  };
  // Returns the sum of the squared gradients when gt.squares asks for it, else 0.
  virtual double update(const std::vector<Tensor>& params, const std::vector<const Tensor*>& grads,
                        const GradTransform& gt) = 0;
  std::vector<std::pair<std::string, Tensor>> state_;

 private:
  double clip_norm_, clip_value_, clip_weights_;
};

// param_names name the state: "<param>.m", "<param>.v", "t".
std::unique_ptr<Optimizer> make_optimizer(const json& spec, const std::vector<Tensor>& params,
                                          const std::vector<std::string>& param_names);

}  // namespace weft

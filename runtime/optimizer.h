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

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/op.h"

namespace weft {

// Checks {"adam": {...}} and the like and fills defaults; throws AttrError whose key is the
// pointer below the optimizer ("adam/lr").
json check_optimizer(const json& spec);
// Each optimizer's settings with their defaults, clipping included (for `weft schema`).
std::map<std::string, json> optimizer_settings();

// An optimizer of a list of parameters. Its updates are ops (sgd_update, adam_update,
// rmsprop_update in ops/optim.cpp) whose kernels are made once, on the parameters' device,
// for their shapes; its state lives on that device too, beside a step count on the host.
class Optimizer {
 public:
  Optimizer(const json& spec, const std::vector<Tensor>& params,
            const std::vector<std::string>& param_names);
  // One update of every parameter from its gradient, clipped as configured, queued on the
  // parameters' device. With clip_norm the gradients' norm is read back first (it scales
  // the update); otherwise it stays on the device, in sum_of_squares().
  void update(const std::vector<const Tensor*>& grads);
  // The sum of the squared gradients of the last update, before any clipping (f64 [1], on
  // the parameters' device): the square of the norm that is logged.
  const Tensor& sum_of_squares() const { return sumsq_; }
  // update(), then the gradients' global L2 norm read back.
  double step(const std::vector<const Tensor*>& grads);
  // Named state tensors (moments, step count), for checkpoints; restored in place.
  std::vector<std::pair<std::string, Tensor>>& state() { return state_; }

 private:
  std::string kind_;
  json settings_;
  double clip_norm_;
  std::vector<Tensor> params_;
  std::vector<std::pair<std::string, Tensor>> state_;  // per parameter, then "t" (host)
  size_t per_param_ = 0;                               // state tensors of each parameter
  Tensor sumsq_;
  std::vector<std::unique_ptr<Kernel>> updates_, squares_;
  std::vector<KernelArgs> update_args_, squares_args_;
  RunContext ctx_;
};

// param_names name the state: "<param>.m", "<param>.v", "t".
std::unique_ptr<Optimizer> make_optimizer(const json& spec, const std::vector<Tensor>& params,
                                          const std::vector<std::string>& param_names);

}  // namespace weft

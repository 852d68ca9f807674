// Optimizers update parameters in place from their gradients. They follow PyTorch's
// definitions (weight decay added to the gradient), so a run can be compared with one.
//   sgd:     {"lr", "momentum": 0, "weight_decay": 0, "nesterov": false}
//   adam:    {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0}
//   rmsprop: {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "momentum": 0, "weight_decay": 0}
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
  // One update of every parameter from its gradient.
  virtual void step(const std::vector<Tensor>& params, const std::vector<const Tensor*>& grads) = 0;
  // Named state tensors (moments, step count), for checkpoints; restored in place.
  std::vector<std::pair<std::string, Tensor>>& state() { return state_; }

 protected:
  std::vector<std::pair<std::string, Tensor>> state_;
};

// param_names name the state: "<param>.m", "<param>.v", "t".
std::unique_ptr<Optimizer> make_optimizer(const json& spec, const std::vector<Tensor>& params,
                                          const std::vector<std::string>& param_names);

}  // namespace weft

// Parameter initializers: "zeros", "ones", {"constant": v}, {"normal": {"mean", "std"}},
// {"uniform": {"low", "high"}}, "xavier_uniform" / "glorot_uniform", "xavier_normal" /
// "glorot_normal", "kaiming_uniform", "kaiming_normal", and "default" (uniform in
// +-1/sqrt(fan_in), what PyTorch's linear layers start from).
#pragma once

#include "runtime/op.h"

namespace weft {

// Throws AttrError when the spec is not one of the forms above. Its key is where in the
// spec the mistake is, as a relative JSON pointer ("" for the whole, "normal/std").
void check_initializer(const json& spec);
// Fills t; draws depend only on (seed, name).
void initialize(Tensor& t, const json& spec, double fan_in, double fan_out, uint64_t seed,
                const std::string& name);

}  // namespace weft

#pragma once

#include "runtime/model.h"
#include "runtime/trainer.h"

namespace weft {
// `weft bench`: samples/s over `steps` training steps and a per-op time table.
int run_bench(const Model& m, const SessionOptions& so, int64_t steps, int64_t warmup, int nodes);
}  // namespace weft

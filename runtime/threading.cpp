#include "runtime/threading.h"

#include <omp.h>
#include <tbb/global_control.h>

#include <memory>
#include <thread>

namespace weft {

int apply_threads(const ThreadPolicy& p) {
  static std::unique_ptr<tbb::global_control> tbb_limit;
  int n = p.threads > 0 ? p.threads : int(std::thread::hardware_concurrency());
  if (n < 1) n = 1;
  tbb_limit =
      std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, n);
  omp_set_num_threads(n);
  return n;
}

}  // namespace weft

#include "runtime/threading.h"

#include <omp.h>
#include <tbb/global_control.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <thread>

namespace weft {

// OpenMP's wait policy must be decided before the OpenMP runtime starts. libgomp's default
// lets a thread that waits at a barrier spin for up to 300,000 iterations before it sleeps.
// On a quiet machine that saves a wake-up per parallel region; on a busy one it is a
// disaster: when another process holds one of the cores, the spinning thread burns its time
// slice waiting for a team mate that the scheduler cannot run, so every oneDNN primitive and
// every optimizer loop waits a scheduling quantum, and a 2-thread mlp_gan step went from a
// few ms to over a second. With passive waiting (sleep at once, woken by a futex) the step
// stays close to its one-thread time, and the quiet machine loses nothing measurable
// (README, "Threading"). libgomp reads these settings once, in its own constructor, from the
// environment the process started with: a setenv() even from the executable's
// pre-initialization array comes too late (measured with OMP_DISPLAY_ENV=verbose: the wait
// policy changes, the spin count stays 300,000). So the runner sets them and executes itself
// again, once. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is left as it is.
void use_passive_openmp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  setenv("OMP_WAIT_POLICY", "passive", 0);
  setenv("GOMP_SPINCOUNT", "0", 0);
  execv("/proc/self/exe", argv);  // returns only on failure: run on with libgomp's default
}

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

#include "runtime/threading.h"

#include <omp.h>
#include <sched.h>
#if defined(__SSE2__)
#include <xmmintrin.h>
#endif
#include <pthread.h>
#include <tbb/global_control.h>
#include <tbb/task_scheduler_observer.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

namespace weft {

namespace {

// The cores that other processes kept busy over a short interval, from /proc/stat (this
// process sleeps meanwhile, so nearly all of it is theirs); -1 if it cannot be read.
double busy_cores(std::chrono::milliseconds interval) {
  auto sample = [](uint64_t& total, uint64_t& idle) {
    std::ifstream f("/proc/stat");
    std::string cpu;
    uint64_t v[8] = {};
    if (!(f >> cpu) || cpu != "cpu") return false;
    for (auto& x : v) f >> x;  // user nice system idle iowait irq softirq steal
    total = 0;
    for (auto x : v) total += x;
    idle = v[3] + v[4];
    return bool(f);
  };
  uint64_t t0 = 0, i0 = 0, t1 = 0, i1 = 0;
  if (!sample(t0, i0)) return -1;
  std::this_thread::sleep_for(interval);
  if (!sample(t1, i1) || t1 <= t0) return -1;
  const double busy = double((t1 - t0) - (i1 - i0)) / double(t1 - t0);
  return busy * double(std::thread::hardware_concurrency());
}

}  // namespace

// OpenMP's wait policy must be decided before the OpenMP runtime starts, and no single
// policy is right for both a quiet and a busy machine (tools/bench_threads.py, README
// "Threading"). libgomp's default lets a thread that waits at a barrier spin before it
// sleeps. On a quiet machine that is what makes a 2-thread step fast: on this project's
// 2-core virtual machine, sleeping at once (OMP_WAIT_POLICY=passive) made mlp_gan's step
// twice as slow, because waking a sleeping thread costs more than a small primitive. On a
// busy machine spinning is a disaster: when another process holds one of the cores, the
// spinning thread burns its time slice waiting for a team mate that the scheduler cannot
// run, every oneDNN primitive waits for a scheduling quantum, and mlp_gan fell from
// thousands of samples/s to tens; passive waiting keeps it near its one-thread speed.
// So weft looks at the machine when it starts: if other processes keep busy at least half
// a core, its OpenMP threads wait passively. libgomp reads these settings once, in its own
// constructor, from the environment the process started with (a setenv() even from the
// executable's pre-initialization array comes too late: OMP_DISPLAY_ENV=verbose shows the
// spin count unchanged), so the runner sets them and executes itself again, once. A user's
// own OMP_WAIT_POLICY or GOMP_SPINCOUNT is left as it is. The thread count is not changed
// automatically, because results depend on it (oneDNN splits reductions by thread).
// Ranks of an mpirun on one machine share its cores with each other, so they wait passively
// too (they start together: the load of the others is not yet there to be seen).
void choose_openmp_wait_policy(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (std::thread::hardware_concurrency() < 2) return;
  if (local_ranks() < 2 && busy_cores(std::chrono::milliseconds(60)) < 0.5)
    return;  // quiet: libgomp's default
  setenv("OMP_WAIT_POLICY", "passive", 0);
  setenv("GOMP_SPINCOUNT", "0", 0);
  execv("/proc/self/exe", argv);  // returns only on failure: run on with libgomp's default
  unsetenv("OMP_WAIT_POLICY");
  unsetenv("GOMP_SPINCOUNT");
}

namespace {

// Values below 2^-126 (denormals) take a slow path through the CPU's floating-point unit:
// an L1 penalty that drives codes and weights toward zero made sparse_ae_l1 run 13 times
// slower after 1,500 steps (37,000 samples/s fell to 2,600). Flush them to zero, on input
// (DAZ) and on output (FTZ); threads created later inherit the setting from the thread that
// creates them, and TBB's tasks take the floating-point settings of the thread that starts
// them.
void flush_denormals() {
#if defined(__SSE2__)
  _mm_setcsr(_mm_getcsr() | 0x8040);  // FTZ (bit 15) and DAZ (bit 6)
#endif
}

// oneDNN's JIT GEMM points the stack pointer into the heap while it runs, so a signal
// handler that runs on that thread's stack writes its frame over heap memory (oneDNN issue
// 4845: a SIGINT during training crashed weft in free() one time in six). The handler that
// stops training runs on an alternate stack of the main thread (trainer.cpp); every other
// thread blocks SIGINT and SIGTERM, so the kernel never picks one of them for a handler.
// (The default action, which kills the process, writes no frame and is safe anywhere.)
void block_stop_signals() {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &s, nullptr);
}

// The same two settings for TBB's worker threads, as each joins the scheduler.
class WorkerSetup : public tbb::task_scheduler_observer {
 public:
  WorkerSetup() { observe(true); }
  void on_scheduler_entry(bool is_worker) override {
    if (!is_worker) return;
    flush_denormals();
    block_stop_signals();
  }
};

void prepare_threads(int threads) {
  // Never destroyed: TBB may still run workers while static objects are torn down at exit.
  static WorkerSetup* const tbb_workers = new WorkerSetup;
  (void)tbb_workers;
  flush_denormals();
#pragma omp parallel num_threads(threads)
  if (omp_get_thread_num() != 0) {
    flush_denormals();
    block_stop_signals();
  }
}

}  // namespace

int local_ranks() {
  const char* v = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  return v ? std::max(1, std::atoi(v)) : 1;
}

int usable_cores() {
  // The cores this process may run on: mpirun binds each rank to its own, and a container or
  // taskset may allow fewer than the machine has.
  const int machine = std::max(1, int(std::thread::hardware_concurrency()));
  cpu_set_t set;
  CPU_ZERO(&set);
  const int allowed = sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0
                          ? CPU_COUNT(&set)
                          : machine;
  // More ranks than cores (mpirun --oversubscribe binds none): each rank takes its share,
  // or their thread teams together would ask for ranks times the cores.
  const int ranks_here = local_ranks();
  if (ranks_here > 1 && allowed == machine) return std::max(1, allowed / ranks_here);
  return allowed;
}

int apply_threads(const ThreadPolicy& p) {
  static std::unique_ptr<tbb::global_control> tbb_limit;
  int n = p.threads > 0 ? p.threads : usable_cores();
  if (n < 1) n = 1;
  prepare_threads(n);
  tbb_limit =
      std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, n);
  omp_set_num_threads(n);
  return n;
}

}  // namespace weft

// The one place that decides threads. Debian's oneDNN runs each primitive on an OpenMP
// team; weft's executor schedules steps on TBB. Both pools on two cores oversubscribe, so
// the policy (measured with `weft bench`, see README "Threading") is:
//   - oneDNN's OpenMP team gets all `threads` (the big matrix products scale well);
//   - the executor runs steps one after another in plan order by default, because on a
//     few cores running two OpenMP-parallel primitives side by side mostly adds contention;
//     `parallel` runs independent branches side by side on TBB, which pays when a graph
//     has many small independent steps and more cores.
#pragma once

namespace weft {

struct ThreadPolicy {
  int threads = 0;        // 0: every core this process may run on (usable_cores)
  bool parallel = false;  // run independent steps side by side on TBB
};

// Decides OpenMP's wait policy for the process: libgomp's default (spin a while, then sleep)
// on a quiet machine, passive waiting when other processes keep the cores busy; a user's own
// OMP_WAIT_POLICY or GOMP_SPINCOUNT wins. May execute the program again with the policy in
// its environment, so call it first in main().
void choose_openmp_wait_policy(char** argv);

// The cores in this process's CPU affinity (one each for the ranks mpirun binds), shared
// out among the ranks of this machine when mpirun bound none of them.
int usable_cores();
// The ranks mpirun started on this machine (1 without mpirun).
int local_ranks();

// Applies the policy to TBB and OpenMP for the whole process, and flushes denormal floats
// to zero in every thread (they run many times slower); returns the thread count.
int apply_threads(const ThreadPolicy& p);

}  // namespace weft

// Data-parallel training over MPI. `mpirun -np N weft train ...` runs N ranks; each
// computes its shard of the global batch, the gradients (with the losses and logged values)
// are averaged by one allreduce per phase, and every rank applies the same update. weft is
// built with MPI when CMake finds it; without it, and in a process not started by mpirun,
// this is a run of one rank and every call below is free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace weft {

struct Ranks {
  int rank = 0, size = 1;
  bool root() const { return rank == 0; }
};

// Starts MPI when the process was launched by mpirun (its environment says so) and weft
// was built with MPI; a no-op otherwise. Call once, early in main(), before threads start.
void start_ranks(int* argc, char*** argv);
// Ends MPI after a normal run.
void finish_ranks();
// This process's place in the run.
const Ranks& ranks();
// Whether weft was built with MPI.
bool built_with_mpi();

// Sums `n` values elementwise over all ranks, in place, on every rank.
void allreduce_sum(float* values, size_t n);
void allreduce_sum(double* values, size_t n);
// Rank 0's `bytes` at `data`, copied to every rank.
void broadcast(void* data, size_t bytes);
// Checks that every rank holds the same `value` (a hash of what it loaded); returns false
// on every rank if any differs.
bool same_on_all_ranks(uint64_t value);
// Whether `flag` is set on any rank (every rank gets the same answer).
bool on_any_rank(bool flag);
// Ends every rank: an error on one rank must not leave the others waiting in a collective.
// Prints `message` (this rank's error) first.
[[noreturn]] void abort_all_ranks(const std::string& message, int code);

}  // namespace weft

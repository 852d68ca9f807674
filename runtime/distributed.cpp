#include "runtime/distributed.h"

#include <fmt/format.h>

#include <cstdlib>

#include "runtime/error.h"

#ifdef WEFT_MPI
// MPI's C interface only: Open MPI's header would otherwise pull in its deprecated C++
// bindings, which need a library weft does not link.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace weft {

namespace {
Ranks g_ranks;
bool g_started = false;

// mpirun (Open MPI, MPICH, Slurm's PMI) tells the processes it starts who they are.
bool launched_by_mpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"})
    if (std::getenv(v)) return true;
  return false;
}
}  // namespace

bool built_with_mpi() {
#ifdef WEFT_MPI
  return true;
#else
  return false;
#endif
}

void start_ranks(int* argc, char*** argv) {
#ifdef WEFT_MPI
  if (!launched_by_mpirun()) return;
  int provided = 0;
  // Only the main thread calls MPI (between plan runs), so FUNNELED is enough.
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_ranks.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_ranks.size);
  g_started = true;
#else
  (void)argc, (void)argv;
  if (launched_by_mpirun() && std::getenv("OMPI_COMM_WORLD_SIZE") &&
      std::string(std::getenv("OMPI_COMM_WORLD_SIZE")) != "1") {
    fmt::print(stderr,
               "weft: started by mpirun with {} processes, but this weft was built without MPI "
               "(install libopenmpi-dev and build again); each would train alone\n",
               std::getenv("OMPI_COMM_WORLD_SIZE"));
    std::exit(2);
  }
#endif
}

void finish_ranks() {
#ifdef WEFT_MPI
  if (g_started) MPI_Finalize();
  g_started = false;
#endif
}

const Ranks& ranks() { return g_ranks; }

void allreduce_sum(float* values, size_t n) {
#ifdef WEFT_MPI
  if (g_ranks.size > 1)
    MPI_Allreduce(MPI_IN_PLACE, values, int(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
#else
  (void)values, (void)n;
#endif
}

void allreduce_sum(double* values, size_t n) {
#ifdef WEFT_MPI
  if (g_ranks.size > 1)
    MPI_Allreduce(MPI_IN_PLACE, values, int(n), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
#else
  (void)values, (void)n;
#endif
}

void broadcast(void* data, size_t bytes) {
#ifdef WEFT_MPI
  if (g_ranks.size > 1) MPI_Bcast(data, int(bytes), MPI_BYTE, 0, MPI_COMM_WORLD);
#else
  (void)data, (void)bytes;
#endif
}

bool same_on_all_ranks(uint64_t value) {
#ifdef WEFT_MPI
  if (g_ranks.size > 1) {
    uint64_t low = value, high = value;
    MPI_Allreduce(MPI_IN_PLACE, &low, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &high, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    return low == high;
  }
#else
  (void)value;
#endif
  return true;
}

bool on_any_rank(bool flag) {
#ifdef WEFT_MPI
  if (g_ranks.size > 1) {
    int v = flag ? 1 : 0;
    MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return v != 0;
  }
#endif
  return flag;
}

void abort_all_ranks(const std::string& message, int code) {
  fmt::print(stderr, "{}", message);
  std::fflush(stderr);
#ifdef WEFT_MPI
  if (g_started && g_ranks.size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

}  // namespace weft

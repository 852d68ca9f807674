// The suites' main: OpenMP's wait policy is chosen as in the runner (runtime/threading.h), so
// that suites run side by side (ctest -j2) do not stall each other's OpenMP teams.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "runtime/threading.h"

int main(int argc, char** argv) {
  weft::choose_openmp_wait_policy(argv);
  return doctest::Context(argc, argv).run();
}

// Counter-based random numbers: every draw is a hash of (key, counter), so the numbers a
// run uses depend only on its seed and on where it is (step, phase, node), never on how
// it got there. That is what makes a resumed run equal to an uninterrupted one.
#pragma once

#include <cmath>
#include <cstdint>

namespace weft {

inline uint64_t mix64(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline uint64_t stream_key(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0) {
  uint64_t k = mix64(seed + 0x9e3779b97f4a7c15ull);
  k = mix64(k ^ (a + 0x632be59bd9b4e019ull));
  k = mix64(k ^ (b + 0x85157af5ull));
  return mix64(k ^ c);
}

// Uniform in [0, 1) with 53 random bits.
inline double uniform01(uint64_t key, uint64_t i) {
  return double(mix64(key ^ mix64(i + 0x9e3779b97f4a7c15ull)) >> 11) * 0x1.0p-53;
}

// Standard normal by Box-Muller, pairing draws 2i and 2i+1.
inline double normal01(uint64_t key, uint64_t i) {
  double u1 = uniform01(key, 2 * i), u2 = uniform01(key, 2 * i + 1);
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

}  // namespace weft

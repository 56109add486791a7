// Counter-based randomness: every random number is a pure function of a key
// (seed, step, micro-batch, layer, index ...), so results do not depend on the rank
// count or on whether a run was resumed.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

namespace dsmoe {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Hash of a sequence of 64-bit words.
template <typename... Words>
uint64_t hash_key(uint64_t first, Words... rest) {
  uint64_t h = splitmix64(first);
  ((h = splitmix64(h ^ static_cast<uint64_t>(rest))), ...);
  return h;
}

// FNV-1a of a string: a stable key for names (std::hash differs between libraries).
inline uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Uniform in (0, 1), never 0 (53 random bits).
inline double uniform_open(uint64_t bits) { return ((bits >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

// Standard normal from one key (Box-Muller on two derived uniforms).
inline double normal_from_key(uint64_t key) {
  double u1 = uniform_open(splitmix64(key));
  double u2 = uniform_open(splitmix64(key ^ 0xD1B54A32D192ED03ull));
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// Stream of uniforms for sequential uses (e.g. a permutation, initialization).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() { return splitmix64(state_++); }
  double uniform() { return uniform_open(next()); }
  double normal() { return normal_from_key(next()); }
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n) { return static_cast<uint64_t>(uniform() * static_cast<double>(n)) % n; }

 private:
  uint64_t state_;
};

}  // namespace dsmoe

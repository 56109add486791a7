// RoPE's table, shared by the backends (docs/model.md, Network): for each position, cos[half] |
// sin[half] of its angles, computed in double and rounded to T. An entry depends on its position
// only, so a longer table serves every shorter need with the same values.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

namespace dsmoe {

// [positions, head_dim]
template <typename T>
std::vector<T> rope_cos_sin(int positions, int head_dim, double theta) {
  std::vector<T> cs((size_t)positions * head_dim);
  const int half = head_dim / 2;
  for (int pos = 0; pos < positions; ++pos)
    for (int i = 0; i < half; ++i) {
      const double angle = pos * std::pow(theta, -2.0 * i / head_dim);
      cs[(size_t)pos * head_dim + i] = static_cast<T>(std::cos(angle));
      cs[(size_t)pos * head_dim + half + i] = static_cast<T>(std::sin(angle));
    }
  return cs;
}

// The length of the table to build when `needed` positions exceed a cached table's `cached`: at
// least twice as long, so that positions asked for one more at a time (generation) rebuild it
// only logarithmically often.
inline int rope_table_length(int needed, int cached) { return std::max(needed, 2 * cached); }

}  // namespace dsmoe

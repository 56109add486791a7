// How the CUDA backend splits an exact fp32 product [m, n] over k into consecutive slices of k
// (summed in slice order afterwards, so the result stays deterministic). One with a long
// reduction and a small result (the router's weight gradient: N x d summed over every token)
// keeps most of the GPU idle as one call, so it runs as 32 slices; a larger result fills the GPU
// by itself. (Splitting the router's logits [tokens, N] over d as well was measured slower on an
// H100.) The memory model (src/sim) counts the slices' partial results, [slices + 1, m, n] (one
// more for the remainder of k).
#pragma once
#include <cstdint>

namespace dsmoe {

inline int fp32_k_slices(int64_t m, int64_t n, int64_t k) {
  constexpr int kSlices = 32;
  return k / kSlices >= 256 && m * n <= (int64_t{1} << 18) ? kSlices : 1;
}

}  // namespace dsmoe

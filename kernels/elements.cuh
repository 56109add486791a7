// V consecutive elements (V = 1 or 4) of fp32 or bf16 storage, loaded to and stored from floats:
// the row kernels are written once over the storage of each operand (src/backend/ptr.h). A
// 4-element access is one 16-byte (fp32) or 8-byte (bf16) load or store: the caller checks that
// the row length is a multiple of 4 and the pointers are aligned (vectorizable()).
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "backend/ptr.h"

namespace dsmoe::cuda {

using bf16_t = __nv_bfloat16;

template <int V, typename E>
__device__ __forceinline__ void load(float (&x)[V], const E* p) {
  if constexpr (V == 4 && std::is_same_v<E, float>) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
  } else if constexpr (V == 4) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
    const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
    x[0] = lo.x, x[1] = lo.y, x[2] = hi.x, x[3] = hi.y;
  } else {
    for (int i = 0; i < V; ++i) x[i] = static_cast<float>(p[i]);
  }
}

template <int V, typename E>
__device__ __forceinline__ void store(E* p, const float (&x)[V]) {
  if constexpr (V == 4 && std::is_same_v<E, float>) {
    *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
  } else if constexpr (V == 4) {
    const __nv_bfloat162 lo = __floats2bfloat162_rn(x[0], x[1]), hi = __floats2bfloat162_rn(x[2], x[3]);
    *reinterpret_cast<uint2*>(p) =
        make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
  } else {
    for (int i = 0; i < V; ++i) p[i] = static_cast<E>(x[i]);  // bf16: round to nearest even
  }
}

// Whether rows of `cols` elements at these pointers allow 4-element accesses.
template <typename... P>
bool vectorizable(int64_t cols, const P&... ptrs) {
  auto aligned = [](const auto& p) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p.raw());
    return a % (4 * p.element_bytes()) == 0;
  };
  return cols % 4 == 0 && (aligned(ptrs) && ...);
}

// Threads for a block that walks a row of `vecs` vectors: whole warps, at most 256.
inline unsigned row_threads(int vecs) {
  return static_cast<unsigned>(vecs <= 32 ? 32 : vecs >= 256 ? 256 : (vecs + 31) / 32 * 32);
}

// Calls f(q) with q the pointer as it is stored: float* or bf16_t* (const where Ptr's T is), so
// that a launch inside f is instantiated for every storage it can meet.
template <typename T, typename F>
void with_storage(Ptr<T> p, F&& f) {
  using B = std::conditional_t<std::is_const_v<T>, const bf16_t, bf16_t>;
  if (p.is_bf16())
    f(static_cast<B*>(p.raw()));
  else
    f(p.get());
}

}  // namespace dsmoe::cuda

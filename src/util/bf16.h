// bf16 on the host: the upper 16 bits of an fp32, rounded to nearest even (as __float2bfloat16_rn
// rounds on the GPU; NaN stays NaN).
#pragma once
#include <cstdint>
#include <cstring>

namespace dsmoe {

inline uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float bf16_value(uint16_t b) {
  const uint32_t u = uint32_t{b} << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

}  // namespace dsmoe

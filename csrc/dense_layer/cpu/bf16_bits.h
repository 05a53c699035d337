// bfloat16 bits <-> float32, branch-free so that loops over them vectorize: widening is exact;
// narrowing rounds to nearest even like c10::BFloat16's round_to_nearest_even, NaN to the quiet
// NaN 0x7FC0.  Used by the bias + ELU pass (bias_elu_kernel.cpp; the AMX GEMM's epilogue has its
// own 16-lane copy, to_bf16x16 in amx_gemm_kernel.cpp).
#pragma once

#include <cstdint>
#include <cstring>

namespace fastreshuffle {

inline __attribute__((always_inline)) float bf16_bits_to_f32(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline __attribute__((always_inline)) uint16_t f32_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(f != f ? 0x7FC0u : rounded);
}

}  // namespace fastreshuffle

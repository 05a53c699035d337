// elu(x + b) (alpha = 1) for one float32, branch-free so that loops over it vectorize: expm1
// from a range-reduced polynomial, relative error < 2e-7, NaN / +-inf handled like
// torch.nn.functional.elu.  Shared by the bias + ELU pass (bias_elu_kernel.cpp) and the epilogue of
// the CPU dense layer's 1x1 GEMM (dense_layer_kernel.cpp).
#pragma once

#include <cstdint>
#include <cstring>

namespace fastreshuffle {

inline __attribute__((always_inline)) float elu_bias_one(float x, float b) {
  const float v = x + b;
  float vn = v < -87.0f ? -87.0f : v;  // exp(-87) ~ 1.6e-38: expm1 == -1 in float below that
  vn = vn > 0.0f ? 0.0f : vn;           // only v <= 0 uses the exponential
  // v = n * ln2 + r, |r| <= ln2 / 2; n by the 1.5 * 2^23 rounding trick (no float->int cast)
  const float magic = 12582912.0f;
  const float t = vn * 1.44269504088896341f + magic;
  int32_t tb;
  std::memcpy(&tb, &t, 4);
  const int32_t n_int = tb - 0x4B400000;
  const float n = t - magic;
  const float r = (vn - n * 0.693359375f) - n * -2.12194440e-4f;  // Cody-Waite ln2 split
  // expm1(r) by its Taylor series to r^7 (truncation < 1.6e-8 relative on |r| <= 0.347)
  const float q = r + r * r * (0.5f + r * (1.66666672e-1f + r * (4.16666679e-2f +
                  r * (8.33333377e-3f + r * (1.38888892e-3f + r * 1.98412701e-4f)))));
  const int32_t sb = (n_int + 127) << 23;  // 2^n, n in [-126, 0]
  float scale;
  std::memcpy(&scale, &sb, 4);
  const float e = scale * q + (scale - 1.0f);  // expm1(v) = 2^n expm1(r) + (2^n - 1)
  return v > 0.0f ? v : (v != v ? v : e);
}

}  // namespace fastreshuffle

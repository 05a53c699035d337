// CPU kernel for fastreshuffle::bias_elu_(x, bias): x[r, k] = elu(x[r, k] + bias[k]) in place
// (alpha = 1), for the dense layer's CPU path: the 1x1 convolution runs as a plain GEMM
// (torch.mm, no bias) and this one pass adds the bias and applies the ELU.  That replaces
// addmm's bias pass (~20% of the GEMM time measured) and torch's elu_ (2.8 ns / element).
//
// float32: expm1 from a range-reduced polynomial, branch-free so that the compiler vectorizes
// it (SSE2 everywhere, an AVX2 clone, for bf16 also an AVX-512 one, chosen at run time);
// relative error of expm1 < 2e-7, NaN / +-inf handled like torch.nn.functional.elu.
// bfloat16 (after torch's bf16 GEMM, where the AMX kernel does not run): x and the bias widened
// to float32, the same float32 ELU, one rounding back to bf16 (nearest even, as c10::BFloat16;
// NaN -> 0x7FC0); torch's elu_ on bf16 took as long as the GEMM itself.  float64: std::expm1.
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "dense_layer/cpu/bf16_bits.h"
#include "dense_layer/cpu/elu_f32.h"

namespace fastreshuffle {
namespace {

// Element access in float32: float as it is, bf16 (its bits) widened / rounded to nearest even.
inline __attribute__((always_inline)) float to_f32(float v) { return v; }
inline __attribute__((always_inline)) float to_f32(uint16_t h) { return bf16_bits_to_f32(h); }
inline __attribute__((always_inline)) void from_f32(float* p, float v) { *p = v; }
inline __attribute__((always_inline)) void from_f32(uint16_t* p, float v) { *p = f32_to_bf16_bits(v); }

// bias: float32 (for bf16 x widened by the caller, k values)
template <typename T>
inline __attribute__((always_inline)) void bias_elu_rows(T* x, const float* bias, int64_t r0, int64_t r1,
                                                         int64_t k, int64_t ld) {
  for (int64_t r = r0; r < r1; ++r) {
    T* __restrict__ row = x + r * ld;
    const float* __restrict__ b = bias;
    for (int64_t j = 0; j < k; ++j) from_f32(row + j, elu_bias_one(to_f32(row[j]), b[j]));
  }
}

void bias_elu_f32_default(float* x, const float* b, int64_t r0, int64_t r1, int64_t k, int64_t ld) {
  bias_elu_rows(x, b, r0, r1, k, ld);
}

void bias_elu_bf16_default(uint16_t* x, const float* b, int64_t r0, int64_t r1, int64_t k, int64_t ld) {
  bias_elu_rows(x, b, r0, r1, k, ld);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) void bias_elu_f32_avx2(float* x, const float* b, int64_t r0,
                                                       int64_t r1, int64_t k, int64_t ld) {
  bias_elu_rows(x, b, r0, r1, k, ld);
}

__attribute__((target("avx2"))) void bias_elu_bf16_avx2(uint16_t* x, const float* b, int64_t r0,
                                                        int64_t r1, int64_t k, int64_t ld) {
  bias_elu_rows(x, b, r0, r1, k, ld);
}

__attribute__((target("avx512f,avx512bw"))) void bias_elu_bf16_avx512(uint16_t* x, const float* b, int64_t r0,
                                                                    int64_t r1, int64_t k, int64_t ld) {
  bias_elu_rows(x, b, r0, r1, k, ld);
}
#endif

template <typename T>
using RowsFn = void (*)(T*, const float*, int64_t, int64_t, int64_t, int64_t);

RowsFn<float> pick_f32() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (__builtin_cpu_supports("avx2")) return &bias_elu_f32_avx2;
#endif
  return &bias_elu_f32_default;
}

RowsFn<uint16_t> pick_bf16() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return &bias_elu_bf16_avx512;
  if (__builtin_cpu_supports("avx2")) return &bias_elu_bf16_avx2;
#endif
  return &bias_elu_bf16_default;
}

void bias_elu_cpu(const at::Tensor& x, const at::Tensor& bias) {
  TORCH_CHECK(x.device().is_cpu() && bias.device().is_cpu(), "bias_elu_: tensors must be on the CPU");
  TORCH_CHECK(x.dim() == 2, "bias_elu_: expected a 2-D (rows, channels) tensor, got shape ", x.sizes());
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == x.size(1), "bias_elu_: bias has shape ", bias.sizes(),
              " but x has ", x.size(1), " channels (shape ", x.sizes(), ")");
  TORCH_CHECK(x.scalar_type() == bias.scalar_type(), "bias_elu_: bias has dtype ", bias.scalar_type(),
              " but x has dtype ", x.scalar_type());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble || x.scalar_type() == at::kBFloat16,
              "bias_elu_: expected float32, float64 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(x.size(1) <= 1 || x.stride(1) == 1, "bias_elu_: x must have unit stride along its channels, got strides ",
              x.strides());
  const int64_t rows = x.size(0), k = x.size(1);
  if (rows == 0 || k == 0) return;
  const at::Tensor b = bias.contiguous();
  const int64_t ld = x.stride(0);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / k);
  if (x.scalar_type() == at::kFloat) {
    static const RowsFn<float> fn = pick_f32();
    float* px = x.mutable_data_ptr<float>();
    const float* pb = b.const_data_ptr<float>();
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) { fn(px, pb, r0, r1, k, ld); });
  } else if (x.scalar_type() == at::kBFloat16) {
    static const RowsFn<uint16_t> fn = pick_bf16();
    const at::Tensor b32 = b.to(at::kFloat);
    uint16_t* px = reinterpret_cast<uint16_t*>(x.mutable_data_ptr<at::BFloat16>());
    const float* pb = b32.const_data_ptr<float>();
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) { fn(px, pb, r0, r1, k, ld); });
  } else {
    double* px = x.mutable_data_ptr<double>();
    const double* pb = b.const_data_ptr<double>();
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t j = 0; j < k; ++j) {
          const double v = px[r * ld + j] + pb[j];
          px[r * ld + j] = v > 0.0 ? v : std::expm1(v);
        }
    });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(fastreshuffle, CPU, m) {
  m.impl("bias_elu_", &bias_elu_cpu);
}

}  // namespace fastreshuffle

// CPU kernel of the dense layer, float32 (fastreshuffle::dense_layer_cpu_):
//
//     y = conv3x3(elu(conv1x1(x) + b1)) + b3        (padding 1)
//
// read straight from a channel-prefix view x of a channels-last block buffer and written
// straight into a channel slice y of it: no copy of the prefix, no temporary for the result.
//
// Both convolutions run on one register-tile kernel (dense_tile.inc): MR consecutive pixels of
// an image row x NR output channels, accumulated in vector registers over every tap and input
// channel, A broadcast from the pixel rows (channels contiguous, any pixel stride: the prefix
// of a channels-last buffer has pixel stride C, not M), B from weights packed per panel of NR
// columns.  This is the 1x1 GEMM (one tap) with the bias + ELU in its epilogue, writing the
// bottleneck intermediate E into a workspace with one zero column on each side of every image
// row, and then the 3x3 convolution as an implicit GEMM over nine taps of E (a tap is a fixed
// pointer offset; taps whose row falls outside the image are skipped, the zero columns give
// the horizontal zero padding) with the bias in its epilogue, stored into y.
//
// Why: on the machine this was measured on (AMD EPYC, Zen 4, 2 cores) torch.mm (MKL) on the
// strided prefix reached 105-180 GFLOP/s at the network's shapes, oneDNN 170-215 GFLOP/s but
// only on a contiguous copy of the prefix (F.conv2d copies it first), and this kernel
// 175-215 GFLOP/s on the strided prefix itself.  The instruction set (AVX-512 or AVX2 + FMA)
// is chosen at run time; without either, the Python side keeps the torch composition.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "cpu/elu_f32.h"

namespace fastreshuffle {
namespace {

struct Tap {
  int64_t a_off;   // element offset of the tap's input pixel from the output pixel's
  const float* b;  // packed weight panel of the tap: kc rows of NR floats
};

// A convolution over image rows in the tile kernel's terms.
struct RowConv {
  int64_t H, W;
  const float* in;                // input pixel (b, y, x) at in + b*in_sb + y*in_sy + x*in_sx
  int64_t in_sb, in_sy, in_sx;
  int64_t kc;                     // input channels (contiguous) reduced per tap
  int ntaps;                      // 1 (1x1) or 9 (3x3)
  int dy[9], dx[9];
  const float* packed;            // [panels][ntaps][kc][NR], zero-padded columns
  const float* bias;              // [panels * NR], zero-padded
  int64_t ncols;                  // output channels
  int nv;                         // NR = nv * lanes
  int64_t panels;
  float* out;                     // output pixel (b, y, x) at out + b*out_sb + y*out_sy + x*out_sx
  int64_t out_sb, out_sy, out_sx;
  bool elu;
};

#if defined(__x86_64__) && defined(__GNUC__)
#define FR_DENSE_X86 1
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
struct Ops {
  using V = __m512;
  static constexpr int kW = 16;
  static constexpr int kMaxNV = 4;
  // 32 zmm registers: MR * NV accumulators + NV weight vectors + a broadcast
  static constexpr int mr_for(int nv) { return nv == 1 ? 14 : nv == 2 ? 14 : nv == 3 ? 8 : 6; }
  static inline V zero() { return _mm512_setzero_ps(); }
  static inline V load(const float* p) { return _mm512_loadu_ps(p); }
  static inline V bcast(const float* p) { return _mm512_set1_ps(*p); }
  static inline V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static inline void store(float* p, V v) { _mm512_store_ps(p, v); }
};
#include "cpu/dense_tile.inc"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
struct Ops {
  using V = __m256;
  static constexpr int kW = 8;
  static constexpr int kMaxNV = 3;
  // 16 ymm registers
  static constexpr int mr_for(int nv) { return nv == 1 ? 12 : nv == 2 ? 6 : 4; }
  static inline V zero() { return _mm256_setzero_ps(); }
  static inline V load(const float* p) { return _mm256_loadu_ps(p); }
  static inline V bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static inline V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static inline void store(float* p, V v) { _mm256_store_ps(p, v); }
};
#include "cpu/dense_tile.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif

enum Isa : int64_t { kNone = 0, kAvx2 = 1, kAvx512 = 2 };

bool isa_supported(int64_t isa) {
#ifdef FR_DENSE_X86
  if (isa == kAvx512) return __builtin_cpu_supports("avx512f");
  if (isa == kAvx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return false;
}

int64_t best_isa() {
  static const int64_t best = isa_supported(kAvx512) ? kAvx512 : isa_supported(kAvx2) ? kAvx2 : kNone;
  return best;
}

int lanes(int64_t isa) { return isa == kAvx512 ? 16 : 8; }
int max_nv(int64_t isa) { return isa == kAvx512 ? 4 : 3; }

// Vectors per panel for `ncols` output channels: as wide as the registers allow, but no wider
// than the channels need.
int pick_nv(int64_t isa, int64_t ncols) {
  const int64_t w = lanes(isa);
  return static_cast<int>(std::min<int64_t>(max_nv(isa), (ncols + w - 1) / w));
}

// w: [ncols, kc, kh, kw] (a conv weight) -> [panels][taps][kc][NR]; column n of tap t row p is
// w[n, p, t / kw, t % kw]; columns past ncols are zero.
at::Tensor pack_weight(const at::Tensor& w, int nr) {
  const int64_t ncols = w.size(0), kc = w.size(1), ntaps = w.size(2) * w.size(3);
  const int64_t panels = (ncols + nr - 1) / nr;
  at::Tensor wc = w.contiguous();
  at::Tensor p = at::zeros({panels, ntaps, kc, nr}, w.options());
  const float* src = wc.const_data_ptr<float>();
  float* dst = p.mutable_data_ptr<float>();
  for (int64_t n = 0; n < ncols; ++n) {
    const int64_t j = n / nr, col = n % nr;
    for (int64_t c = 0; c < kc; ++c)
      for (int64_t t = 0; t < ntaps; ++t)
        dst[((j * ntaps + t) * kc + c) * nr + col] = src[(n * kc + c) * ntaps + t];
  }
  return p;
}

at::Tensor pad_bias(const at::Tensor& b, int64_t panels, int nr) {
  at::Tensor p = at::zeros({panels * nr}, b.options());
  p.narrow(0, 0, b.size(0)).copy_(b);
  return p;
}

void run(const RowConv& rc, int64_t isa, int64_t batch) {
  at::parallel_for(0, batch * rc.H, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
#ifdef FR_DENSE_X86
      if (isa == kAvx512) avx512::conv_row(rc, r / rc.H, r % rc.H);
      else avx2::conv_row(rc, r / rc.H, r % rc.H);
#endif
    }
  });
}

void check_pixels(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, "dense_layer_cpu_: ", name, " must be 4-D (B, C, H, W), got shape ", t.sizes());
  TORCH_CHECK(t.device().is_cpu(), "dense_layer_cpu_: ", name, " must be on the CPU, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, "dense_layer_cpu_: ", name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.size(1) <= 1 || t.stride(1) == 1, "dense_layer_cpu_: ", name,
              " must have unit stride along its channels (a channels-last buffer or a channel slice "
              "of one), got strides ", t.strides());
}

void dense_layer_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w1, const at::Tensor& b1,
                     const at::Tensor& w3, const at::Tensor& b3, int64_t isa) {
  check_pixels(x, "x");
  check_pixels(y, "y");
  const int64_t B = x.size(0), M = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(w1.dim() == 4 && w1.size(1) == M && w1.size(2) == 1 && w1.size(3) == 1,
              "dense_layer_cpu_: w1 must have shape [K, ", M, ", 1, 1], got ", w1.sizes());
  const int64_t K = w1.size(0);
  TORCH_CHECK(w3.dim() == 4 && w3.size(1) == K && w3.size(2) == 3 && w3.size(3) == 3,
              "dense_layer_cpu_: w3 must have shape [N, ", K, ", 3, 3], got ", w3.sizes());
  const int64_t N = w3.size(0);
  TORCH_CHECK(b1.dim() == 1 && b1.size(0) == K, "dense_layer_cpu_: b1 must have shape [", K, "], got ", b1.sizes());
  TORCH_CHECK(b3.dim() == 1 && b3.size(0) == N, "dense_layer_cpu_: b3 must have shape [", N, "], got ", b3.sizes());
  TORCH_CHECK(y.size(0) == B && y.size(1) == N && y.size(2) == H && y.size(3) == W,
              "dense_layer_cpu_: y must have shape [", B, ", ", N, ", ", H, ", ", W, "], got ", y.sizes());
  for (const at::Tensor* t : {&w1, &b1, &w3, &b3}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat,
                "dense_layer_cpu_: weights must be float32 CPU tensors, got ", t->scalar_type(), " on ", t->device());
  }
  TORCH_CHECK(K > 0 && N > 0 && M > 0, "dense_layer_cpu_: empty weights (M=", M, ", K=", K, ", N=", N, ")");
  if (isa == kNone) isa = best_isa();
  TORCH_CHECK(isa == kAvx2 || isa == kAvx512, "dense_layer_cpu_: isa must be 0 (best), 1 (AVX2) or 2 (AVX-512), got ", isa,
              best_isa() == kNone ? " (this CPU has neither)" : "");
  TORCH_CHECK(isa_supported(isa), "dense_layer_cpu_: this CPU does not support ", isa == kAvx512 ? "AVX-512" : "AVX2 + FMA");
  if (B == 0 || H == 0 || W == 0) return;

  // E: [B, H, W + 2, K], a zero column on each side of every row (the 3x3 conv's padding).
  at::Tensor e = at::empty({B, H, W + 2, K}, x.options());
  {
    float* pe = e.mutable_data_ptr<float>();
    at::parallel_for(0, B * H, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        std::fill_n(pe + r * (W + 2) * K, K, 0.0f);
        std::fill_n(pe + (r * (W + 2) + W + 1) * K, K, 0.0f);
      }
    });
  }

  const int nv1 = pick_nv(isa, K), nr1 = nv1 * lanes(isa);
  const at::Tensor p1 = pack_weight(w1, nr1);
  const at::Tensor q1 = pad_bias(b1, p1.size(0), nr1);
  RowConv c1{};
  c1.H = H; c1.W = W;
  c1.in = x.const_data_ptr<float>();
  c1.in_sb = x.stride(0); c1.in_sy = x.stride(2); c1.in_sx = x.stride(3);
  c1.kc = M; c1.ntaps = 1; c1.dy[0] = 0; c1.dx[0] = 0;
  c1.packed = p1.const_data_ptr<float>(); c1.bias = q1.const_data_ptr<float>();
  c1.ncols = K; c1.nv = nv1; c1.panels = p1.size(0);
  c1.out = e.mutable_data_ptr<float>() + K;  // column 1 of row 0
  c1.out_sb = H * (W + 2) * K; c1.out_sy = (W + 2) * K; c1.out_sx = K;
  c1.elu = true;
  run(c1, isa, B);

  const int nv3 = pick_nv(isa, N), nr3 = nv3 * lanes(isa);
  const at::Tensor p3 = pack_weight(w3, nr3);
  const at::Tensor q3 = pad_bias(b3, p3.size(0), nr3);
  RowConv c3{};
  c3.H = H; c3.W = W;
  c3.in = c1.out;
  c3.in_sb = c1.out_sb; c3.in_sy = c1.out_sy; c3.in_sx = K;
  c3.kc = K; c3.ntaps = 9;
  for (int t = 0; t < 9; ++t) { c3.dy[t] = t / 3 - 1; c3.dx[t] = t % 3 - 1; }
  c3.packed = p3.const_data_ptr<float>(); c3.bias = q3.const_data_ptr<float>();
  c3.ncols = N; c3.nv = nv3; c3.panels = p3.size(0);
  c3.out = y.mutable_data_ptr<float>();
  c3.out_sb = y.stride(0); c3.out_sy = y.stride(2); c3.out_sx = y.stride(3);
  c3.elu = false;
  run(c3, isa, B);
}

}  // namespace

int64_t dense_cpu_isa() { return best_isa(); }

TORCH_LIBRARY_IMPL(fastreshuffle, CPU, m) {
  m.impl("dense_layer_cpu_", &dense_layer_cpu);
}

}  // namespace fastreshuffle

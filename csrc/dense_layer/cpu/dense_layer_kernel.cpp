// CPU kernel of the dense layer, float32 (fastreshuffle::dense_layer_cpu_):
//
//     y = conv3x3(elu(conv1x1(x) + b1)) + b3        (padding 1)
//
// read straight from a channel-prefix view x of a channels-last block buffer and written
// straight into a channel slice y of it: no copy of the prefix, no temporary for the result.
//
// Everything runs on one register-tile kernel (dense_tile.inc): MR consecutive pixels x NR
// output channels, accumulated in vector registers over every tap and input channel, A
// broadcast from pixel rows (channels contiguous, any pixel stride: the prefix of a
// channels-last buffer has pixel stride C, not M), B from weights packed per panel of NR
// columns.  At the FMA peak of this machine in its inner loop (4 loads, 6 broadcasts, 24 FMAs).
//
//   1x1:  the GEMM straight from the strided prefix, bias + ELU in its epilogue, into the
//         bottleneck intermediate E (rows with a zero column on each side: the 3x3 padding).
//   3x3:  Winograd F(2x2, 3x3) (algo 2/3, the default): per strip of 2 output rows, the input
//         transform V = B^T d B of the 4x4 patches (vectorized over channels), sixteen GEMMs
//         V_xi U_xi on the same tiles (U = G g G^T, computed in float64), the output transform
//         + bias stored into y: 2.25x fewer multiply-adds than the direct 3x3, which stays as
//         algo 1 (an implicit GEMM over nine taps of E).
//   E:    whole (algo 3) when it fits the last-level cache, else (algo 2) computed row by row
//         into a four-row ring per task just before the strips that read it, so it never goes
//         to memory (each task recomputes the two rows above its first strip).
//
// Why: on the machine this was measured on (AMD EPYC, Zen 4, 2 cores) torch.mm (MKL) on the
// strided prefix reached 105-180 GFLOP/s at the network's shapes, oneDNN 170-215 GFLOP/s but
// only on a contiguous copy of the prefix (F.conv2d copies it first), and these tiles
// 175-215 GFLOP/s on the strided prefix itself.  The instruction set (AVX-512 or AVX2 + FMA)
// is chosen at run time; without either, the Python side keeps the torch composition.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <utility>

#include "dense_layer/cpu/elu_f32.h"

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

// The 3x3 convolution by Winograd F(2x2, 3x3) over strips of 2 output rows (dense_tile.inc).
struct WinoStrip {
  int64_t H, W, K, N;
  const float* packed;            // U = G g G^T: [panels][16][K][NR], zero-padded columns
  int nv;
  int64_t panels;
  const float* bias;              // [N]
  const float* zeros;             // >= max(4 K, panels NR) zeros
  float* out;
  int64_t out_sb, out_sy, out_sx;
};

// Stride (floats) between the 16 planes of a Winograd scratch buffer of `n` floats per plane:
// an odd number of 64-byte lines, so the planes start in different L1 sets (at a multiple of
// 4 KiB apart, 16 streams share one set and thrash it: input transforms measured ~3x slower).
constexpr int64_t winograd_plane(int64_t n) { return (((n + 15) / 16) | 1) * 16; }

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
  static inline void storeu(float* p, V v) { _mm512_storeu_ps(p, v); }
};
#include "dense_layer/cpu/dense_tile.inc"
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
  static inline void storeu(float* p, V v) { _mm256_storeu_ps(p, v); }
};
#include "dense_layer/cpu/dense_tile.inc"
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

// Vectors per panel for `ncols` output channels: the fewest padded columns, then the widest
// (e.g. AVX2, 64 channels: 4 panels of 2 vectors, not 3 of 3 with 8 columns wasted).
int pick_nv(int64_t isa, int64_t ncols) {
  const int64_t w = lanes(isa);
  int best = 1;
  int64_t best_cols = (ncols + w - 1) / w * w;
  for (int nv = 2; nv <= max_nv(isa); ++nv) {
    const int64_t nr = nv * w, cols = (ncols + nr - 1) / nr * nr;
    if (cols <= best_cols) { best = nv; best_cols = cols; }
  }
  return best;
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

// Winograd F(2x2, 3x3) weights U[xi = 4i + j] = (G g G^T)[i][j], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
// computed in double, packed like a 16-tap weight: [panels][16][kc][NR].
at::Tensor pack_winograd_weight(const at::Tensor& w, int nr) {
  const int64_t ncols = w.size(0), kc = w.size(1);
  const int64_t panels = (ncols + nr - 1) / nr;
  at::Tensor wc = w.contiguous();
  at::Tensor p = at::zeros({panels, 16, kc, nr}, w.options());
  const float* src = wc.const_data_ptr<float>();
  float* dst = p.mutable_data_ptr<float>();
  static const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  for (int64_t n = 0; n < ncols; ++n) {
    const int64_t j = n / nr, col = n % nr;
    for (int64_t c = 0; c < kc; ++c) {
      const float* g = src + (n * kc + c) * 9;
      double gt[4][3];  // G g
      for (int i = 0; i < 4; ++i)
        for (int q = 0; q < 3; ++q) gt[i][q] = G[i][0] * g[q] + G[i][1] * g[3 + q] + G[i][2] * g[6 + q];
      for (int i = 0; i < 4; ++i)
        for (int k = 0; k < 4; ++k) {
          const double u = gt[i][0] * G[k][0] + gt[i][1] * G[k][1] + gt[i][2] * G[k][2];
          dst[((j * 16 + 4 * i + k) * kc + c) * nr + col] = static_cast<float>(u);
        }
    }
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

// The zero columns of one E row of wp columns (image column x at E column x + 1).
void zero_pad_columns(float* row, int64_t W, int64_t wp, int64_t K) {
  std::fill_n(row, K, 0.0f);
  std::fill_n(row + (W + 1) * K, (wp - W - 1) * K, 0.0f);
}

// Tiles per Winograd strip chunk: the transformed input (16 T K floats) near 768 KiB (L2).
int64_t winograd_tcap(int64_t W, int64_t K) {
  const int64_t tx_all = (W + 1) / 2;
  const int64_t tmax = std::max<int64_t>(8, 12288 / K);
  const int64_t chunks = (tx_all + tmax - 1) / tmax;
  return (tx_all + chunks - 1) / chunks;
}

struct WinoScratch {
  std::unique_ptr<float[]> V, Mb;
  WinoScratch(int64_t tcap, int64_t K, int64_t N)
      : V(new float[16 * winograd_plane(tcap * K)]), Mb(new float[16 * winograd_plane(tcap * N)]) {}
};

// Winograd over the strips of a whole E ([B, H, wp, K], computed before).
void run_winograd(const WinoStrip& ws, const float* e, int64_t wp, int64_t isa, int64_t batch) {
  const int64_t tx_all = (ws.W + 1) / 2, ty_all = (ws.H + 1) / 2;
  const int64_t tcap = winograd_tcap(ws.W, ws.K);
  at::parallel_for(0, batch * ty_all, 1, [&](int64_t s0, int64_t s1) {
    WinoScratch sc(tcap, ws.K, ws.N);
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t b = s / ty_all, ty = s % ty_all;
      const float* rows[4];
      for (int i = 0; i < 4; ++i) {
        const int64_t r = 2 * ty - 1 + i;
        rows[i] = (r >= 0 && r < ws.H) ? e + (b * ws.H + r) * wp * ws.K : nullptr;
      }
      for (int64_t tx0 = 0; tx0 < tx_all; tx0 += tcap) {
        const int64_t T = std::min(tcap, tx_all - tx0);
#ifdef FR_DENSE_X86
        if (isa == kAvx512) avx512::winograd_strip(ws, rows, b, ty, tx0, T, sc.V.get(), sc.Mb.get());
        else avx2::winograd_strip(ws, rows, b, ty, tx0, T, sc.V.get(), sc.Mb.get());
#endif
      }
    }
  });
}

// 1x1 and Winograd per strip, E only in a four-row ring per task (fused_strips).
void run_fused(const RowConv& c1, const WinoStrip& ws, int64_t wp, int64_t isa, int64_t batch) {
  const int64_t ty_all = (ws.H + 1) / 2, K = ws.K;
  const int64_t tcap = winograd_tcap(ws.W, K);
  // >= 4 strips per task: a task recomputes the two E rows above its first strip
  at::parallel_for(0, batch * ty_all, 4, [&](int64_t s0, int64_t s1) {
    WinoScratch sc(tcap, K, ws.N);
    std::unique_ptr<float[]> ring(new float[4 * wp * K]);
    for (int i = 0; i < 4; ++i) {
      float* row = ring.get() + i * wp * K;
      zero_pad_columns(row, ws.W, wp, K);
    }
#ifdef FR_DENSE_X86
    if (isa == kAvx512) avx512::fused_strips(c1, ws, wp, s0, s1, tcap, ring.get(), sc.V.get(), sc.Mb.get());
    else avx2::fused_strips(c1, ws, wp, s0, s1, tcap, ring.get(), sc.V.get(), sc.Mb.get());
#endif
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
                     const at::Tensor& w3, const at::Tensor& b3, int64_t isa, int64_t algo) {
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
  TORCH_CHECK(algo >= 0 && algo <= 3, "dense_layer_cpu_: algo must be 0 (auto), 1 (direct 3x3), 2 (Winograd, "
              "fused row ring) or 3 (Winograd, whole intermediate), got ", algo);
  if (B == 0 || H == 0 || W == 0) return;
  if (algo == 0) {
    // Winograd; E in a ring unless it is small enough to stay in the last-level cache anyway
    // (then computing it whole avoids the ring's halo rows).
    algo = B * H * W * K * 4 > (8 << 20) ? 2 : 3;
  }

  // E: image column x at E column x + 1; column 0 and columns W + 1 .. Wp - 1 are zeros (the
  // 3x3 conv's padding; Winograd tiles of an odd width read one column more).
  const int64_t Wp = 2 * ((W + 1) / 2) + 2;
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
  c1.out_sx = K;
  c1.elu = true;

  const int nv3 = pick_nv(isa, N), nr3 = nv3 * lanes(isa);
  const at::Tensor bias3 = b3.contiguous();
  const at::Tensor u = algo >= 2 ? pack_winograd_weight(w3, nr3) : pack_weight(w3, nr3);
  const at::Tensor zeros = at::zeros({std::max<int64_t>(4 * K, u.size(0) * nr3)}, x.options());
  WinoStrip ws{};
  ws.H = H; ws.W = W; ws.K = K; ws.N = N;
  ws.packed = u.const_data_ptr<float>(); ws.nv = nv3; ws.panels = u.size(0);
  ws.bias = bias3.const_data_ptr<float>(); ws.zeros = zeros.const_data_ptr<float>();
  ws.out = y.mutable_data_ptr<float>();
  ws.out_sb = y.stride(0); ws.out_sy = y.stride(2); ws.out_sx = y.stride(3);
  if (algo == 2) {
    run_fused(c1, ws, Wp, isa, B);
    return;
  }

  // Whole E: [B, H, Wp, K].
  at::Tensor e = at::empty({B, H, Wp, K}, x.options());
  float* pe = e.mutable_data_ptr<float>();
  at::parallel_for(0, B * H, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      zero_pad_columns(pe + r * Wp * K, W, Wp, K);
    }
  });
  c1.out = pe + K;  // column 1 of row 0
  c1.out_sb = H * Wp * K; c1.out_sy = Wp * K;
  run(c1, isa, B);
  if (algo == 3) {
    run_winograd(ws, pe, Wp, isa, B);
    return;
  }
  const at::Tensor q3 = pad_bias(b3, u.size(0), nr3);
  RowConv c3{};
  c3.H = H; c3.W = W;
  c3.in = c1.out;
  c3.in_sb = c1.out_sb; c3.in_sy = c1.out_sy; c3.in_sx = K;
  c3.kc = K; c3.ntaps = 9;
  for (int t = 0; t < 9; ++t) { c3.dy[t] = t / 3 - 1; c3.dx[t] = t % 3 - 1; }
  c3.packed = u.const_data_ptr<float>(); c3.bias = q3.const_data_ptr<float>();
  c3.ncols = N; c3.nv = nv3; c3.panels = u.size(0);
  c3.out = ws.out;
  c3.out_sb = ws.out_sb; c3.out_sy = ws.out_sy; c3.out_sx = ws.out_sx;
  c3.elu = false;
  run(c3, isa, B);
}

int64_t dense_cpu_isa() { return best_isa(); }

}  // namespace

TORCH_LIBRARY_IMPL(fastreshuffle, CPU, m) {
  m.impl("dense_layer_cpu_", &dense_layer_cpu);
}

// dense_cpu_isa() takes no tensor to dispatch on: CompositeImplicitAutograd, as the kernel of
// a def() with a function is registered.
TORCH_LIBRARY_IMPL(fastreshuffle, CompositeImplicitAutograd, m) {
  m.impl("dense_cpu_isa", &dense_cpu_isa);
}

}  // namespace fastreshuffle

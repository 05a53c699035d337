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
#include <cstring>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "dense_layer/cpu/elu_f32.h"

namespace fastreshuffle {
namespace {

// Element types: float32, or bfloat16 held as its 16 bits (uint16_t) in the vector kernels.
using bf16_t = uint16_t;

// Rows of a packed weight panel: the reduced channels rounded up to whole dot steps of kK.
constexpr int64_t padded_rows(int64_t kc, int kK) { return (kc + kK - 1) / kK * kK; }

template <class T>
struct Tap {
  int64_t a_off;   // element offset of the tap's input pixel from the output pixel's
  const T* b;      // packed weight panel of the tap: padded_rows(kc) rows of NR columns
};

// A convolution over image rows in the tile kernel's terms.
template <class T>
struct RowConv {
  int64_t H, W;
  const T* in;                    // input pixel (b, y, x) at in + b*in_sb + y*in_sy + x*in_sx
  int64_t in_sb, in_sy, in_sx;
  int64_t kc;                     // input channels (contiguous) reduced per tap
  int ntaps;                      // 1 (1x1) or 9 (3x3)
  int dy[9], dx[9];
  const T* packed;                // [panels][ntaps][padded rows][NR] (see dense_tile.inc), zero-padded
  const float* bias;              // [panels * NR], zero-padded
  int64_t ncols;                  // output channels
  int nv;                         // NR = nv * lanes
  int64_t panels;
  T* out;                         // output pixel (b, y, x) at out + b*out_sb + y*out_sy + x*out_sx
  int64_t out_sb, out_sy, out_sx;
  bool elu;
};

// The 3x3 convolution by Winograd F(2x2, 3x3) over strips of 2 output rows (dense_tile.inc).
template <class T>
struct WinoStrip {
  int64_t H, W, K, N;
  const T* packed;                // U = G g G^T: [panels][16][padded rows of K][NR], zero-padded
  int nv;
  int64_t panels;
  const float* bias;              // [N]
  const T* zero_row;              // >= 4 K zeros (a row of E outside the image)
  T* out;
  int64_t out_sb, out_sy, out_sx;
};

// Stride (elements of `size` bytes) between the 16 planes of a Winograd scratch buffer of `n`
// elements per plane: an odd number of 64-byte lines, so the planes start in different L1 sets
// (at a multiple of 4 KiB apart, 16 streams share one set and thrash it: input transforms
// measured ~3x slower).
constexpr int64_t winograd_plane(int64_t n, int64_t size) {
  return (((n * size + 63) / 64) | 1) * (64 / size);
}

// bfloat16 bits of x, rounded to nearest even (NaN stays NaN), as torch rounds.
inline bf16_t bf16_round(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<bf16_t>(u >> 16);
}

inline float bf16_float(bf16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define FR_DENSE_X86 1
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
struct Ops {
  using T = float;
  using V = __m512;
  using B = __m512;
  static constexpr int kW = 16;
  static constexpr int kK = 1;
  static constexpr int kMaxNV = 4;
  // 32 zmm registers: MR * NV accumulators + NV weight vectors + a broadcast
  static constexpr int mr_for(int nv) { return nv == 1 ? 14 : nv == 2 ? 14 : nv == 3 ? 8 : 6; }
  static inline V zero() { return _mm512_setzero_ps(); }
  static inline V load(const float* p) { return _mm512_loadu_ps(p); }
  static inline void store(float* p, V v) { _mm512_store_ps(p, v); }
  static inline void storeu(float* p, V v) { _mm512_storeu_ps(p, v); }
  static inline void store_n(float* p, V v, int n) { _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v); }
  static inline B loadb(const float* p) { return _mm512_loadu_ps(p); }
  static inline B bcast(const float* p) { return _mm512_set1_ps(*p); }
  static inline B bcast1(const float* p) { return _mm512_set1_ps(*p); }
  static inline V dot(B a, B b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static inline V lde(const float* p) { return _mm512_loadu_ps(p); }
  static inline float lde1(const float* p) { return *p; }
  static inline void ste(float* p, V v) { _mm512_storeu_ps(p, v); }
  static inline void ste1(float* p, float x) { *p = x; }
  static inline void store_row(float* __restrict__ o, const float* __restrict__ r, int n) {
    for (int i = 0; i < n; ++i) o[i] = r[i];
  }
};
#include "dense_layer/cpu/dense_tile.inc"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
struct Ops {
  using T = float;
  using V = __m256;
  using B = __m256;
  static constexpr int kW = 8;
  static constexpr int kK = 1;
  static constexpr int kMaxNV = 3;
  // 16 ymm registers
  static constexpr int mr_for(int nv) { return nv == 1 ? 12 : nv == 2 ? 6 : 4; }
  static inline V zero() { return _mm256_setzero_ps(); }
  static inline V load(const float* p) { return _mm256_loadu_ps(p); }
  static inline void store(float* p, V v) { _mm256_store_ps(p, v); }
  static inline void storeu(float* p, V v) { _mm256_storeu_ps(p, v); }
  static inline void store_n(float* p, V v, int n) {
    _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), v);
  }
  static inline B loadb(const float* p) { return _mm256_loadu_ps(p); }
  static inline B bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static inline B bcast1(const float* p) { return _mm256_broadcast_ss(p); }
  static inline V dot(B a, B b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static inline V lde(const float* p) { return _mm256_loadu_ps(p); }
  static inline float lde1(const float* p) { return *p; }
  static inline void ste(float* p, V v) { _mm256_storeu_ps(p, v); }
  static inline void ste1(float* p, float x) { *p = x; }
  static inline void store_row(float* __restrict__ o, const float* __restrict__ r, int n) {
    for (int i = 0; i < n; ++i) o[i] = r[i];
  }
};
#include "dense_layer/cpu/dense_tile.inc"
}  // namespace avx2
#pragma GCC pop_options

// bfloat16 activations and weights, float32 accumulation: vdpbf16ps multiplies a pair of bf16
// channels per lane and adds both products to a float32 accumulator (twice the multiply-adds of
// an FMA per instruction).  Rounding: E, the Winograd-transformed input V and weights U and the
// output are rounded to bf16 (nearest even); the products M and all sums stay float32.  Like
// every AVX512-BF16 instruction, vdpbf16ps / vcvtneps2bf16 treat denormal inputs as zero.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16")
namespace avx512bf16 {
struct Ops {
  using T = bf16_t;
  using V = __m512;
  using B = __m512bh;
  static constexpr int kW = 16;
  static constexpr int kK = 2;
  static constexpr int kMaxNV = 4;
  static constexpr int mr_for(int nv) { return nv == 1 ? 14 : nv == 2 ? 14 : nv == 3 ? 8 : 6; }
  static inline V zero() { return _mm512_setzero_ps(); }
  static inline V load(const float* p) { return _mm512_loadu_ps(p); }
  static inline void store(float* p, V v) { _mm512_store_ps(p, v); }
  static inline void storeu(float* p, V v) { _mm512_storeu_ps(p, v); }
  static inline void store_n(float* p, V v, int n) { _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v); }
  static inline B loadb(const bf16_t* p) { return (B)_mm512_loadu_si512(p); }
  static inline B bcast(const bf16_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return (B)_mm512_set1_epi32(static_cast<int>(v));
  }
  static inline B bcast1(const bf16_t* p) { return (B)_mm512_set1_epi32(*p); }
  static inline V dot(B a, B b, V c) { return _mm512_dpbf16_ps(c, a, b); }
  static inline V lde(const bf16_t* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static inline float lde1(const bf16_t* p) { return bf16_float(*p); }
  static inline void ste(bf16_t* p, V v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v));
  }
  static inline void ste1(bf16_t* p, float x) { *p = bf16_round(x); }
  static inline void store_row(float* __restrict__ o, const float* __restrict__ r, int n) {
    for (int i = 0; i < n; ++i) o[i] = r[i];
  }
  static inline void store_row(bf16_t* o, const float* r, int n) {
    int i = 0;
    for (; i + kW <= n; i += kW) ste(o + i, _mm512_loadu_ps(r + i));
    if (i < n) {
      const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
      const __m256i h = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, r + i));
      _mm256_mask_storeu_epi16(o + i, m, h);
    }
  }
};
#include "dense_layer/cpu/dense_tile.inc"
}  // namespace avx512bf16
#pragma GCC pop_options

// The same with 256-bit vectors (8 lanes), for layers of at most 8 output channels (the `small`
// preset's last block: N = 8), where a 16-lane panel would be half padding.  On Zen 4, which
// executes a 512-bit vdpbf16ps as two 256-bit halves, it does the same useful work per cycle.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16")
namespace avx512bf16_ymm {
struct Ops {
  using T = bf16_t;
  using V = __m256;
  using B = __m256bh;
  static constexpr int kW = 8;
  static constexpr int kK = 2;
  static constexpr int kMaxNV = 4;
  // 32 ymm registers with AVX-512VL
  static constexpr int mr_for(int nv) { return nv == 1 ? 14 : nv == 2 ? 14 : nv == 3 ? 8 : 6; }
  static inline V zero() { return _mm256_setzero_ps(); }
  static inline V load(const float* p) { return _mm256_loadu_ps(p); }
  static inline void store(float* p, V v) { _mm256_store_ps(p, v); }
  static inline void storeu(float* p, V v) { _mm256_storeu_ps(p, v); }
  static inline void store_n(float* p, V v, int n) { _mm256_mask_storeu_ps(p, static_cast<__mmask8>((1u << n) - 1), v); }
  static inline B loadb(const bf16_t* p) { return (B)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static inline B bcast(const bf16_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return (B)_mm256_set1_epi32(static_cast<int>(v));
  }
  static inline B bcast1(const bf16_t* p) { return (B)_mm256_set1_epi32(*p); }
  static inline V dot(B a, B b, V c) { return _mm256_dpbf16_ps(c, a, b); }
  static inline V lde(const bf16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static inline float lde1(const bf16_t* p) { return bf16_float(*p); }
  static inline void ste(bf16_t* p, V v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), (__m128i)_mm256_cvtneps_pbh(v));
  }
  static inline void ste1(bf16_t* p, float x) { *p = bf16_round(x); }
  static inline void store_row(float* __restrict__ o, const float* __restrict__ r, int n) {
    for (int i = 0; i < n; ++i) o[i] = r[i];
  }
  static inline void store_row(bf16_t* o, const float* r, int n) {
    int i = 0;
    for (; i + kW <= n; i += kW) ste(o + i, _mm256_loadu_ps(r + i));
    if (i < n) {
      const __mmask8 m = static_cast<__mmask8>((1u << (n - i)) - 1);
      const __m128i h = (__m128i)_mm256_cvtneps_pbh(_mm256_maskz_loadu_ps(m, r + i));
      _mm_mask_storeu_epi16(o + i, m, h);
    }
  }
};
#include "dense_layer/cpu/dense_tile.inc"
}  // namespace avx512bf16_ymm
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

// The bfloat16 kernel: AVX-512 with BF16 (vdpbf16ps), BW and VL (16-bit masked stores).
bool bf16_supported() {
#ifdef FR_DENSE_X86
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  return ok;
#else
  return false;
#endif
}

int64_t best_isa() {
  static const int64_t best = isa_supported(kAvx512) ? kAvx512 : isa_supported(kAvx2) ? kAvx2 : kNone;
  return best;
}

// Vectors per panel for `ncols` output channels, with vectors of `w` lanes and at most `max_nv`
// per panel: the fewest padded columns, then the widest (e.g. AVX2, 64 channels: 4 panels of 2
// vectors, not 3 of 3 with 8 columns wasted).
int pick_nv(int w, int max_nv, int64_t ncols) {
  int best = 1;
  int64_t best_cols = (ncols + w - 1) / w * w;
  for (int nv = 2; nv <= max_nv; ++nv) {
    const int64_t nr = nv * w, cols = (ncols + nr - 1) / nr * nr;
    if (cols <= best_cols) { best = nv; best_cols = cols; }
  }
  return best;
}

// Offset of weight row p, column n in a packed tap block of NR columns, rows grouped by kk
// (the layout dense_tile.inc reads).
inline int64_t packed_index(int64_t p, int64_t n, int64_t nr, int kk) { return ((p / kk) * nr + n) * kk + p % kk; }

// w: [ncols, kc, kh, kw] (a conv weight) -> [panels][taps][padded_rows(kc, kk) * NR] in `dtype`;
// row p, column n of tap t is w[n, p, t / kw, t % kw]; padded rows and columns are zero.
at::Tensor pack_weight(const at::Tensor& w, int nr, int kk, at::ScalarType dtype) {
  const int64_t ncols = w.size(0), kc = w.size(1), ntaps = w.size(2) * w.size(3);
  const int64_t panels = (ncols + nr - 1) / nr, kp = padded_rows(kc, kk);
  at::Tensor wc = w.to(at::kFloat).contiguous();
  at::Tensor p = at::zeros({panels, ntaps, kp * nr}, wc.options());
  const float* src = wc.const_data_ptr<float>();
  float* dst = p.mutable_data_ptr<float>();
  for (int64_t n = 0; n < ncols; ++n) {
    const int64_t j = n / nr, col = n % nr;
    for (int64_t c = 0; c < kc; ++c)
      for (int64_t t = 0; t < ntaps; ++t)
        dst[(j * ntaps + t) * kp * nr + packed_index(c, col, nr, kk)] = src[(n * kc + c) * ntaps + t];
  }
  return p.to(dtype);
}

// Winograd F(2x2, 3x3) weights U[xi = 4i + j] = (G g G^T)[i][j], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
// computed in double from the weights as given, packed like a 16-tap weight and rounded once to `dtype`.
at::Tensor pack_winograd_weight(const at::Tensor& w, int nr, int kk, at::ScalarType dtype) {
  const int64_t ncols = w.size(0), kc = w.size(1);
  const int64_t panels = (ncols + nr - 1) / nr, kp = padded_rows(kc, kk);
  at::Tensor wc = w.to(at::kFloat).contiguous();
  at::Tensor p = at::zeros({panels, 16, kp * nr}, wc.options().dtype(at::kDouble));
  const float* src = wc.const_data_ptr<float>();
  double* dst = p.mutable_data_ptr<double>();
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
          dst[(j * 16 + 4 * i + k) * kp * nr + packed_index(c, col, nr, kk)] = u;
        }
    }
  }
  return p.to(dtype);
}

at::Tensor pad_bias(const at::Tensor& b, int64_t panels, int nr) {
  at::Tensor p = at::zeros({panels * nr}, b.options().dtype(at::kFloat));
  p.narrow(0, 0, b.size(0)).copy_(b);
  return p;
}

// The tile kernel's entry points for one element type and instruction set.
template <class T>
struct Kernels {
  int lanes;    // float lanes per vector
  int max_nv;   // vectors per panel at most
  int kk;       // channels per dot step
  void (*conv_row)(const RowConv<T>&, int64_t, int64_t);
  void (*winograd_strip)(const WinoStrip<T>&, const T* const*, int64_t, int64_t, int64_t, int64_t, T*, float*);
  void (*fused_strips)(const RowConv<T>&, const WinoStrip<T>&, int64_t, int64_t, int64_t, int64_t, T*, T*, float*);
};

Kernels<float> f32_kernels(int64_t isa) {
#ifdef FR_DENSE_X86
  if (isa == kAvx512) return {16, 4, 1, &avx512::conv_row, &avx512::winograd_strip, &avx512::fused_strips};
  return {8, 3, 1, &avx2::conv_row, &avx2::winograd_strip, &avx2::fused_strips};
#else
  return {8, 3, 1, nullptr, nullptr, nullptr};  // unreachable: isa_supported() is false
#endif
}

// 512-bit vectors, or 256-bit ones for a layer of at most 8 output channels (see avx512bf16_ymm).
Kernels<bf16_t> bf16_kernels(int64_t n_out) {
#ifdef FR_DENSE_X86
  if (n_out <= 8)
    return {8, 4, 2, &avx512bf16_ymm::conv_row, &avx512bf16_ymm::winograd_strip, &avx512bf16_ymm::fused_strips};
  return {16, 4, 2, &avx512bf16::conv_row, &avx512bf16::winograd_strip, &avx512bf16::fused_strips};
#else
  (void)n_out;
  return {16, 4, 2, nullptr, nullptr, nullptr};  // unreachable: bf16_supported() is false
#endif
}

template <class T>
void run(const Kernels<T>& k, const RowConv<T>& rc, int64_t batch) {
  at::parallel_for(0, batch * rc.H, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) k.conv_row(rc, r / rc.H, r % rc.H);
  });
}

// The zero columns of one E row of wp columns (image column x at E column x + 1).
template <class T>
void zero_pad_columns(T* row, int64_t W, int64_t wp, int64_t K) {
  std::fill_n(row, K, T(0));
  std::fill_n(row + (W + 1) * K, (wp - W - 1) * K, T(0));
}

// Tiles per Winograd strip chunk: the transformed input (16 T K floats) near 768 KiB (L2).
int64_t winograd_tcap(int64_t W, int64_t K) {
  const int64_t tx_all = (W + 1) / 2;
  const int64_t tmax = std::max<int64_t>(8, 12288 / K);
  const int64_t chunks = (tx_all + tmax - 1) / tmax;
  return (tx_all + chunks - 1) / chunks;
}

template <class T>
struct WinoScratch {
  std::unique_ptr<T[]> V;
  std::unique_ptr<float[]> Mb;
  WinoScratch(int64_t tcap, int64_t K, int64_t N)
      : V(new T[16 * winograd_plane(tcap * K, sizeof(T))]),
        Mb(new float[16 * winograd_plane(tcap * N, sizeof(float))]) {}
};

// Winograd over the strips of a whole E ([B, H, wp, K], computed before).
template <class T>
void run_winograd(const Kernels<T>& k, const WinoStrip<T>& ws, const T* e, int64_t wp, int64_t batch) {
  const int64_t tx_all = (ws.W + 1) / 2, ty_all = (ws.H + 1) / 2;
  const int64_t tcap = winograd_tcap(ws.W, ws.K);
  at::parallel_for(0, batch * ty_all, 1, [&](int64_t s0, int64_t s1) {
    WinoScratch<T> sc(tcap, ws.K, ws.N);
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t b = s / ty_all, ty = s % ty_all;
      const T* rows[4];
      for (int i = 0; i < 4; ++i) {
        const int64_t r = 2 * ty - 1 + i;
        rows[i] = (r >= 0 && r < ws.H) ? e + (b * ws.H + r) * wp * ws.K : nullptr;
      }
      for (int64_t tx0 = 0; tx0 < tx_all; tx0 += tcap)
        k.winograd_strip(ws, rows, b, ty, tx0, std::min(tcap, tx_all - tx0), sc.V.get(), sc.Mb.get());
    }
  });
}

// 1x1 and Winograd per strip, E only in a four-row ring per task (fused_strips).
template <class T>
void run_fused(const Kernels<T>& k, const RowConv<T>& c1, const WinoStrip<T>& ws, int64_t wp, int64_t batch) {
  const int64_t ty_all = (ws.H + 1) / 2, K = ws.K;
  const int64_t tcap = winograd_tcap(ws.W, K);
  // >= 4 strips per task: a task recomputes the two E rows above its first strip
  at::parallel_for(0, batch * ty_all, 4, [&](int64_t s0, int64_t s1) {
    WinoScratch<T> sc(tcap, K, ws.N);
    std::unique_ptr<T[]> ring(new T[4 * wp * K]);
    for (int i = 0; i < 4; ++i) zero_pad_columns(ring.get() + i * wp * K, ws.W, wp, K);
    k.fused_strips(c1, ws, wp, s0, s1, tcap, ring.get(), sc.V.get(), sc.Mb.get());
  });
}

// A layer's weights in the tile kernels' layout (dense_cpu_pack, or packed per call).  meta
// (int64): kPackTag, dtype (0 float32, 1 bfloat16), isa, Winograd (1) or direct 3x3 (0), M, K, N,
// nr1, nr3, kk: what a call checks the packed weights against.
constexpr int64_t kPackTag = 0x46525044;  // "FRPD"
constexpr int64_t kPackFields = 10;
struct Packed {
  at::Tensor p1, q1, u, q3, meta;
};

// The kernels of a layer of n_out output channels in dtype dt (isa: resolved, see check_weights),
// handed to f (a generic lambda): the one place that picks them.
template <class F>
decltype(auto) with_kernels(at::ScalarType dt, int64_t isa, int64_t n_out, F&& f) {
  if (dt == at::kBFloat16) return f(bf16_kernels(n_out));
  return f(f32_kernels(isa));
}

// Panel widths of the 1x1 (K columns) and the 3x3 (N columns) for these kernels.
template <class T>
std::array<int64_t, 2> panel_widths(const Kernels<T>& kern, int64_t K, int64_t N) {
  return {pick_nv(kern.lanes, kern.max_nv, K) * kern.lanes, pick_nv(kern.lanes, kern.max_nv, N) * kern.lanes};
}

template <class T>
Packed pack_all(const Kernels<T>& kern, int64_t isa, const at::Tensor& w1, const at::Tensor& b1,
                const at::Tensor& w3, const at::Tensor& b3, bool winograd, at::ScalarType dt) {
  const int64_t M = w1.size(1), K = w1.size(0), N = w3.size(0);
  const auto [nr1, nr3] = panel_widths(kern, K, N);
  Packed pk;
  pk.p1 = pack_weight(w1, nr1, kern.kk, dt);
  pk.q1 = pad_bias(b1, pk.p1.size(0), nr1);
  pk.u = winograd ? pack_winograd_weight(w3, nr3, kern.kk, dt) : pack_weight(w3, nr3, kern.kk, dt);
  pk.q3 = pad_bias(b3, pk.u.size(0), nr3);
  pk.meta = at::tensor(std::vector<int64_t>{kPackTag, dt == at::kBFloat16 ? 1 : 0, isa, winograd ? 1 : 0,
                                            M, K, N, nr1, nr3, kern.kk});
  return pk;
}

template <class T>
const T* cptr(const at::Tensor& t) { return reinterpret_cast<const T*>(t.const_data_ptr()); }
template <class T>
T* mptr(const at::Tensor& t) { return reinterpret_cast<T*>(t.mutable_data_ptr()); }

// The layer on the tile kernels of element type T (shapes checked by dense_layer_cpu).
template <class T>
void dense_layer_tiles(const Kernels<T>& kern, const at::Tensor& x, const at::Tensor& y, const Packed& pk,
                       int64_t algo) {
  const int64_t B = x.size(0), M = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = pk.meta.const_data_ptr<int64_t>()[5], N = pk.meta.const_data_ptr<int64_t>()[6];
  // E: image column x at E column x + 1; column 0 and columns W + 1 .. Wp - 1 are zeros (the
  // 3x3 conv's padding; Winograd tiles of an odd width read one column more).
  const int64_t Wp = 2 * ((W + 1) / 2) + 2;
  const int nv1 = pick_nv(kern.lanes, kern.max_nv, K);
  const at::Tensor &p1 = pk.p1, &q1 = pk.q1, &u = pk.u, &q3 = pk.q3;
  RowConv<T> c1{};
  c1.H = H; c1.W = W;
  c1.in = cptr<T>(x);
  c1.in_sb = x.stride(0); c1.in_sy = x.stride(2); c1.in_sx = x.stride(3);
  c1.kc = M; c1.ntaps = 1; c1.dy[0] = 0; c1.dx[0] = 0;
  c1.packed = cptr<T>(p1); c1.bias = q1.const_data_ptr<float>();
  c1.ncols = K; c1.nv = nv1; c1.panels = p1.size(0);
  c1.out_sx = K;
  c1.elu = true;

  const int nv3 = pick_nv(kern.lanes, kern.max_nv, N);
  const at::Tensor zero_row = at::zeros({4 * K}, x.options());
  WinoStrip<T> ws{};
  ws.H = H; ws.W = W; ws.K = K; ws.N = N;
  ws.packed = cptr<T>(u); ws.nv = nv3; ws.panels = u.size(0);
  ws.bias = q3.const_data_ptr<float>();
  ws.zero_row = cptr<T>(zero_row);
  ws.out = mptr<T>(y);
  ws.out_sb = y.stride(0); ws.out_sy = y.stride(2); ws.out_sx = y.stride(3);
  if (algo == 2) {
    run_fused(kern, c1, ws, Wp, B);
    return;
  }

  // Whole E: [B, H, Wp, K].
  at::Tensor e = at::empty({B, H, Wp, K}, x.options());
  T* pe = mptr<T>(e);
  at::parallel_for(0, B * H, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) zero_pad_columns(pe + r * Wp * K, W, Wp, K);
  });
  c1.out = pe + K;  // column 1 of row 0
  c1.out_sb = H * Wp * K; c1.out_sy = Wp * K;
  run(kern, c1, B);
  if (algo == 3) {
    run_winograd(kern, ws, pe, Wp, B);
    return;
  }
  RowConv<T> c3{};
  c3.H = H; c3.W = W;
  c3.in = c1.out;
  c3.in_sb = c1.out_sb; c3.in_sy = c1.out_sy; c3.in_sx = K;
  c3.kc = K; c3.ntaps = 9;
  for (int t = 0; t < 9; ++t) { c3.dy[t] = t / 3 - 1; c3.dx[t] = t % 3 - 1; }
  c3.packed = cptr<T>(u); c3.bias = q3.const_data_ptr<float>();
  c3.ncols = N; c3.nv = nv3; c3.panels = u.size(0);
  c3.out = ws.out;
  c3.out_sb = ws.out_sb; c3.out_sy = ws.out_sy; c3.out_sx = ws.out_sx;
  c3.elu = false;
  run(kern, c3, B);
}

void check_pixels(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, "dense_layer_cpu_: ", name, " must be 4-D (B, C, H, W), got shape ", t.sizes());
  TORCH_CHECK(t.device().is_cpu(), "dense_layer_cpu_: ", name, " must be on the CPU, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16, "dense_layer_cpu_: ", name,
              " must be float32 or bfloat16, got ", t.scalar_type());
  TORCH_CHECK(t.size(1) <= 1 || t.stride(1) == 1, "dense_layer_cpu_: ", name,
              " must have unit stride along its channels (a channels-last buffer or a channel slice "
              "of one), got strides ", t.strides());
}

// Checks of the weights and of isa / algo shared by the layer and dense_cpu_pack; resolves isa
// (float32: 0 -> the best; bfloat16: always 2).
void check_weights(const char* op, at::ScalarType dt, int64_t M, const at::Tensor& w1, const at::Tensor& b1,
                   const at::Tensor& w3, const at::Tensor& b3, int64_t& isa, int64_t algo) {
  TORCH_CHECK(w1.dim() == 4 && w1.size(1) == M && w1.size(2) == 1 && w1.size(3) == 1,
              op, ": w1 must have shape [K, ", M, ", 1, 1], got ", w1.sizes());
  const int64_t K = w1.size(0);
  TORCH_CHECK(w3.dim() == 4 && w3.size(1) == K && w3.size(2) == 3 && w3.size(3) == 3,
              op, ": w3 must have shape [N, ", K, ", 3, 3], got ", w3.sizes());
  const int64_t N = w3.size(0);
  TORCH_CHECK(b1.dim() == 1 && b1.size(0) == K, op, ": b1 must have shape [", K, "], got ", b1.sizes());
  TORCH_CHECK(b3.dim() == 1 && b3.size(0) == N, op, ": b3 must have shape [", N, "], got ", b3.sizes());
  for (const at::Tensor* t : {&w1, &b1, &w3, &b3}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == dt, op, ": weights must be ", dt,
                " CPU tensors like x, got ", t->scalar_type(), " on ", t->device());
  }
  TORCH_CHECK(K > 0 && N > 0 && M > 0, op, ": empty weights (M=", M, ", K=", K, ", N=", N, ")");
  TORCH_CHECK(algo >= 0 && algo <= 3, op, ": algo must be 0 (auto), 1 (direct 3x3), 2 (Winograd, "
              "fused row ring) or 3 (Winograd, whole intermediate), got ", algo);
  if (dt == at::kBFloat16) {
    TORCH_CHECK(isa == kNone || isa == kAvx512, op, ": bfloat16 runs on AVX-512 with BF16 only: isa "
                "must be 0 (best) or 2, got ", isa);
    TORCH_CHECK(bf16_supported(), op, ": bfloat16 needs a CPU with AVX512-BF16 (vdpbf16ps); "
                "this one has none (the Python side falls back to torch's bfloat16 convolutions)");
    isa = kAvx512;
  } else {
    TORCH_CHECK(dt == at::kFloat, op, ": float32 or bfloat16 weights, got ", dt);
    if (isa == kNone) isa = best_isa();
    TORCH_CHECK(isa == kAvx2 || isa == kAvx512, op, ": isa must be 0 (best), 1 (AVX2) or 2 (AVX-512), got ",
                isa, best_isa() == kNone ? " (this CPU has neither)" : "");
    TORCH_CHECK(isa_supported(isa), op, ": this CPU does not support ", isa == kAvx512 ? "AVX-512" : "AVX2 + FMA");
  }
}

Packed pack_for(at::ScalarType dt, int64_t isa, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w3,
                const at::Tensor& b3, bool winograd) {
  return with_kernels(dt, isa, w3.size(0),
                      [&](const auto& kern) { return pack_all(kern, isa, w1, b1, w3, b3, winograd, dt); });
}

// The layer's weights packed once for dense_layer_cpu_(..., packed=): [p1, q1, u, q3, meta].
// The packing depends on the dtype, the instruction set and whether the 3x3 runs as Winograd
// (algo 0, 2, 3) or directly (algo 1); a call checks all three and the shapes against meta.
std::vector<at::Tensor> dense_cpu_pack(const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w3,
                                       const at::Tensor& b3, int64_t isa, int64_t algo) {
  TORCH_CHECK(w1.dim() == 4, "dense_cpu_pack: w1 must be 4-D [K, M, 1, 1], got shape ", w1.sizes());
  const at::ScalarType dt = w1.scalar_type();
  check_weights("dense_cpu_pack", dt, w1.size(1), w1, b1, w3, b3, isa, algo);
  Packed pk = pack_for(dt, isa, w1, b1, w3, b3, algo != 1);
  return {pk.p1, pk.q1, pk.u, pk.q3, pk.meta};
}

void dense_layer_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w1, const at::Tensor& b1,
                     const at::Tensor& w3, const at::Tensor& b3, int64_t isa, int64_t algo,
                     std::optional<at::TensorList> packed) {
  check_pixels(x, "x");
  check_pixels(y, "y");
  const at::ScalarType dt = x.scalar_type();
  TORCH_CHECK(y.scalar_type() == dt, "dense_layer_cpu_: y has dtype ", y.scalar_type(), " but x has ", dt);
  const int64_t B = x.size(0), M = x.size(1), H = x.size(2), W = x.size(3);
  check_weights("dense_layer_cpu_", dt, M, w1, b1, w3, b3, isa, algo);
  const int64_t K = w1.size(0), N = w3.size(0);
  TORCH_CHECK(y.size(0) == B && y.size(1) == N && y.size(2) == H && y.size(3) == W,
              "dense_layer_cpu_: y must have shape [", B, ", ", N, ", ", H, ", ", W, "], got ", y.sizes());
  Packed pk;
  if (packed.has_value()) {
    const auto& list = *packed;
    TORCH_CHECK(list.size() == 5, "dense_layer_cpu_: packed must be the 5 tensors dense_cpu_pack returns, got ",
                list.size());
    std::array<at::Tensor, 5> t;
    for (size_t i = 0; i < 5; ++i) {
      t[i] = list[i];
      TORCH_CHECK(t[i].defined() && t[i].is_contiguous() && t[i].device().is_cpu(),
                  "dense_layer_cpu_: packed[", i, "] must be a contiguous CPU tensor from dense_cpu_pack");
    }
    const at::Tensor& meta = t[4];
    TORCH_CHECK(meta.scalar_type() == at::kLong && meta.numel() == kPackFields &&
                meta.const_data_ptr<int64_t>()[0] == kPackTag,
                "dense_layer_cpu_: packed[4] is not the metadata of dense_cpu_pack");
    const int64_t* m = meta.const_data_ptr<int64_t>();
    // the panel widths and dot step this build's kernels use for this layer
    const auto [nr1, nr3] = with_kernels(dt, isa, N, [&](const auto& kern) { return panel_widths(kern, K, N); });
    const int64_t kk = with_kernels(dt, isa, N, [](const auto& kern) { return int64_t{kern.kk}; });
    const int64_t want[] = {kPackTag, dt == at::kBFloat16 ? 1 : 0, isa, algo == 1 ? 0 : 1, M, K, N, nr1, nr3, kk};
    static const char* names[] = {"tag", "dtype", "isa", "algorithm (Winograd or direct)", "M", "K", "N",
                                  "1x1 panel width", "3x3 panel width", "dot step"};
    for (int i = 1; i < kPackFields; ++i)
      TORCH_CHECK(m[i] == want[i], "dense_layer_cpu_: the packed weights were made for another ", names[i], " (",
                  m[i], ", this call: ", want[i], "); pack again (fastreshuffle.ops.pack_dense_weights) under the "
                  "same settings as the call");
    const int64_t kp1 = padded_rows(M, static_cast<int>(m[9])), kp3 = padded_rows(K, static_cast<int>(m[9]));
    const int64_t pan1 = (K + m[7] - 1) / m[7], pan3 = (N + m[8] - 1) / m[8];
    TORCH_CHECK(t[0].scalar_type() == dt && t[0].numel() == pan1 * kp1 * m[7] && t[0].size(0) == pan1 &&
                t[1].scalar_type() == at::kFloat && t[1].numel() == pan1 * m[7] &&
                t[2].scalar_type() == dt && t[2].numel() == pan3 * (algo == 1 ? 9 : 16) * kp3 * m[8] &&
                t[2].size(0) == pan3 && t[3].scalar_type() == at::kFloat && t[3].numel() == pan3 * m[8],
                "dense_layer_cpu_: the packed weight tensors do not have the sizes their metadata gives");
    pk = Packed{t[0], t[1], t[2], t[3], meta};
  } else {
    pk = pack_for(dt, isa, w1, b1, w3, b3, algo != 1);
  }
  if (B == 0 || H == 0 || W == 0) return;
  if (algo == 0) {
    // Winograd; E in a ring unless it is small enough to stay in the last-level cache anyway
    // (then computing it whole avoids the ring's halo rows).  Measured at the paper preset's
    // shapes (768x512, 2 threads, Zen 4): float32 even at 6 MiB, ring faster from 12 MiB;
    // bfloat16 ring faster already at 3 and 6 MiB (8 of 9 layers, by 2-10%).
    const int64_t whole_max = dt == at::kBFloat16 ? (2 << 20) : (8 << 20);
    algo = B * H * W * K * x.element_size() > whole_max ? 2 : 3;
  }
  with_kernels(dt, isa, N, [&](const auto& kern) { dense_layer_tiles(kern, x, y, pk, algo); });
}

int64_t dense_cpu_isa() { return best_isa(); }
bool dense_cpu_bf16() { return bf16_supported(); }

}  // namespace

TORCH_LIBRARY_IMPL(fastreshuffle, CPU, m) {
  m.impl("dense_layer_cpu_", &dense_layer_cpu);
  m.impl("dense_cpu_pack", &dense_cpu_pack);
}

// dense_cpu_isa() takes no tensor to dispatch on: CompositeImplicitAutograd, as the kernel of
// a def() with a function is registered.
TORCH_LIBRARY_IMPL(fastreshuffle, CompositeImplicitAutograd, m) {
  m.impl("dense_cpu_isa", &dense_cpu_isa);
  m.impl("dense_cpu_bf16", &dense_cpu_bf16);
}

}  // namespace fastreshuffle

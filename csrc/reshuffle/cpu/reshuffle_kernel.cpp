// CPU kernel for the reshuffle ops: a multi-threaded 6-D strided copy moving elements by
// their byte size (bit-exact for every dtype), with 64-bit index arithmetic throughout.
//
// Loop orders (both read and write each high-resolution row / pixel once, in memory order):
//   A (NCHW-like):         parallel over (n, c, i); then a, b, and a run over j
//   B (channels-last-like): parallel over (n, i);   then a, j, b, and a run over c
// Fast paths for dense rows / pixels and s in {2, 3, 4, 8} (compile-time s):
//   A: one high-resolution row <-> s low-resolution rows, (de)interleaved in one pass with
//      unit-stride access to the row;
//   B: one low-resolution pixel vector (C*s*s) <-> s*s high-resolution pixel vectors (C),
//      a small transpose with unit-stride access to the low-resolution vector; for C <= 4
//      (e.g. RGB) a fully unrolled per-pixel permutation over whole rows instead.
// The (de)interleaves move 4- and 8-byte groups of small elements as one word (shift / or),
// use SSE2 for 1- and 2-byte K = 2, 1-byte K = 8 and 4-byte K = 4 (lane transposes), SSSE3
// for 1-byte K = 4, and L1-resident rounds of K = 2 for larger power-of-two K.  RGB
// channels_last has its own one-pass byte-shuffle (uint8) and shufps (4-byte) kernels.  Large
// outputs of the allocating ops use transparent huge pages.
//
// The (de)interleave primitives are in simd.h, the huge-page allocator in common/huge_pages.h.
#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <tmmintrin.h>
#endif

#include "common/huge_pages.h"
#include "reshuffle/cpu/simd.h"
#include "reshuffle/reshuffle.h"

namespace fastreshuffle {
namespace {

// Copy n elements with element strides ds (destination) and ss (source).  The common unit
// and stride-2 cases get their own loops so the compiler can vectorize them.
template <typename T>
inline void copy_run(T* __restrict__ dst, int64_t ds, const T* __restrict__ src, int64_t ss,
                     int64_t n) {
  if (ds == 1 && ss == 1) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
  } else if (ds == 1 && ss == 2) {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[2 * k];
  } else if (ds == 2 && ss == 1) {
    for (int64_t k = 0; k < n; ++k) dst[2 * k] = src[k];
  } else if (ds == 1) {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[k * ss];
  } else if (ss == 1) {
    for (int64_t k = 0; k < n; ++k) dst[k * ds] = src[k];
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k * ds] = src[k * ss];
  }
}

// Tasks of at least kMinWork elements for at::parallel_for: the grain for an outer range whose
// items each move `per_item` elements.
constexpr int64_t kMinWork = 1 << 15;
inline int64_t grain_for(int64_t per_item) { return std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, per_item)); }

// ---- fast paths (compile-time scale S, dense innermost dimension): loops over the K-way
// (de)interleaves of simd.h -------------------------------------------------------------------
// NCHW-like: one high-resolution row (W*S, dense) <-> S low-resolution rows (W each, dense).
template <typename T, int S>
void rows_fast(const Geometry& g, const T* src, T* dst) {
  // hi: the high-resolution tensor, lo: the low-resolution one (element strides per 6-D dim)
  const auto& sz = g.size;
  const auto& hs = g.down ? g.src_stride : g.dst_stride;
  const auto& ls = g.down ? g.dst_stride : g.src_stride;
  T* const hi_c = const_cast<T*>(g.down ? src : dst);
  T* const lo_c = const_cast<T*>(g.down ? dst : src);
  const int64_t W = sz[kJ];
  const int64_t outer = sz[kN] * sz[kC] * sz[kI];
  const int64_t grain = grain_for(S * S * W);
  at::parallel_for(0, outer, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i = t % sz[kI];
      const int64_t c = (t / sz[kI]) % sz[kC];
      const int64_t n = t / (sz[kI] * sz[kC]);
      for (int64_t a = 0; a < S; ++a) {
        T* hi = hi_c + n * hs[kN] + c * hs[kC] + i * hs[kI] + a * hs[kA];
        T* lo[S];
        for (int b = 0; b < S; ++b)
          lo[b] = lo_c + n * ls[kN] + c * ls[kC] + i * ls[kI] + a * ls[kA] + b * ls[kB];
        if (g.down) {
          simd::deinterleave<T, S>(hi, lo, W);
        } else {
          simd::interleave<T, S>(hi, lo, W);
        }
      }
    }
  });
}

// channels-last-like, many channels: one low-resolution pixel vector (C*S*S, dense) <-> S*S
// high-resolution pixel vectors (C each, dense).
template <typename T, int S>
void pixels_fast(const Geometry& g, const T* src, T* dst) {
  constexpr int K = S * S;
  const auto& sz = g.size;
  const auto& hs = g.down ? g.src_stride : g.dst_stride;
  const auto& ls = g.down ? g.dst_stride : g.src_stride;
  T* const hi_c = const_cast<T*>(g.down ? src : dst);
  T* const lo_c = const_cast<T*>(g.down ? dst : src);
  const int64_t C = sz[kC];
  const int64_t outer = sz[kN] * sz[kI];
  const int64_t grain = grain_for(K * C * sz[kJ]);
  at::parallel_for(0, outer, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i = t % sz[kI];
      const int64_t n = t / sz[kI];
      T* const lo_row = lo_c + n * ls[kN] + i * ls[kI];
      T* hi[K];
      for (int a = 0; a < S; ++a)
        for (int b = 0; b < S; ++b) hi[a * S + b] = hi_c + n * hs[kN] + i * hs[kI] + a * hs[kA] + b * hs[kB];
      for (int64_t j = 0; j < sz[kJ]; ++j) {
        T* lo = lo_row + j * ls[kJ];
        if (g.down) {
          simd::interleave<T, K>(lo, hi, C);
        } else {
          simd::deinterleave<T, K>(lo, hi, C);
        }
        for (int k = 0; k < K; ++k) hi[k] += hs[kJ];
      }
    }
  });
}

// Row t of the (n, i) range of a channels-last-like geometry: the low-resolution row's start,
// and in hi[a] the start of high-resolution row a (a < S).
template <typename T, int S>
inline T* pixel_row(const Geometry& g, T* hi_c, T* lo_c, int64_t t, T** hi) {
  const auto& hs = g.down ? g.src_stride : g.dst_stride;
  const auto& ls = g.down ? g.dst_stride : g.src_stride;
  const int64_t i = t % g.size[kI];
  const int64_t n = t / g.size[kI];
  for (int a = 0; a < S; ++a) hi[a] = hi_c + n * hs[kN] + i * hs[kI] + a * hs[kA];
  return lo_c + n * ls[kN] + i * ls[kI];
}

// channels-last-like, few channels (compile-time C, e.g. RGB): per low-resolution row, the S
// high-resolution rows (W*S*C each, dense) <-> one low-resolution row (W*C*S*S, dense), a small
// fully unrolled permutation per pixel.
template <typename T, int S, int C>
void pixels_small_c(const Geometry& g, const T* src, T* dst) {
  constexpr int K = S * S;
  const auto& sz = g.size;
  T* const hi_c = const_cast<T*>(g.down ? src : dst);
  T* const lo_c = const_cast<T*>(g.down ? dst : src);
  const int64_t W = sz[kJ];
  const int64_t outer = sz[kN] * sz[kI];
  const int64_t grain = grain_for(K * C * W);
  at::parallel_for(0, outer, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      T* hi[S];
      T* const lo = pixel_row<T, S>(g, hi_c, lo_c, t, hi);
      if (g.down) {
#pragma GCC ivdep
        for (int64_t j = 0; j < W; ++j)
          for (int c = 0; c < C; ++c)
            for (int a = 0; a < S; ++a)
              for (int b = 0; b < S; ++b) lo[j * C * K + c * K + a * S + b] = hi[a][j * S * C + b * C + c];
      } else {
#pragma GCC ivdep
        for (int64_t j = 0; j < W; ++j)
          for (int c = 0; c < C; ++c)
            for (int a = 0; a < S; ++a)
              for (int b = 0; b < S; ++b) hi[a][j * S * C + b * C + c] = lo[j * C * K + c * K + a * S + b];
      }
    }
  });
}

#if defined(__x86_64__) && defined(__GNUC__)
// ---- RGB uint8, channels_last (the layout of an HWC image viewed as NCHW) -----------------
// Per pixel only 3 bytes move together, so the element loop above is store-bound (one store
// per byte).  Instead one pass of SSSE3 byte shuffles moves a "group" at a time: J
// low-resolution pixels (3*S*S*J bytes) <-> A high-resolution rows of 3*S*J bytes each
//   S = 2: J = 2, A = 2 (24 bytes <-> 2 x 12);  S = 4: J = 1, A = 4 (48 <-> 4 x 12);
//   S = 8: J = 1, A = 2 (3 x 16 bytes at c*64 + a*8 <-> 2 rows x 24 bytes), for a = 0, 2, 4, 6.
// Every output register is the OR of byte shuffles of the input registers; the masks are
// derived from the index map below at first use.  Loads of 12-byte pieces read 16 bytes, so
// the last groups of a row whose over-read would leave the row go through the element loop.
// Chosen at run time where SSSE3 exists.
template <int S>
struct RgbGroup {
  static constexpr int J = S == 2 ? 2 : 1;
  static constexpr int A = S == 8 ? 2 : S;
  static constexpr int HB = 3 * S * J;            // high-resolution bytes per row and group
  static constexpr int NHR = (HB + 15) / 16;      // registers per high-resolution row
  static constexpr int NH = A * NHR;              // high-resolution registers per group
  static constexpr int NL = S == 2 ? 2 : 3;       // low-resolution pieces per group
  static constexpr int lo_off(int d) { return S == 8 ? 64 * d : 16 * d; }
  static constexpr int lo_len(int d) { return S == 2 && d == 1 ? 8 : 16; }
  static constexpr int hi_row(int p) { return p / NHR; }
  static constexpr int hi_off(int p) { return 16 * (p % NHR); }
  static constexpr int hi_len(int p) { return HB - hi_off(p) < 16 ? HB - hi_off(p) : 16; }
  alignas(16) int8_t down[NL][NH][16];  // low piece d byte q <- shuffle of high register p
  alignas(16) int8_t up[NH][NL][16];    // high register p byte q <- shuffle of low piece d
  RgbGroup() {
    std::memset(down, 0x80, sizeof(down));
    std::memset(up, 0x80, sizeof(up));
    for (int jj = 0; jj < J; ++jj)
      for (int c = 0; c < 3; ++c)
        for (int a = 0; a < A; ++a)
          for (int b = 0; b < S; ++b) {
            const int lo = jj * 3 * S * S + c * S * S + a * S + b;  // relative to the group
            const int hb = jj * 3 * S + 3 * b + c;                   // within row a's piece
            const int p = a * NHR + hb / 16, ph = hb % 16;
            int d = 0;
            while (!(lo >= lo_off(d) && lo < lo_off(d) + lo_len(d))) ++d;
            down[d][p][lo - lo_off(d)] = static_cast<int8_t>(ph);
            up[p][d][ph] = static_cast<int8_t>(lo - lo_off(d));
          }
  }
};

template <int S>
const RgbGroup<S>& rgb_group() {
  static const RgbGroup<S> g;
  return g;
}

__attribute__((target("ssse3"))) inline __m128i load_n(const uint8_t* p, int n) {
  // n == 12 deliberately reads 16 bytes (the caller keeps that inside the row)
  return n == 8 ? _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))
                : _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}
__attribute__((target("ssse3"))) inline void store_n(uint8_t* p, __m128i v, int n) {
  if (n == 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v);
  } else {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), v);
    if (n == 12) {
      const int32_t w = _mm_cvtsi128_si32(_mm_srli_si128(v, 8));
      std::memcpy(p + 8, &w, 4);
    }
  }
}

// rows t in [begin, end) of the (n, i) range; separate from the parallel_for lambda so that
// it carries the ssse3 target
template <int S>
__attribute__((target("ssse3"))) void rgb8_rows(const Geometry& g, uint8_t* hi_c, uint8_t* lo_c,
                                                int64_t begin, int64_t end) {
  using G = RgbGroup<S>;
  constexpr int K = S * S;
  const G& gm = rgb_group<S>();
  const auto& sz = g.size;
  const int64_t W = sz[kJ];
  const int64_t row_bytes = 3 * S * W;
  // groups whose loads stay inside the row: a 12-byte piece (HB = 12) is loaded as 16 bytes
  const int64_t groups = W / G::J;
  const int64_t vec_groups =
      G::HB >= 16 ? groups : std::min(groups, row_bytes >= 16 ? (row_bytes - 16) / G::HB + 1 : 0);
  __m128i mdown[G::NL][G::NH], mup[G::NH][G::NL];
  for (int d = 0; d < G::NL; ++d)
    for (int p = 0; p < G::NH; ++p) {
      mdown[d][p] = _mm_load_si128(reinterpret_cast<const __m128i*>(gm.down[d][p]));
      mup[p][d] = _mm_load_si128(reinterpret_cast<const __m128i*>(gm.up[p][d]));
    }
  for (int64_t t = begin; t < end; ++t) {
    uint8_t* hi[S];
    uint8_t* const lo = pixel_row<uint8_t, S>(g, hi_c, lo_c, t, hi);
    // group k of the row, then its A-row groups (S = 8: rows a, a + 1 start at byte a * 8 of
    // each channel's 64 bytes), so that one low-resolution pixel is finished before the next
    if (g.down) {
      for (int64_t k = 0; k < vec_groups; ++k) {
        uint8_t* const l = lo + k * G::J * 3 * K;
        for (int a0 = 0; a0 < S; a0 += G::A) {
          __m128i h[G::NH];
          for (int p = 0; p < G::NH; ++p)
            h[p] = load_n(hi[a0 + G::hi_row(p)] + k * G::HB + G::hi_off(p), G::hi_len(p));
          for (int d = 0; d < G::NL; ++d) {
            __m128i v = _mm_shuffle_epi8(h[0], mdown[d][0]);
            for (int p = 1; p < G::NH; ++p) v = _mm_or_si128(v, _mm_shuffle_epi8(h[p], mdown[d][p]));
            store_n(l + a0 * S + G::lo_off(d), v, G::lo_len(d));
          }
        }
      }
    } else {
      for (int64_t k = 0; k < vec_groups; ++k) {
        const uint8_t* const l = lo + k * G::J * 3 * K;
        for (int a0 = 0; a0 < S; a0 += G::A) {
          __m128i x[G::NL];
          for (int d = 0; d < G::NL; ++d) x[d] = load_n(l + a0 * S + G::lo_off(d), G::lo_len(d));
          for (int p = 0; p < G::NH; ++p) {
            __m128i v = _mm_shuffle_epi8(x[0], mup[p][0]);
            for (int d = 1; d < G::NL; ++d) v = _mm_or_si128(v, _mm_shuffle_epi8(x[d], mup[p][d]));
            store_n(hi[a0 + G::hi_row(p)] + k * G::HB + G::hi_off(p), v, G::hi_len(p));
          }
        }
      }
    }
    // the rest of the row, element by element
    for (int64_t j = vec_groups * G::J; j < W; ++j)
      for (int c = 0; c < 3; ++c)
        for (int a = 0; a < S; ++a)
          for (int b = 0; b < S; ++b) {
            uint8_t& lv = lo[j * 3 * K + c * K + a * S + b];
            uint8_t& hv = hi[a][j * S * 3 + b * 3 + c];
            if (g.down) lv = hv; else hv = lv;
          }
  }
}

template <int S>
void pixels_rgb8(const Geometry& g, const uint8_t* src, uint8_t* dst) {
  uint8_t* const hi_c = const_cast<uint8_t*>(g.down ? src : dst);
  uint8_t* const lo_c = const_cast<uint8_t*>(g.down ? dst : src);
  const int64_t outer = g.size[kN] * g.size[kI];
  const int64_t grain = grain_for(S * S * 3 * g.size[kJ]);
  at::parallel_for(0, outer, grain,
                   [&](int64_t begin, int64_t end) { rgb8_rows<S>(g, hi_c, lo_c, begin, end); });
}
#endif

#if defined(__SSE2__)
// ---- RGB 4-byte elements (float32), channels_last, scale 4 and 8 ---------------------------
// 4 RGB pixels (12 values, 3 registers) <-> 4 R, 4 G, 4 B values with 7 / 9 shufps; one row
// segment of S pixels at a time, so every load and store is exact (no tails).
#define FR_SHUF(A, B, p0, p1, p2, p3) _mm_shuffle_ps(A, B, _MM_SHUFFLE(p3, p2, p1, p0))
inline void split3_f32(__m128 x0, __m128 x1, __m128 x2, __m128& r, __m128& g, __m128& b) {
  // x0 = r0 g0 b0 r1, x1 = g1 b1 r2 g2, x2 = b2 r3 g3 b3
  r = FR_SHUF(x0, FR_SHUF(x1, x2, 2, 2, 1, 1), 0, 3, 0, 2);
  g = FR_SHUF(FR_SHUF(x0, x1, 1, 1, 0, 0), FR_SHUF(x1, x2, 3, 3, 2, 2), 0, 2, 0, 2);
  b = FR_SHUF(FR_SHUF(x0, x1, 2, 2, 1, 1), x2, 0, 2, 0, 3);
}
inline void merge3_f32(__m128 r, __m128 g, __m128 b, __m128& x0, __m128& x1, __m128& x2) {
  x0 = FR_SHUF(FR_SHUF(r, g, 0, 1, 0, 0), FR_SHUF(b, r, 0, 0, 1, 1), 0, 2, 0, 2);
  x1 = FR_SHUF(FR_SHUF(g, b, 1, 1, 1, 1), FR_SHUF(r, g, 2, 2, 2, 2), 0, 2, 0, 2);
  x2 = FR_SHUF(FR_SHUF(b, r, 2, 2, 3, 3), FR_SHUF(g, b, 3, 3, 3, 3), 0, 2, 0, 2);
}
#undef FR_SHUF

template <int S>
void pixels_rgb32(const Geometry& g, const uint32_t* src, uint32_t* dst) {
  static_assert(S % 4 == 0, "4 pixels per step");
  constexpr int K = S * S;
  const auto& sz = g.size;
  float* const hi_c = reinterpret_cast<float*>(const_cast<uint32_t*>(g.down ? src : dst));
  float* const lo_c = reinterpret_cast<float*>(const_cast<uint32_t*>(g.down ? dst : src));
  const int64_t W = sz[kJ];
  const int64_t outer = sz[kN] * sz[kI];
  const int64_t grain = grain_for(K * 3 * W);
  at::parallel_for(0, outer, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* hi[S];
      float* const lo = pixel_row<float, S>(g, hi_c, lo_c, t, hi);
      for (int64_t j = 0; j < W; ++j) {
        float* const l = lo + j * 3 * K;
        for (int a = 0; a < S; ++a) {
          float* const h = hi[a] + j * 3 * S;
          for (int q = 0; q < S / 4; ++q) {
            float* const lq = l + a * S + 4 * q;  // channel c at lq + c * K
            if (g.down) {
              __m128 r, gg, b;
              split3_f32(_mm_loadu_ps(h + 12 * q), _mm_loadu_ps(h + 12 * q + 4), _mm_loadu_ps(h + 12 * q + 8), r, gg, b);
              _mm_storeu_ps(lq, r);
              _mm_storeu_ps(lq + K, gg);
              _mm_storeu_ps(lq + 2 * K, b);
            } else {
              __m128 x0, x1, x2;
              merge3_f32(_mm_loadu_ps(lq), _mm_loadu_ps(lq + K), _mm_loadu_ps(lq + 2 * K), x0, x1, x2);
              _mm_storeu_ps(h + 12 * q, x0);
              _mm_storeu_ps(h + 12 * q + 4, x1);
              _mm_storeu_ps(h + 12 * q + 8, x2);
            }
          }
        }
      }
    }
  });
}
#endif

template <typename T, int S>
bool try_fast(const Geometry& g, const T* src, T* dst) {
  const auto& hs = g.down ? g.src_stride : g.dst_stride;
  const auto& ls = g.down ? g.dst_stride : g.src_stride;
  if (!g.channels_last) {
    // hi rows dense (W stride 1 -> b stride 1, j stride S), lo rows dense (j stride 1).
    if (hs[kB] == 1 && hs[kJ] == S && ls[kJ] == 1) {
      rows_fast<T, S>(g, src, dst);
      return true;
    }
    return false;
  }
  // hi pixel vectors dense (C stride 1), lo pixel vectors dense (channel stride 1)
  if (!(hs[kC] == 1 && ls[kB] == 1 && ls[kA] == S && ls[kC] == S * S)) return false;
  const int64_t C = g.size[kC];
  // few channels, and both rows dense along j (pixels packed without gaps)
  if (C <= 4 && hs[kB] == C && hs[kJ] == S * C && ls[kJ] == C * S * S) {
    switch (C) {
      case 2: pixels_small_c<T, S, 2>(g, src, dst); return true;
      case 3:
#if defined(__x86_64__) && defined(__GNUC__)
        if constexpr (std::is_same_v<T, uint8_t> && S != 3) {
          if (simd::has_ssse3()) {
            pixels_rgb8<S>(g, src, dst);
            return true;
          }
        }
#endif
#if defined(__SSE2__)
        if constexpr (std::is_same_v<T, uint32_t> && S % 4 == 0) {
          pixels_rgb32<S>(g, src, dst);
          return true;
        }
#endif
        pixels_small_c<T, S, 3>(g, src, dst);
        return true;
      case 4: pixels_small_c<T, S, 4>(g, src, dst); return true;
      default: break;
    }
  }
  pixels_fast<T, S>(g, src, dst);
  return true;
}

template <typename T>
bool dispatch_fast(const Geometry& g, const T* src, T* dst) {
  switch (g.size[kA]) {
    case 2: return try_fast<T, 2>(g, src, dst);
    case 3: return try_fast<T, 3>(g, src, dst);
    case 4: return try_fast<T, 4>(g, src, dst);
    case 8: return try_fast<T, 8>(g, src, dst);
    default: return false;
  }
}

template <typename T>
void run_geometry(const Geometry& g, const T* src, T* dst) {
  if (dispatch_fast<T>(g, src, dst)) return;
  const auto& sz = g.size;
  const auto& ss = g.src_stride;
  const auto& ds = g.dst_stride;
  if (!g.channels_last) {
    const int64_t inner = sz[kA] * sz[kB] * sz[kJ];
    const int64_t outer = sz[kN] * sz[kC] * sz[kI];
    const int64_t grain = grain_for(inner);
    at::parallel_for(0, outer, grain, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t i = t % sz[kI];
        const int64_t c = (t / sz[kI]) % sz[kC];
        const int64_t n = t / (sz[kI] * sz[kC]);
        const int64_t s0 = n * ss[kN] + c * ss[kC] + i * ss[kI];
        const int64_t d0 = n * ds[kN] + c * ds[kC] + i * ds[kI];
        for (int64_t a = 0; a < sz[kA]; ++a) {
          for (int64_t b = 0; b < sz[kB]; ++b) {
            copy_run(dst + d0 + a * ds[kA] + b * ds[kB], ds[kJ],
                     src + s0 + a * ss[kA] + b * ss[kB], ss[kJ], sz[kJ]);
          }
        }
      }
    });
  } else {
    const int64_t inner = sz[kA] * sz[kB] * sz[kJ] * sz[kC];
    const int64_t outer = sz[kN] * sz[kI];
    const int64_t grain = grain_for(inner);
    at::parallel_for(0, outer, grain, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t i = t % sz[kI];
        const int64_t n = t / sz[kI];
        const int64_t s0 = n * ss[kN] + i * ss[kI];
        const int64_t d0 = n * ds[kN] + i * ds[kI];
        for (int64_t a = 0; a < sz[kA]; ++a) {
          for (int64_t j = 0; j < sz[kJ]; ++j) {
            for (int64_t b = 0; b < sz[kB]; ++b) {
              copy_run(dst + d0 + a * ds[kA] + j * ds[kJ] + b * ds[kB], ds[kC],
                       src + s0 + a * ss[kA] + j * ss[kJ] + b * ss[kB], ss[kC], sz[kC]);
            }
          }
        }
      }
    });
  }
}

template <int Bytes>
void run_bytes(const Geometry& g, const at::Tensor& x, const at::Tensor& out) {
  using T = typename Word<Bytes>::type;
  run_geometry<T>(g, reinterpret_cast<const T*>(x.const_data_ptr()),
                  reinterpret_cast<T*>(out.mutable_data_ptr()));
}

// ---- output allocation ---------------------------------------------------------------------
// Outputs of at least kHugeThreshold bytes go on transparent huge pages (common/huge_pages.h).
at::Tensor empty_output_cpu(const at::Tensor& x, int64_t s, bool down) {
  const auto sz = output_sizes(x, s, down);
  const int64_t numel = sz[0] * sz[1] * sz[2] * sz[3];
  if (static_cast<size_t>(numel) * x.element_size() < kHugeThreshold) return empty_output(x, s, down);
  return at::detail::empty_generic({sz[0], sz[1], sz[2], sz[3]}, huge_page_allocator(),
                                   c10::DispatchKeySet(c10::DispatchKey::CPU), x.scalar_type(),
                                   x.suggest_memory_format());
}

}  // namespace

void reshuffle_copy_cpu(const at::Tensor& x, const at::Tensor& out, int64_t s, bool down) {
  TORCH_CHECK(x.device().is_cpu() && out.device().is_cpu(),
              "reshuffle (CPU kernel): tensors must be on the CPU");
  TORCH_CHECK(!out.is_conj() && !out.is_neg(), "reshuffle: out must not be a lazily conjugated or negated view");
  if (out.numel() == 0) return;
  const at::Tensor xr = x.resolve_conj().resolve_neg();  // materialize lazy conj/neg views
  const Geometry g = make_geometry(xr, out, s, down);
  dispatch_element_size(xr, [&](auto bytes) { run_bytes<decltype(bytes)::value>(g, xr, out); });
}

TORCH_LIBRARY_IMPL(fastreshuffle, CPU, m) {
  register_backend<&reshuffle_copy_cpu, &empty_output_cpu>(m);
}

}  // namespace fastreshuffle

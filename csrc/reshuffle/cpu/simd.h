// SIMD primitives of the CPU reshuffle kernel (reshuffle_kernel.cpp): the K-way (de)interleaves
// between one dense stream of groups of K elements and K dense streams, on unsigned words of
// the elements' byte size.  Header-only; the instruction set beyond SSE2 (SSSE3, AVX2) is
// chosen at run time (has_ssse3(), has_avx2()).
#pragma once

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

namespace fastreshuffle {
namespace simd {
// Internal linkage, as when these lived in reshuffle_kernel.cpp (their one includer): direct
// calls, no exported symbols.
namespace {

// ---- fast paths (compile-time scale S, dense innermost dimension) --------------------------
// The core of every fast path is a K-way (de)interleave between one dense stream of n groups of
// K elements and K dense streams of n elements:
//   deinterleave: out[k][j] = in[j*K + k]        interleave: out[j*K + k] = in[k][j]
// When a group is 2, 4 or 8 bytes it is moved as one unsigned word and split / assembled with
// shifts (x86 and ARM are little-endian), which the compiler vectorizes into SIMD shift / pack
// sequences even for 1- and 2-byte elements; otherwise element loops the compiler vectorizes
// with shuffles.  `ivdep`: the K streams never overlap each other or the group stream.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the word (de)interleave assumes little-endian");

#if defined(__x86_64__) && defined(__GNUC__)
bool has_ssse3() {
  static const bool yes = __builtin_cpu_supports("ssse3");
  return yes;
}

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}
#endif

template <int Bytes> struct UWord;
template <> struct UWord<4> { using type = uint32_t; };
template <> struct UWord<8> { using type = uint64_t; };

// K = 2.  1- and 2-byte elements: SSE2 (baseline on x86-64) for the bulk, 32 input bytes per
// iteration (the compiler's own code for these is several times slower); then element loops
// over restrict-qualified streams, which the compiler vectorizes for wider elements.
#if defined(__SSE2__)
template <typename T>
constexpr bool kSse2Pair = std::is_same_v<T, uint8_t> || std::is_same_v<T, uint16_t>;

// Elements done with SSE2 (a multiple of 16 / sizeof(T)).
template <typename T>
inline int64_t deinterleave2_sse2(const T* __restrict__ in, T* __restrict__ o0, T* __restrict__ o1, int64_t n) {
  constexpr int64_t V = 16 / sizeof(T);
  int64_t j = 0;
  for (; j + V <= n; j += V) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * j));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * j + V));
    __m128i even, odd;
    if constexpr (sizeof(T) == 1) {
      const __m128i mask = _mm_set1_epi16(0x00FF);
      even = _mm_packus_epi16(_mm_and_si128(a, mask), _mm_and_si128(b, mask));
      odd = _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8));
    } else {
      // sign-extend each 16-bit half into 32 bits so that the signed pack is exact
      even = _mm_packs_epi32(_mm_srai_epi32(_mm_slli_epi32(a, 16), 16), _mm_srai_epi32(_mm_slli_epi32(b, 16), 16));
      odd = _mm_packs_epi32(_mm_srai_epi32(a, 16), _mm_srai_epi32(b, 16));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o0 + j), even);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o1 + j), odd);
  }
  return j;
}

template <typename T>
inline int64_t interleave2_sse2(T* __restrict__ out, const T* __restrict__ p0, const T* __restrict__ p1, int64_t n) {
  constexpr int64_t V = 16 / sizeof(T);
  int64_t j = 0;
  for (; j + V <= n; j += V) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p0 + j));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p1 + j));
    const __m128i lo = sizeof(T) == 1 ? _mm_unpacklo_epi8(a, b) : _mm_unpacklo_epi16(a, b);
    const __m128i hi = sizeof(T) == 1 ? _mm_unpackhi_epi8(a, b) : _mm_unpackhi_epi16(a, b);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * j), lo);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * j + V), hi);
  }
  return j;
}
#endif

template <typename T>
inline void deinterleave2(const T* __restrict__ in, T* __restrict__ o0, T* __restrict__ o1, int64_t n) {
  int64_t j = 0;
#if defined(__SSE2__)
  if constexpr (kSse2Pair<T>) j = deinterleave2_sse2(in, o0, o1, n);
#endif
  for (; j < n; ++j) {
    o0[j] = in[2 * j];
    o1[j] = in[2 * j + 1];
  }
}

template <typename T>
inline void interleave2(T* __restrict__ out, const T* __restrict__ p0, const T* __restrict__ p1, int64_t n) {
  int64_t j = 0;
#if defined(__SSE2__)
  if constexpr (kSse2Pair<T>) j = interleave2_sse2(out, p0, p1, n);
#endif
  for (; j < n; ++j) {
    out[2 * j] = p0[j];
    out[2 * j + 1] = p1[j];
  }
}

#if defined(__SSE2__)
// K = 8 bytes: an in-register transpose of 16 groups (128 bytes) per iteration, three rounds of
// the even/odd split (deinterleave) or of the byte unpack (interleave).
inline void split_u8(__m128i a, __m128i b, __m128i& e, __m128i& o) {
  const __m128i mask = _mm_set1_epi16(0x00FF);
  e = _mm_packus_epi16(_mm_and_si128(a, mask), _mm_and_si128(b, mask));
  o = _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8));
}

inline int64_t deinterleave8_sse2(const uint8_t* __restrict__ in, uint8_t* const* o, int64_t n, int64_t j = 0) {
  for (; j + 16 <= n; j += 16) {
    __m128i r[8];
    for (int q = 0; q < 8; ++q) r[q] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 8 * j + 16 * q));
    __m128i e1[4], o1[4];  // e1[p]: k = 0,2,4,6 of groups 4p..4p+3; o1[p]: k = 1,3,5,7
    for (int p = 0; p < 4; ++p) split_u8(r[2 * p], r[2 * p + 1], e1[p], o1[p]);
    __m128i ee[2], eo[2], oe[2], oo[2];  // k = {0,4}, {2,6}, {1,5}, {3,7} of groups 8h..8h+7
    for (int h = 0; h < 2; ++h) {
      split_u8(e1[2 * h], e1[2 * h + 1], ee[h], eo[h]);
      split_u8(o1[2 * h], o1[2 * h + 1], oe[h], oo[h]);
    }
    __m128i k[8];
    split_u8(ee[0], ee[1], k[0], k[4]);
    split_u8(eo[0], eo[1], k[2], k[6]);
    split_u8(oe[0], oe[1], k[1], k[5]);
    split_u8(oo[0], oo[1], k[3], k[7]);
    for (int q = 0; q < 8; ++q) _mm_storeu_si128(reinterpret_cast<__m128i*>(o[q] + j), k[q]);
  }
  return j;  // groups done
}

inline int64_t interleave8_sse2(uint8_t* __restrict__ out, const uint8_t* const* p, int64_t n, int64_t j = 0) {
  for (; j + 16 <= n; j += 16) {
    __m128i k[8];
    for (int q = 0; q < 8; ++q) k[q] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[q] + j));
    const __m128i ee[2] = {_mm_unpacklo_epi8(k[0], k[4]), _mm_unpackhi_epi8(k[0], k[4])};
    const __m128i eo[2] = {_mm_unpacklo_epi8(k[2], k[6]), _mm_unpackhi_epi8(k[2], k[6])};
    const __m128i oe[2] = {_mm_unpacklo_epi8(k[1], k[5]), _mm_unpackhi_epi8(k[1], k[5])};
    const __m128i oo[2] = {_mm_unpacklo_epi8(k[3], k[7]), _mm_unpackhi_epi8(k[3], k[7])};
    __m128i e1[4], o1[4];
    for (int h = 0; h < 2; ++h) {
      e1[2 * h] = _mm_unpacklo_epi8(ee[h], eo[h]);
      e1[2 * h + 1] = _mm_unpackhi_epi8(ee[h], eo[h]);
      o1[2 * h] = _mm_unpacklo_epi8(oe[h], oo[h]);
      o1[2 * h + 1] = _mm_unpackhi_epi8(oe[h], oo[h]);
    }
    for (int q = 0; q < 4; ++q) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 8 * j + 32 * q), _mm_unpacklo_epi8(e1[q], o1[q]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 8 * j + 32 * q + 16), _mm_unpackhi_epi8(e1[q], o1[q]));
    }
  }
  return j;
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same two transposes with AVX2, two independent 128-byte blocks per iteration: every
// instruction above works within 128-bit lanes, so lane 0 carries block j..j+15 and lane 1
// block j+16..j+31; the 16-byte stream pieces of the two lanes are then adjacent.  Chosen at run
// time where AVX2 exists (the 8-stream byte split is instruction-bound with SSE2).
__attribute__((target("avx2"))) inline void split_u8_avx2(__m256i a, __m256i b, __m256i& e, __m256i& o) {
  const __m256i mask = _mm256_set1_epi16(0x00FF);
  e = _mm256_packus_epi16(_mm256_and_si256(a, mask), _mm256_and_si256(b, mask));
  o = _mm256_packus_epi16(_mm256_srli_epi16(a, 8), _mm256_srli_epi16(b, 8));
}

__attribute__((target("avx2"))) inline __m256i load_2x128(const uint8_t* lo, const uint8_t* hi) {
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lo))),
                                 _mm_loadu_si128(reinterpret_cast<const __m128i*>(hi)), 1);
}

__attribute__((target("avx2"))) int64_t deinterleave8_avx2(const uint8_t* __restrict__ in, uint8_t* const* o,
                                                           int64_t n) {
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    __m256i r[8];
    for (int q = 0; q < 8; ++q) r[q] = load_2x128(in + 8 * j + 16 * q, in + 8 * j + 128 + 16 * q);
    __m256i e1[4], o1[4];
    for (int p = 0; p < 4; ++p) split_u8_avx2(r[2 * p], r[2 * p + 1], e1[p], o1[p]);
    __m256i ee[2], eo[2], oe[2], oo[2];
    for (int h = 0; h < 2; ++h) {
      split_u8_avx2(e1[2 * h], e1[2 * h + 1], ee[h], eo[h]);
      split_u8_avx2(o1[2 * h], o1[2 * h + 1], oe[h], oo[h]);
    }
    __m256i k[8];
    split_u8_avx2(ee[0], ee[1], k[0], k[4]);
    split_u8_avx2(eo[0], eo[1], k[2], k[6]);
    split_u8_avx2(oe[0], oe[1], k[1], k[5]);
    split_u8_avx2(oo[0], oo[1], k[3], k[7]);
    for (int q = 0; q < 8; ++q) _mm256_storeu_si256(reinterpret_cast<__m256i*>(o[q] + j), k[q]);
  }
  return j;
}

__attribute__((target("avx2"))) int64_t interleave8_avx2(uint8_t* __restrict__ out, const uint8_t* const* p,
                                                         int64_t n) {
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    __m256i k[8];
    for (int q = 0; q < 8; ++q) k[q] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p[q] + j));
    const __m256i ee[2] = {_mm256_unpacklo_epi8(k[0], k[4]), _mm256_unpackhi_epi8(k[0], k[4])};
    const __m256i eo[2] = {_mm256_unpacklo_epi8(k[2], k[6]), _mm256_unpackhi_epi8(k[2], k[6])};
    const __m256i oe[2] = {_mm256_unpacklo_epi8(k[1], k[5]), _mm256_unpackhi_epi8(k[1], k[5])};
    const __m256i oo[2] = {_mm256_unpacklo_epi8(k[3], k[7]), _mm256_unpackhi_epi8(k[3], k[7])};
    __m256i e1[4], o1[4];
    for (int h = 0; h < 2; ++h) {
      e1[2 * h] = _mm256_unpacklo_epi8(ee[h], eo[h]);
      e1[2 * h + 1] = _mm256_unpackhi_epi8(ee[h], eo[h]);
      o1[2 * h] = _mm256_unpacklo_epi8(oe[h], oo[h]);
      o1[2 * h + 1] = _mm256_unpackhi_epi8(oe[h], oo[h]);
    }
    for (int q = 0; q < 4; ++q) {
      const __m256i lo = _mm256_unpacklo_epi8(e1[q], o1[q]);
      const __m256i hi = _mm256_unpackhi_epi8(e1[q], o1[q]);
      uint8_t* d = out + 8 * j + 32 * q;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d), _mm256_castsi256_si128(lo));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 16), _mm256_castsi256_si128(hi));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 128), _mm256_extracti128_si256(lo, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 144), _mm256_extracti128_si256(hi, 1));
    }
  }
  return j;
}
#endif

// K = 4 groups of 4-byte elements (float32 channels_last, scale 2): a 4 x 4 transpose of 32-bit
// lanes per 4 groups (8 unpacks per 64 bytes; the compiler's element loop is scalar).  The
// transpose is its own inverse, so both directions use it.
inline void transpose4x4_u32(__m128i* r) {
  const __m128i t0 = _mm_unpacklo_epi32(r[0], r[1]), t1 = _mm_unpackhi_epi32(r[0], r[1]);
  const __m128i t2 = _mm_unpacklo_epi32(r[2], r[3]), t3 = _mm_unpackhi_epi32(r[2], r[3]);
  r[0] = _mm_unpacklo_epi64(t0, t2);
  r[1] = _mm_unpackhi_epi64(t0, t2);
  r[2] = _mm_unpacklo_epi64(t1, t3);
  r[3] = _mm_unpackhi_epi64(t1, t3);
}

inline int64_t deinterleave4_u32(const uint32_t* __restrict__ in, uint32_t* const* o, int64_t n) {
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    __m128i r[4];
    for (int q = 0; q < 4; ++q) r[q] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 4 * (j + q)));
    transpose4x4_u32(r);
    for (int k = 0; k < 4; ++k) _mm_storeu_si128(reinterpret_cast<__m128i*>(o[k] + j), r[k]);
  }
  return j;
}

inline int64_t interleave4_u32(uint32_t* __restrict__ out, const uint32_t* const* p, int64_t n) {
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    __m128i r[4];
    for (int k = 0; k < 4; ++k) r[k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[k] + j));
    transpose4x4_u32(r);
    for (int q = 0; q < 4; ++q) _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4 * (j + q)), r[q]);
  }
  return j;
}

#if defined(__x86_64__) && defined(__GNUC__)
// K = 4 groups of bytes (uint8 channels_last, scale 2): per 16 groups, one SSSE3 byte shuffle
// per register gathers byte k of its 4 groups into 32-bit lane k, then the 4 x 4 lane transpose
// above; the word loop it replaces stores one byte at a time.
__attribute__((target("ssse3"))) int64_t deinterleave4_u8(const uint8_t* __restrict__ in, uint8_t* const* o,
                                                          int64_t n) {
  const __m128i m = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);  // 4k+g <- 4g+k
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m128i r[4];
    for (int q = 0; q < 4; ++q)
      r[q] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 4 * j + 16 * q)), m);
    transpose4x4_u32(r);
    for (int k = 0; k < 4; ++k) _mm_storeu_si128(reinterpret_cast<__m128i*>(o[k] + j), r[k]);
  }
  return j;
}

__attribute__((target("ssse3"))) int64_t interleave4_u8(uint8_t* __restrict__ out, const uint8_t* const* p,
                                                        int64_t n) {
  const __m128i m = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);  // self-inverse
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m128i r[4];
    for (int k = 0; k < 4; ++k) r[k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[k] + j));
    transpose4x4_u32(r);
    for (int q = 0; q < 4; ++q)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4 * j + 16 * q), _mm_shuffle_epi8(r[q], m));
  }
  return j;
}
#endif
#endif

// Power-of-two K >= 16 with 1- and 2-byte elements: log2(K) rounds of the K = 2 split, the inner
// rounds on chunks that stay in L1 (the word split below needs K * sizeof(T) <= 8 bytes).
template <int K>
constexpr int64_t kChunk = 4096 / K;  // groups per chunk: K * kChunk * sizeof(T) <= 8 KiB

template <typename T, int K>
inline void deinterleave_pow2(const T* in, T* const* outs, int64_t n) {
  if constexpr (K == 2) {
    deinterleave2(in, outs[0], outs[1], n);
  } else {
    T even[kChunk<K> * K / 2], odd[kChunk<K> * K / 2];
    for (int64_t j0 = 0; j0 < n; j0 += kChunk<K>) {
      const int64_t m = std::min(kChunk<K>, n - j0);
      deinterleave2(in + j0 * K, even, odd, m * K / 2);  // even: k = 0, 2, ...; odd: k = 1, 3, ...
      T* oe[K / 2];
      T* oo[K / 2];
      for (int k = 0; k < K / 2; ++k) {
        oe[k] = outs[2 * k] + j0;
        oo[k] = outs[2 * k + 1] + j0;
      }
      deinterleave_pow2<T, K / 2>(even, oe, m);
      deinterleave_pow2<T, K / 2>(odd, oo, m);
    }
  }
}

template <typename T, int K>
inline void interleave_pow2(T* out, const T* const* ins, int64_t n) {
  if constexpr (K == 2) {
    interleave2(out, ins[0], ins[1], n);
  } else {
    T even[kChunk<K> * K / 2], odd[kChunk<K> * K / 2];
    for (int64_t j0 = 0; j0 < n; j0 += kChunk<K>) {
      const int64_t m = std::min(kChunk<K>, n - j0);
      const T* ie[K / 2];
      const T* io[K / 2];
      for (int k = 0; k < K / 2; ++k) {
        ie[k] = ins[2 * k] + j0;
        io[k] = ins[2 * k + 1] + j0;
      }
      interleave_pow2<T, K / 2>(even, ie, m);
      interleave_pow2<T, K / 2>(odd, io, m);
      interleave2(out + j0 * K, even, odd, m * K / 2);
    }
  }
}

template <typename T, int K>
inline void deinterleave(const T* __restrict__ in, T* const* outs, int64_t n) {
  constexpr int G = K * static_cast<int>(sizeof(T));
  if constexpr (K == 2 || (sizeof(T) <= 2 && (K & (K - 1)) == 0 && K >= 16)) {
    deinterleave_pow2<T, K>(in, outs, n);
  } else {
    T* o[K];
    for (int k = 0; k < K; ++k) o[k] = outs[k];
    int64_t j0 = 0;
#if defined(__SSE2__)
    if constexpr (std::is_same_v<T, uint8_t> && K == 8) {
#if defined(__x86_64__) && defined(__GNUC__)
      if (has_avx2()) j0 = deinterleave8_avx2(in, o, n);
#endif
      j0 = deinterleave8_sse2(in, o, n, j0);
    }
    if constexpr (std::is_same_v<T, uint32_t> && K == 4) j0 = deinterleave4_u32(in, o, n);
#if defined(__x86_64__) && defined(__GNUC__)
    if constexpr (std::is_same_v<T, uint8_t> && K == 4) {
      if (has_ssse3()) j0 = deinterleave4_u8(in, o, n);
    }
#endif
#endif
    if constexpr (std::is_integral_v<T> && (G == 4 || G == 8)) {
      using W = typename UWord<G>::type;
#pragma GCC ivdep
      for (int64_t j = j0; j < n; ++j) {
        W w;
        std::memcpy(&w, in + j * K, G);
        for (int k = 0; k < K; ++k) o[k][j] = static_cast<T>(w >> (8 * sizeof(T) * k));
      }
    } else {
#pragma GCC ivdep
      for (int64_t j = j0; j < n; ++j)
        for (int k = 0; k < K; ++k) o[k][j] = in[j * K + k];
    }
  }
}

template <typename T, int K>
inline void interleave(T* __restrict__ out, const T* const* ins, int64_t n) {
  constexpr int G = K * static_cast<int>(sizeof(T));
  if constexpr (K == 2 || (sizeof(T) <= 2 && (K & (K - 1)) == 0 && K >= 16)) {
    interleave_pow2<T, K>(out, ins, n);
  } else {
    const T* p[K];
    for (int k = 0; k < K; ++k) p[k] = ins[k];
    int64_t j0 = 0;
#if defined(__SSE2__)
    if constexpr (std::is_same_v<T, uint8_t> && K == 8) {
#if defined(__x86_64__) && defined(__GNUC__)
      if (has_avx2()) j0 = interleave8_avx2(out, p, n);
#endif
      j0 = interleave8_sse2(out, p, n, j0);
    }
    if constexpr (std::is_same_v<T, uint32_t> && K == 4) j0 = interleave4_u32(out, p, n);
#if defined(__x86_64__) && defined(__GNUC__)
    if constexpr (std::is_same_v<T, uint8_t> && K == 4) {
      if (has_ssse3()) j0 = interleave4_u8(out, p, n);
    }
#endif
#endif
    if constexpr (std::is_integral_v<T> && (G == 4 || G == 8)) {
      using W = typename UWord<G>::type;
#pragma GCC ivdep
      for (int64_t j = j0; j < n; ++j) {
        W w = 0;
        for (int k = 0; k < K; ++k) w |= static_cast<W>(p[k][j]) << (8 * sizeof(T) * k);
        std::memcpy(out + j * K, &w, G);
      }
    } else {
#pragma GCC ivdep
      for (int64_t j = j0; j < n; ++j)
        for (int k = 0; k < K; ++k) out[j * K + k] = p[k][j];
    }
  }
}

}  // namespace
}  // namespace simd
}  // namespace fastreshuffle

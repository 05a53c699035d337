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
//      a small transpose with unit-stride access to the low-resolution vector.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "../reshuffle.h"

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

// ---- fast paths (compile-time scale S, dense innermost dimension) --------------------------
// s = 2 with restrict-qualified streams: the compiler turns these into SIMD (un)pack sequences.
template <typename T>
inline void interleave2(T* __restrict__ hi, const T* __restrict__ l0, const T* __restrict__ l1,
                        int64_t w) {
  for (int64_t j = 0; j < w; ++j) {
    hi[2 * j] = l0[j];
    hi[2 * j + 1] = l1[j];
  }
}

template <typename T>
inline void deinterleave2(const T* __restrict__ hi, T* __restrict__ l0, T* __restrict__ l1,
                          int64_t w) {
  for (int64_t j = 0; j < w; ++j) {
    l0[j] = hi[2 * j];
    l1[j] = hi[2 * j + 1];
  }
}

template <typename T, int S>
void rows_fast(const Geometry& g, const T* src, T* dst) {
  // hi: the high-resolution tensor, lo: the low-resolution one (element strides per 6-D dim)
  const auto& sz = g.size;
  const auto& hs = g.down ? g.src_stride : g.dst_stride;
  const auto& ls = g.down ? g.dst_stride : g.src_stride;
  const T* hi_c = g.down ? src : dst;
  const T* lo_c = g.down ? dst : src;
  const int64_t W = sz[kJ];
  const int64_t outer = sz[kN] * sz[kC] * sz[kI];
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, S * S * W));
  at::parallel_for(0, outer, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i = t % sz[kI];
      const int64_t c = (t / sz[kI]) % sz[kC];
      const int64_t n = t / (sz[kI] * sz[kC]);
      for (int64_t a = 0; a < S; ++a) {
        T* hi = const_cast<T*>(hi_c) + n * hs[kN] + c * hs[kC] + i * hs[kI] + a * hs[kA];
        T* lo[S];
        for (int b = 0; b < S; ++b)
          lo[b] = const_cast<T*>(lo_c) + n * ls[kN] + c * ls[kC] + i * ls[kI] + a * ls[kA] + b * ls[kB];
        if constexpr (S == 2) {
          if (g.down) {
            deinterleave2(hi, lo[0], lo[1], W);
          } else {
            interleave2(hi, lo[0], lo[1], W);
          }
        } else if (g.down) {
          for (int64_t j = 0; j < W; ++j)
            for (int b = 0; b < S; ++b) lo[b][j] = hi[j * S + b];
        } else {
          for (int64_t j = 0; j < W; ++j)
            for (int b = 0; b < S; ++b) hi[j * S + b] = lo[b][j];
        }
      }
    }
  });
}

template <typename T, int S>
void pixels_fast(const Geometry& g, const T* src, T* dst) {
  const auto& sz = g.size;
  const auto& hs = g.down ? g.src_stride : g.dst_stride;
  const auto& ls = g.down ? g.dst_stride : g.src_stride;
  const T* hi_c = g.down ? src : dst;
  const T* lo_c = g.down ? dst : src;
  const int64_t C = sz[kC];
  const int64_t outer = sz[kN] * sz[kI];
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, S * S * C * sz[kJ]));
  at::parallel_for(0, outer, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i = t % sz[kI];
      const int64_t n = t / sz[kI];
      // element offsets of the S*S high-resolution pixels of low-resolution pixel (i, 0)
      int64_t hoff[S * S];
      for (int a = 0; a < S; ++a)
        for (int b = 0; b < S; ++b) hoff[a * S + b] = n * hs[kN] + i * hs[kI] + a * hs[kA] + b * hs[kB];
      T* const hi_base = const_cast<T*>(hi_c);
      T* const lo_row = const_cast<T*>(lo_c) + n * ls[kN] + i * ls[kI];
      const int64_t hj = hs[kJ], lj = ls[kJ];
      for (int64_t j = 0; j < sz[kJ]; ++j) {
        T* lo = lo_row + j * lj;  // C*S*S dense
        T* hi = hi_base + j * hj;
        if (g.down) {
          for (int64_t c = 0; c < C; ++c)
            for (int k = 0; k < S * S; ++k) lo[c * S * S + k] = hi[hoff[k] + c];
        } else {
          for (int64_t c = 0; c < C; ++c)
            for (int k = 0; k < S * S; ++k) hi[hoff[k] + c] = lo[c * S * S + k];
        }
      }
    }
  });
}

template <typename T, int S>
bool try_fast(const Geometry& g, const T* src, T* dst) {
  const auto& hs = g.down ? g.src_stride : g.dst_stride;
  const auto& ls = g.down ? g.dst_stride : g.src_stride;
  if (!g.channels_last) {
    // hi rows dense (W stride 1 -> b stride 1, j stride S), lo rows dense (j stride 1).
    // For 1- and 2-byte elements and s > 2 the generic per-b strided runs are faster (measured).
    if ((S == 2 || sizeof(T) >= 4) && hs[kB] == 1 && hs[kJ] == S && ls[kJ] == 1) {
      rows_fast<T, S>(g, src, dst);
      return true;
    }
  } else if (hs[kC] == 1 && ls[kB] == 1 && ls[kA] == S && ls[kC] == S * S) {
    // hi pixel vectors dense (C stride 1), lo pixel vectors dense (channel stride 1)
    pixels_fast<T, S>(g, src, dst);
    return true;
  }
  return false;
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
  constexpr int64_t kMinWork = 1 << 15;  // elements per task
  if (!g.channels_last) {
    const int64_t inner = sz[kA] * sz[kB] * sz[kJ];
    const int64_t outer = sz[kN] * sz[kC] * sz[kI];
    const int64_t grain = std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, inner));
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
    const int64_t grain = std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, inner));
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
  register_backend<&reshuffle_copy_cpu>(m);
}

}  // namespace fastreshuffle

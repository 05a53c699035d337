// CPU kernel for the reshuffle ops: a multi-threaded 6-D strided copy moving elements by
// their byte size (bit-exact for every dtype), with 64-bit index arithmetic throughout.
//
// Loop orders (both read and write each high-resolution row / pixel once, in memory order):
//   A (NCHW-like):         parallel over (n, c, i); then a, b, and a run over j
//   B (channels-last-like): parallel over (n, i);   then a, j, b, and a run over c
#include <ATen/Parallel.h>
#include <torch/library.h>

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

template <typename T>
void run_geometry(const Geometry& g, const T* src, T* dst) {
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

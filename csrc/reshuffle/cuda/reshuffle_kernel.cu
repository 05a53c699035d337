// CUDA kernels for the reshuffle ops: the same 6-D strided copy as the CPU kernel.
//
// Fast path: vectorized micro-tiles (16-byte loads and stores, permuted in registers) for
// NCHW, many-channel channels-last at scale 2 and RGB channels-last, when sizes and 16-byte
// alignment allow (tiles::vec_mode) and 32-bit indices suffice.  Otherwise two general paths,
// both correct for any strides (index logic in reshuffle_tiles.cuh, checked on the
// host by tests/test_cuda_index_host.py), chosen by the high-resolution tensor's layout:
//   NCHW-like:         one block per (n, c, i) low-resolution row; threads walk the s
//                      high-resolution rows in memory order (fully coalesced), the
//                      low-resolution side in s runs of 32/s consecutive elements per warp;
//   channels-last-like: one block per tile of (n, i, pixels, channels), staged through shared
//                      memory so that both sides are read / written in memory order.
// Elements move by byte size (bit-exact for all dtypes); 32-bit index arithmetic when every
// offset fits, 64-bit otherwise; compile-time s for 2, 3, 4, 8.  Launched on the current stream.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <type_traits>

#include "reshuffle/reshuffle.h"
#include "reshuffle/cuda/reshuffle_tiles.cuh"

namespace fastreshuffle {
namespace {

template <typename T, int S, typename Index>
__global__ void rows_kernel(const T* __restrict__ src, T* __restrict__ dst, tiles::Geom<Index> g) {
  const Index groups = tiles::nchw_groups(g);
  for (Index grp = blockIdx.x; grp < groups; grp += gridDim.x)
    tiles::nchw_group<T, S, Index>(src, dst, g, grp, static_cast<Index>(threadIdx.x),
                                   static_cast<Index>(blockDim.x));
}

template <typename T, int S, typename Index>
__global__ void pixels_kernel(const T* __restrict__ src, T* __restrict__ dst, tiles::Geom<Index> g) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);
  const Index items = tiles::nhwc_items(g);
  for (Index it = blockIdx.x; it < items; it += gridDim.x) {
    const tiles::PixelItem<Index> p = tiles::nhwc_item(g, it);
    tiles::nhwc_load<T, S, Index>(src, smem, g, p, static_cast<Index>(threadIdx.x),
                                  static_cast<Index>(blockDim.x));
    __syncthreads();
    tiles::nhwc_store<T, S, Index>(smem, dst, g, p, static_cast<Index>(threadIdx.x),
                                   static_cast<Index>(blockDim.x));
    __syncthreads();
  }
}

// Vectorized micro-tiles (reshuffle_tiles.cuh): one per thread, grid-stride.
template <typename T, int Mode, typename Map, typename Index>
__global__ void __launch_bounds__(256) vec_kernel(const T* __restrict__ src, T* __restrict__ dst,
                                                  tiles::Geom<Index> g) {
  const Index n = tiles::vec_tiles<Mode, Map, Index>(g);
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index t = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; t < n; t += step)
    tiles::vec_item<T, Mode, Map, Index>(src, dst, g, t);
}

template <typename Index>
tiles::Geom<Index> make_tiles_geom(const Geometry& g) {
  tiles::Geom<Index> t;
  const auto& hs = g.down ? g.src_stride : g.dst_stride;
  const auto& ls = g.down ? g.dst_stride : g.src_stride;
  for (int k = 0; k < 6; ++k) {
    t.size[k] = static_cast<Index>(g.size[k]);
    t.hs[k] = static_cast<Index>(hs[k]);
    t.ls[k] = static_cast<Index>(ls[k]);
  }
  t.down = g.down;
  tiles::nhwc_tiles<Index>(t.size[kC], t.size[kA], &t.tile_c, &t.tile_j);
  return t;
}

bool fits_int32(const Geometry& g) {
  const int64_t limit = std::numeric_limits<int32_t>::max();
  if (g.numel() > limit / 2) return false;  // also keeps grid-stride counters from overflowing
  int64_t max_src = 0, max_dst = 0;
  for (int k = 0; k < 6; ++k) {
    max_src += (g.size[k] - 1) * std::abs(g.src_stride[k]);
    max_dst += (g.size[k] - 1) * std::abs(g.dst_stride[k]);
  }
  // block-local products (e.g. tile slots) stay below numel; strides times sizes below these
  return max_src <= limit / 2 && max_dst <= limit / 2;
}

int round_threads(int64_t work, int max_threads) {
  const int64_t t = std::min<int64_t>(std::max<int64_t>(work, 32), max_threads);
  return static_cast<int>((t + 31) / 32 * 32);
}

template <typename T, int S, typename Index>
void launch_paths(const Geometry& geo, const tiles::Geom<Index>& g, const T* src, T* dst, int max_blocks,
                  cudaStream_t stream) {
  const int64_t s = geo.size[kA];
  if (geo.channels_last && s * s <= tiles::kTileElems) {
    const int64_t items = tiles::nhwc_items(g);
    const int64_t tile = static_cast<int64_t>(g.tile_c) * g.tile_j * s * s;
    const int threads = round_threads(tile, 256);
    const int blocks = static_cast<int>(std::min<int64_t>(items, max_blocks));
    const size_t smem = static_cast<size_t>(tile) * sizeof(T);  // <= 1024 * 16 bytes
    pixels_kernel<T, S, Index><<<blocks, threads, smem, stream>>>(src, dst, g);
  } else {
    const int64_t groups = tiles::nchw_groups(g);
    const int threads = round_threads(geo.size[kJ] * s, 256);
    const int blocks = static_cast<int>(std::min<int64_t>(groups, max_blocks));
    rows_kernel<T, S, Index><<<blocks, threads, 0, stream>>>(src, dst, g);
  }
}

template <typename T, typename Index>
void launch_index(const Geometry& geo, const T* src, T* dst, int max_blocks, cudaStream_t stream) {
  const tiles::Geom<Index> g = make_tiles_geom<Index>(geo);
  if constexpr (std::is_same_v<Index, int32_t>) {  // vectorized micro-tiles where they apply
    const int mode = tiles::vec_mode<Index>(g, static_cast<int>(sizeof(T)), reinterpret_cast<uint64_t>(src),
                                            reinterpret_cast<uint64_t>(dst));
    const bool done = mode != tiles::kVecNone && tiles::vec_dispatch<T>(mode, geo.size[kA], [&](auto m, auto map) {
      constexpr int Mode = decltype(m)::value;
      using Map = decltype(map);
      const int64_t n = tiles::vec_tiles<Mode, Map, Index>(g);
      const int blocks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + 255) / 256, max_blocks)));
      vec_kernel<T, Mode, Map, Index><<<blocks, 256, 0, stream>>>(src, dst, g);
    });
    if (done) return;
  }
  switch (geo.size[kA]) {
    case 2: launch_paths<T, 2, Index>(geo, g, src, dst, max_blocks, stream); break;
    case 3: launch_paths<T, 3, Index>(geo, g, src, dst, max_blocks, stream); break;
    case 4: launch_paths<T, 4, Index>(geo, g, src, dst, max_blocks, stream); break;
    case 8: launch_paths<T, 8, Index>(geo, g, src, dst, max_blocks, stream); break;
    default: launch_paths<T, 0, Index>(geo, g, src, dst, max_blocks, stream); break;
  }
}

template <int Bytes>
void launch(const Geometry& g, const at::Tensor& x, const at::Tensor& out) {
  using T = typename Word<Bytes>::type;
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, x.device().index()));
  const int max_blocks = std::max(sms, 1) * 32;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  const T* src = reinterpret_cast<const T*>(x.const_data_ptr());
  T* dst = reinterpret_cast<T*>(out.mutable_data_ptr());
  if (fits_int32(g)) {
    launch_index<T, int32_t>(g, src, dst, max_blocks, stream);
  } else {
    launch_index<T, int64_t>(g, src, dst, max_blocks, stream);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void reshuffle_copy_cuda(const at::Tensor& x, const at::Tensor& out, int64_t s, bool down) {
  TORCH_CHECK(x.is_cuda() && out.is_cuda(), "reshuffle (CUDA kernel): tensors must be on a CUDA device");
  TORCH_CHECK(!out.is_conj() && !out.is_neg(), "reshuffle: out must not be a lazily conjugated or negated view");
  if (out.numel() == 0) return;
  const at::Tensor xr = x.resolve_conj().resolve_neg();  // materialize lazy conj/neg views
  const c10::cuda::CUDAGuard guard(x.device());
  const Geometry g = make_geometry(xr, out, s, down);
  dispatch_element_size(xr, [&](auto bytes) { launch<decltype(bytes)::value>(g, xr, out); });
}

TORCH_LIBRARY_IMPL(fastreshuffle, CUDA, m) {
  register_backend<&reshuffle_copy_cuda>(m);
}

}  // namespace fastreshuffle

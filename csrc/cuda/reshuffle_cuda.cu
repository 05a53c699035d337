// CUDA kernel for the reshuffle ops: the same 6-D strided copy as the CPU kernel.
//
// Threads walk the elements in the memory order of the high-resolution tensor, so its reads
// (down) or writes (up) are fully coalesced; on the low-resolution side a warp touches s runs
// of 32/s consecutive elements each.  Elements move by byte size (bit-exact for all dtypes).
// 32-bit index arithmetic is used when every offset fits, 64-bit otherwise.  Launched on the
// current stream.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>

#include "../reshuffle.h"

namespace fastreshuffle {
namespace {


template <typename Index>
struct Params {
  Index size[6];        // dims in iteration order, outermost first
  Index src_stride[6];  // in elements
  Index dst_stride[6];
  Index numel;
};

template <typename T, typename Index>
__global__ void reshuffle_kernel(const T* __restrict__ src, T* __restrict__ dst, Params<Index> p) {
  const Index step = static_cast<Index>(blockDim.x) * gridDim.x;
  for (Index e = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; e < p.numel; e += step) {
    Index rem = e;
    Index so = 0, d = 0;
#pragma unroll
    for (int k = 5; k >= 0; --k) {
      const Index idx = rem % p.size[k];
      rem /= p.size[k];
      so += idx * p.src_stride[k];
      d += idx * p.dst_stride[k];
    }
    dst[d] = src[so];
  }
}

template <typename Index>
Params<Index> make_params(const Geometry& g) {
  // Iteration order of the high-resolution tensor's memory layout.
  static const int kNchw[6] = {kN, kC, kI, kA, kJ, kB};
  static const int kNhwc[6] = {kN, kI, kA, kJ, kB, kC};
  const int* order = g.channels_last ? kNhwc : kNchw;
  Params<Index> p;
  for (int k = 0; k < 6; ++k) {
    p.size[k] = static_cast<Index>(g.size[order[k]]);
    p.src_stride[k] = static_cast<Index>(g.src_stride[order[k]]);
    p.dst_stride[k] = static_cast<Index>(g.dst_stride[order[k]]);
  }
  p.numel = static_cast<Index>(g.numel());
  return p;
}

bool fits_int32(const Geometry& g) {
  const int64_t limit = std::numeric_limits<int32_t>::max();
  if (g.numel() > limit) return false;
  int64_t max_src = 0, max_dst = 0;
  for (int k = 0; k < 6; ++k) {
    max_src += (g.size[k] - 1) * std::abs(g.src_stride[k]);
    max_dst += (g.size[k] - 1) * std::abs(g.dst_stride[k]);
  }
  return max_src <= limit && max_dst <= limit;
}

template <int Bytes>
void launch(const Geometry& g, const at::Tensor& x, const at::Tensor& out) {
  using T = typename Word<Bytes>::type;
  const int64_t n = g.numel();
  const int threads = 256;
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, x.device().index()));
  const int64_t max_blocks = static_cast<int64_t>(std::max(sms, 1)) * 32;
  const int blocks = static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, max_blocks));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  const T* src = reinterpret_cast<const T*>(x.const_data_ptr());
  T* dst = reinterpret_cast<T*>(out.mutable_data_ptr());
  if (fits_int32(g)) {
    reshuffle_kernel<T, int32_t><<<blocks, threads, 0, stream>>>(src, dst, make_params<int32_t>(g));
  } else {
    reshuffle_kernel<T, int64_t><<<blocks, threads, 0, stream>>>(src, dst, make_params<int64_t>(g));
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

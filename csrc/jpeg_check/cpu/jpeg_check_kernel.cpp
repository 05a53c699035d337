// CPU kernel of fastreshuffle::jpeg_scan_check: the walk of jpeg_scan.h over a uint8 tensor.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "jpeg_check/jpeg_scan.h"

namespace fastreshuffle {
namespace {

std::vector<int64_t> jpeg_scan_check_cpu(const at::Tensor& data) {
  TORCH_CHECK(data.scalar_type() == at::kByte && data.dim() == 1,
              "jpeg_scan_check: data must be a 1-D uint8 tensor, got ", data.scalar_type(), " of shape ", data.sizes());
  const at::Tensor c = data.contiguous();
  const jpeg_scan::Result r = jpeg_scan::check(c.data_ptr<uint8_t>(), c.numel());
  return {r.status, r.offset, r.blocks_done, r.blocks_total, r.scan};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastreshuffle, CPU, m) {
  m.impl("jpeg_scan_check", &jpeg_scan_check_cpu);
}

}  // namespace fastreshuffle

// Schema of the JPEG scan check (kernel: cpu/jpeg_check_kernel.cpp; the walk: jpeg_scan.h).
#include <torch/library.h>

namespace fastreshuffle {

TORCH_LIBRARY_FRAGMENT(fastreshuffle, m) {
  // A JPEG file's bytes (uint8, 1-D) -> [status, offset, blocks_done, blocks_total, scan]: whether
  // every block of every scan of its first frame is there and well formed (status 0), and where not.
  // Statuses: jpeg_scan::Status.  Python: fastreshuffle/io/jpeg_check.py.
  m.def("jpeg_scan_check(Tensor data) -> int[]");
}

}  // namespace fastreshuffle

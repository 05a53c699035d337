// Schemas of the reshuffle ops (paper Eq. 3 / Eq. 4).  Kernels: cpu/reshuffle_kernel.cpp and
// cuda/reshuffle_kernel.cu; shared geometry and checks: reshuffle.h.
#include <torch/library.h>

namespace fastreshuffle {

TORCH_LIBRARY_FRAGMENT(fastreshuffle, m) {
  // Paper Eq. 3: Y[n, c*s*s + a*s + b, i, j] = X[n, c, i*s + a, j*s + b]  (pixel_unshuffle)
  m.def("reshuffle_down(Tensor x, int scale) -> Tensor");
  // Paper Eq. 4: Y[n, c, i*s + a, j*s + b] = X[n, c*s*s + a*s + b, i, j]  (pixel_shuffle)
  m.def("reshuffle_up(Tensor x, int scale) -> Tensor");
  // Out-variants: write into a given tensor or view (e.g. a channel slice of a block buffer).
  m.def("reshuffle_down_out(Tensor x, int scale, Tensor(a!) out) -> ()");
  m.def("reshuffle_up_out(Tensor x, int scale, Tensor(a!) out) -> ()");
}

}  // namespace fastreshuffle

// Op schemas (defined once) and the Python module stub for fastreshuffle._C.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing fastreshuffle._C from Python runs the static TORCH_LIBRARY registrations below.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace fastreshuffle {

bool built_with_cuda() {
#ifdef FASTRESHUFFLE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

TORCH_LIBRARY(fastreshuffle, m) {
  // Paper Eq. 3: Y[n, c*s*s + a*s + b, i, j] = X[n, c, i*s + a, j*s + b]  (pixel_unshuffle)
  m.def("reshuffle_down(Tensor x, int scale) -> Tensor");
  // Paper Eq. 4: Y[n, c, i*s + a, j*s + b] = X[n, c*s*s + a*s + b, i, j]  (pixel_shuffle)
  m.def("reshuffle_up(Tensor x, int scale) -> Tensor");
  // Out-variants: write into a given tensor or view (e.g. a channel slice of a block buffer).
  m.def("reshuffle_down_out(Tensor x, int scale, Tensor(a!) out) -> ()");
  m.def("reshuffle_up_out(Tensor x, int scale, Tensor(a!) out) -> ()");
  m.def("built_with_cuda() -> bool", &built_with_cuda);
  // Dense layer CPU path: x[r, k] = elu(x[r, k] + bias[k]) in place (x: rows x channels).
  m.def("bias_elu_(Tensor(a!) x, Tensor bias) -> ()");
}

}  // namespace fastreshuffle

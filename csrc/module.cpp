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

int64_t dense_cpu_isa();  // dense_layer/cpu/dense_layer_kernel.cpp

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
  // Dense layer CPU kernel (float32, channels-contiguous pixels): y = conv3x3(elu(conv1x1(x) + b1)) + b3
  // written into y (e.g. the channel slice after the prefix x of a channels-last block buffer).
  // isa: 0 = best available, 1 = AVX2 + FMA, 2 = AVX-512; algo (3x3): 0 = auto, 1 = direct,
  // 2 = Winograd F(2x2, 3x3) with the intermediate in a row ring, 3 = Winograd on the whole intermediate.
  m.def("dense_layer_cpu_(Tensor x, Tensor(a!) y, Tensor w1, Tensor b1, Tensor w3, Tensor b3, int isa=0, int algo=0) -> ()");
  // Best instruction set of that kernel on this CPU: 0 none (use the torch composition), 1, 2 as above.
  m.def("dense_cpu_isa() -> int", &dense_cpu_isa);
}

}  // namespace fastreshuffle

// The Python module stub for fastreshuffle._C and the op namespace's own op, built_with_cuda.
// The ops' schemas are defined by their folders (TORCH_LIBRARY_FRAGMENT):
//   reshuffle/reshuffle.cpp      reshuffle_down, reshuffle_up, reshuffle_down_out, reshuffle_up_out
//   dense_layer/dense_layer.cpp  bias_elu_, dense_layer_cpu_, dense_cpu_isa
//   jpeg_check/jpeg_check.cpp    jpeg_scan_check
// and their kernels by <op>/cpu/*.cpp and <op>/cuda/*.cu (TORCH_LIBRARY_IMPL, one per backend).
#include <Python.h>
#include <torch/library.h>
#include <torch/version.h>

extern "C" {
// Importing fastreshuffle._C from Python runs the static TORCH_LIBRARY registrations of every
// source of the extension.  The module records the torch release it was compiled against
// (torch_major, torch_minor), which fastreshuffle/ops/_extension.py checks as it loads.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* m = PyModule_Create(&module_def);
  if (m != nullptr && (PyModule_AddIntConstant(m, "torch_major", TORCH_VERSION_MAJOR) < 0 ||
                       PyModule_AddIntConstant(m, "torch_minor", TORCH_VERSION_MINOR) < 0)) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
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

// The one TORCH_LIBRARY block claims the fastreshuffle namespace; the op folders add fragments.
TORCH_LIBRARY(fastreshuffle, m) {
  m.def("built_with_cuda() -> bool", &built_with_cuda);
}

}  // namespace fastreshuffle

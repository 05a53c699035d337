// Schemas of the dense layer's CPU ops.  Kernels: cpu/bias_elu_kernel.cpp (bias_elu_),
// cpu/dense_layer_kernel.cpp (dense_layer_cpu_, dense_cpu_isa) and cpu/amx_gemm_kernel.cpp
// (amx_gemm_bias_elu, dense_cpu_amx).  The dense layer's other ops
// (dense_layer, dense_layer_, dense_layer_reshuffle_) are defined on the Python side.
#include <torch/library.h>

namespace fastreshuffle {

TORCH_LIBRARY_FRAGMENT(fastreshuffle, m) {
  // Dense layer CPU path: x[r, k] = elu(x[r, k] + bias[k]) in place (x: rows x channels).
  m.def("bias_elu_(Tensor(a!) x, Tensor bias) -> ()");
  // Dense layer CPU kernel (float32 or bfloat16, channels-contiguous pixels): y = conv3x3(elu(conv1x1(x) + b1)) + b3
  // written into y (e.g. the channel slice after the prefix x of a channels-last block buffer).
  // isa: 0 = best available, 1 = AVX2 + FMA, 2 = AVX-512; algo (3x3): 0 = auto, 1 = direct,
  // 2 = Winograd F(2x2, 3x3) with the intermediate in a row ring, 3 = Winograd on the whole intermediate.
  // packed: the weights in the kernel's layout from dense_cpu_pack (for the same dtype, isa and
  // Winograd-or-direct), so a model can pack once instead of per call; checked against the
  // shapes, not the values: the caller keeps them in step with w1, b1, w3, b3.
  m.def("dense_layer_cpu_(Tensor x, Tensor(a!) y, Tensor w1, Tensor b1, Tensor w3, Tensor b3, int isa=0, int algo=0, "
        "Tensor[]? packed=None) -> ()");
  // [p1, q1, u, q3, meta]: w1/b1/w3/b3 packed for dense_layer_cpu_ (same isa and algo arguments).
  m.def("dense_cpu_pack(Tensor w1, Tensor b1, Tensor w3, Tensor b3, int isa=0, int algo=0) -> Tensor[]");
  // Best instruction set of that kernel on this CPU: 0 none (use the torch composition), 1, 2 as above.
  // It takes no tensor, so its kernel (cpu/dense_layer_kernel.cpp) is registered for
  // CompositeImplicitAutograd, where a def() with a function puts it.
  m.def("dense_cpu_isa() -> int");
  // Whether that kernel runs bfloat16 here (AVX-512 with AVX512-BF16: vdpbf16ps, fp32 accumulation).
  m.def("dense_cpu_bf16() -> bool");
  // The torch composition's 1x1 convolution + bias + ELU on AMX tiles (cpu/amx_gemm_kernel.cpp):
  // t = elu(rows @ w1^T + b1), bf16, rows a [R, M] view with unit channel stride (a channel
  // prefix, read in place and never past its M columns); w1 [N, M] or [N, M, 1, 1].
  m.def("amx_gemm_bias_elu(Tensor rows, Tensor w1, Tensor b1) -> Tensor");
  // Whether that kernel runs here (AMX-BF16 and the operating system gives the tiles).
  m.def("dense_cpu_amx() -> bool");
}

}  // namespace fastreshuffle

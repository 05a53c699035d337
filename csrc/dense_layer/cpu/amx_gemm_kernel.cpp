// CPU kernel for fastreshuffle::amx_gemm_bias_elu(rows, w1, b1) -> t, bfloat16 on AMX tiles:
// t[r, n] = elu(sum_m rows[r, m] w1[n, m] + b1[n]), the dense layer's 1x1 convolution with its bias
// and ELU, for the torch composition on CPUs with AMX (ops/_dense_torch.py).
//
// rows: [R, M] bf16 with unit column stride and any row stride -- a channels-last block buffer's
// channel prefix, read in place: tile loads take a row stride, so no copy of the prefix.
// Every load stays inside the M columns (torch's bf16 GEMM reads a strided A's rows past M and
// multiplies that by zero, which a NaN there turns into NaN): the last M % 32 columns go
// through a zero-padded scratch, and so does a last block of fewer than 32 rows.
//
// Blocking: 32 rows x 32 outputs per step, four float32 accumulator tiles (16 x 16), two A tiles
// (16 rows x 32 bf16) and two B tiles (16 pairs of rows x 16 outputs x 2, w1 packed in that
// "VNNI" order once per call, zero-padded to multiples of 32).  Epilogue: each accumulator
// tile is stored to a 1 KiB buffer, then bias + ELU in float32 and one rounding to bf16.
//
// Linux gives a process the tile state only on request (arch_prctl ARCH_REQ_XCOMP_PERM);
// dense_cpu_amx() asks once and says whether the kernel can run.
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

// AMX targets and intrinsics: GCC 11, clang 12 (an older compiler builds the refusing stub)
#if defined(__x86_64__) && defined(__linux__) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#include <cpuid.h>
#if defined(__GNUC__) && !defined(__clang__)
// for this file: GCC 12 warns inside its own AVX-512 headers (_mm*_undefined_*) wherever their
// intrinsics are inlined, so a push / pop around the include does not reach it
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define FASTRESHUFFLE_AMX 1
#endif

namespace fastreshuffle {
namespace {

constexpr int64_t kRows = 32;   // rows of t per step (two 16-row tiles)
constexpr int64_t kCols = 32;   // outputs per step (two 16-wide accumulator tiles)
constexpr int64_t kDepth = 32;  // bf16 of M per tile row (64 bytes)

#ifdef FASTRESHUFFLE_AMX
bool amx_ready() {
  static const bool ok = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!((d >> 22) & 1u) || !((d >> 24) & 1u)) return false;  // AMX-BF16, AMX-TILE
    // the epilogue's vectors
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl"))
      return false;
    constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
  }();
  return ok;
}

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// w1 [N, M] -> [N/16 blocks][M/32 blocks][16 pairs][16 outputs][2], zero-padded
void pack_w1(const uint16_t* w1, int64_t n_out, int64_t m, int64_t n_pad, int64_t kb_count, uint16_t* out) {
  std::memset(out, 0, sizeof(uint16_t) * n_pad * kb_count * kDepth);
  for (int64_t n = 0; n < n_out; ++n) {
    const int64_t nb = n / 16, j = n % 16;
    for (int64_t k = 0; k < m; ++k) {
      const int64_t kb = k / kDepth, p = (k % kDepth) / 2, e = k % 2;
      out[((nb * kb_count + kb) * 16 + p) * 32 + j * 2 + e] = w1[n * m + k];
    }
  }
}

// elu(x + b) for 16 float32 lanes: elu_bias_one (elu_f32.h) in AVX-512 intrinsics -- the same
// range reduction and polynomial, NaN passed through, -inf to -1.  (GCC vectorized the scalar loop
// with 4-lane vectors only.)
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 elu_bias16(__m512 x, __m512 b) {
  const __m512 v = _mm512_add_ps(x, b);
  // min(max(v, -87), 0): only v <= 0 uses the exponential; exp(-87) ~ 1.6e-38 (expm1 == -1 below)
  const __m512 vn = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-87.0f)), _mm512_setzero_ps());
  const __m512 magic = _mm512_set1_ps(12582912.0f);   // n by the 1.5 * 2^23 rounding trick
  const __m512 t = _mm512_fmadd_ps(vn, _mm512_set1_ps(1.44269504088896341f), magic);
  const __m512i n_int = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4B400000));
  const __m512 n = _mm512_sub_ps(t, magic);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), vn);     // Cody-Waite ln2 split
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_fmadd_ps(r, _mm512_set1_ps(1.98412701e-4f), _mm512_set1_ps(1.38888892e-3f));
  p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(8.33333377e-3f));
  p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(4.16666679e-2f));
  p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(1.66666672e-1f));
  p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(0.5f));
  const __m512 q = _mm512_fmadd_ps(_mm512_mul_ps(r, r), p, r);          // expm1(r)
  const __m512 scale = _mm512_castsi512_ps(                               // 2^n, n in [-126, 0]
      _mm512_slli_epi32(_mm512_add_epi32(n_int, _mm512_set1_epi32(127)), 23));
  const __m512 e = _mm512_fmadd_ps(scale, q, _mm512_sub_ps(scale, _mm512_set1_ps(1.0f)));
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LE_OQ), v, e);   // NaN, v > 0: v
}

// 16 float32 -> 16 bf16, rounded to nearest even, NaN to 0x7FC0 (as f32_to_bf16_bits, bf16_bits.h)
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m256i to_bf16x16(__m512 f) {
  const __m512i u = _mm512_castps_si512(f);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(r);
}

// One stored accumulator tile (16 x 16 float32 in ``buf``) -> ``rows`` x ``cols`` of t: bias + ELU,
// one rounding to bf16, 16 lanes a row (the last outputs' row under a mask).
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline void epilogue(const float* buf, const float* bias,
                                                                           uint16_t* dst, int64_t ldd,
                                                                           int64_t rows, int64_t cols) {
  const __mmask16 keep = static_cast<__mmask16>((1u << cols) - 1u);
  const __m512 b = _mm512_maskz_loadu_ps(keep, bias);
  for (int64_t i = 0; i < rows; ++i) {
    const __m256i h = to_bf16x16(elu_bias16(_mm512_load_ps(buf + i * 16), b));
    if (cols == 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i * ldd), h);
    else
      _mm256_mask_storeu_epi16(dst + i * ldd, keep, h);
  }
}

// Stores accumulator ``tile`` (rows i0.., outputs n0..) through ``buf`` (_tile_stored takes the
// tile number as an immediate, hence a macro).
#define FASTRESHUFFLE_EPILOGUE(tile, i0, n0)                                                           \
  do {                                                                                                 \
    _tile_stored(tile, buf, 64);                                                                       \
    epilogue(buf, bias + (n0), t + (r0 + (i0)) * n_out + (n0), n_out,                                  \
             std::min<int64_t>(16, valid_rows - (i0)), std::min<int64_t>(16, n_out - (n0)));           \
  } while (0)

__attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl")))
void amx_row_blocks(const uint16_t* a, int64_t lda, int64_t r_count, int64_t m, const uint16_t* bp,
                    int64_t kb_count, int64_t n_pad, const float* bias, int64_t n_out, uint16_t* t,
                    int64_t rb_begin, int64_t rb_end) {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int i = 0; i < 8; ++i) {
    cfg.rows[i] = 16;
    cfg.colsb[i] = 64;
  }
  asm volatile("" ::: "memory");   // the intrinsics do not tell the compiler which memory they read
  _tile_loadconfig(&cfg);
  const int64_t k_pad = kb_count * kDepth;
  const int64_t full_kb = m / kDepth;                        // K blocks read in place
  std::vector<uint16_t> rows_copy;                           // a short last row block, zero-padded
  alignas(64) uint16_t tail[kRows * kDepth];                  // the last M % 32 columns, zero-padded
  alignas(64) float buf[16 * 16];
  for (int64_t rb = rb_begin; rb < rb_end; ++rb) {
    const int64_t r0 = rb * kRows;
    const int64_t valid_rows = std::min<int64_t>(kRows, r_count - r0);
    const uint16_t* src = a + r0 * lda;
    int64_t ld = lda, direct_kb = full_kb;
    if (valid_rows < kRows) {
      rows_copy.assign(kRows * k_pad, uint16_t{0});
      for (int64_t i = 0; i < valid_rows; ++i)
        std::memcpy(rows_copy.data() + i * k_pad, src + i * lda, sizeof(uint16_t) * m);
      src = rows_copy.data();
      ld = k_pad;
      direct_kb = kb_count;
    } else if (full_kb < kb_count) {
      std::memset(tail, 0, sizeof(tail));
      const int64_t k0 = full_kb * kDepth;
      for (int64_t i = 0; i < kRows; ++i)
        std::memcpy(tail + i * kDepth, src + i * lda + k0, sizeof(uint16_t) * (m - k0));
    }
    asm volatile("" ::: "memory");   // the scratch is written before the tile loads read it
    for (int64_t nb2 = 0; nb2 < n_pad / kCols; ++nb2) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      const uint16_t* b0 = bp + (2 * nb2) * kb_count * 512;
      const uint16_t* b1 = bp + (2 * nb2 + 1) * kb_count * 512;
      for (int64_t kb = 0; kb < kb_count; ++kb) {
        if (kb < direct_kb) {
          _tile_loadd(4, src + kb * kDepth, ld * 2);
          _tile_loadd(5, src + 16 * ld + kb * kDepth, ld * 2);
        } else {
          _tile_loadd(4, tail, kDepth * 2);
          _tile_loadd(5, tail + 16 * kDepth, kDepth * 2);
        }
        _tile_loadd(6, b0 + kb * 512, 64);
        _tile_loadd(7, b1 + kb * 512, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      const int64_t n0 = nb2 * kCols;
      FASTRESHUFFLE_EPILOGUE(0, 0, n0);
      if (n0 + 16 < n_out) FASTRESHUFFLE_EPILOGUE(1, 0, n0 + 16);
      if (valid_rows > 16) {
        FASTRESHUFFLE_EPILOGUE(2, 16, n0);
        if (n0 + 16 < n_out) FASTRESHUFFLE_EPILOGUE(3, 16, n0 + 16);
      }
    }
  }
  _tile_release();
}
#undef FASTRESHUFFLE_EPILOGUE
#else
bool amx_ready() { return false; }
#endif

at::Tensor amx_gemm_bias_elu(const at::Tensor& rows, const at::Tensor& w1, const at::Tensor& b1) {
  TORCH_CHECK(amx_ready(), "amx_gemm_bias_elu: this CPU (or its operating system) gives no AMX-BF16 tiles");
  TORCH_CHECK(rows.device().is_cpu() && w1.device().is_cpu() && b1.device().is_cpu(),
              "amx_gemm_bias_elu: tensors must be on the CPU");
  TORCH_CHECK(rows.scalar_type() == at::kBFloat16 && w1.scalar_type() == at::kBFloat16 &&
                  b1.scalar_type() == at::kBFloat16,
              "amx_gemm_bias_elu: rows, w1 and b1 must be bfloat16, got ", rows.scalar_type(), ", ",
              w1.scalar_type(), ", ", b1.scalar_type());
  TORCH_CHECK(rows.dim() == 2, "amx_gemm_bias_elu: rows must be 2-D (rows, channels), got shape ", rows.sizes());
  const int64_t r_count = rows.size(0), m = rows.size(1);
  TORCH_CHECK(m <= 1 || rows.stride(1) == 1, "amx_gemm_bias_elu: rows must have unit stride along its channels, got strides ",
              rows.strides());
  // (any row stride: rows are only read, each inside its own M columns -- an expanded or
  // overlapping view is fine)
  TORCH_CHECK(w1.dim() == 2 || (w1.dim() == 4 && w1.size(2) == 1 && w1.size(3) == 1),
              "amx_gemm_bias_elu: w1 must be [N, M] or [N, M, 1, 1], got shape ", w1.sizes());
  const at::Tensor w = w1.reshape({w1.size(0), -1}).contiguous();
  TORCH_CHECK(w.size(1) == m, "amx_gemm_bias_elu: w1 has ", w.size(1), " input channels, rows have ", m);
  const int64_t n_out = w.size(0);
  TORCH_CHECK(b1.dim() == 1 && b1.size(0) == n_out, "amx_gemm_bias_elu: b1 has shape ", b1.sizes(),
              ", expected [", n_out, "]");
  at::Tensor t = at::empty({r_count, n_out}, rows.options());
  if (r_count == 0 || n_out == 0) return t;
  if (m == 0) {   // no input channels: elu(b1) on every row
    t.copy_(at::elu(b1.to(at::kFloat)).to(at::kBFloat16).unsqueeze(0).expand({r_count, n_out}));
    return t;
  }
#ifdef FASTRESHUFFLE_AMX
  const int64_t kb_count = (m + kDepth - 1) / kDepth;
  const int64_t n_pad = (n_out + kCols - 1) / kCols * kCols;
  std::vector<uint16_t> packed(n_pad * kb_count * kDepth);
  pack_w1(reinterpret_cast<const uint16_t*>(w.const_data_ptr<at::BFloat16>()), n_out, m, n_pad, kb_count,
          packed.data());
  const at::Tensor bias = b1.to(at::kFloat).contiguous();
  const uint16_t* pa = reinterpret_cast<const uint16_t*>(rows.const_data_ptr<at::BFloat16>());
  uint16_t* pt = reinterpret_cast<uint16_t*>(t.mutable_data_ptr<at::BFloat16>());
  const float* pb = bias.const_data_ptr<float>();
  const int64_t lda = rows.stride(0);
  const int64_t blocks = (r_count + kRows - 1) / kRows;
  at::parallel_for(0, blocks, 8, [&](int64_t b0, int64_t b1_) {
    amx_row_blocks(pa, lda, r_count, m, packed.data(), kb_count, n_pad, pb, n_out, pt, b0, b1_);
  });
#endif
  return t;
}

bool dense_cpu_amx() { return amx_ready(); }

}  // namespace

TORCH_LIBRARY_IMPL(fastreshuffle, CPU, m) {
  m.impl("amx_gemm_bias_elu", &amx_gemm_bias_elu);
}

// no tensor to dispatch on: CompositeImplicitAutograd, as the kernel of a def() with a function is registered
TORCH_LIBRARY_IMPL(fastreshuffle, CompositeImplicitAutograd, m) {
  m.impl("dense_cpu_amx", &dense_cpu_amx);
}

}  // namespace fastreshuffle

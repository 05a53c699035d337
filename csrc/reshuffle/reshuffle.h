// Shared geometry and argument checks for the reshuffle ops (paper Eq. 3 / Eq. 4).
//
// Both directions are one 6-D strided copy over the index space (n, c, a, b, i, j):
//   down (Eq. 3):  Y[n, c*s*s + a*s + b, i, j] = X[n, c, i*s + a, j*s + b]   (== pixel_unshuffle)
//   up   (Eq. 4):  Y[n, c, i*s + a, j*s + b] = X[n, c*s*s + a*s + b, i, j]   (== pixel_shuffle)
// where c runs over the channels of the high-resolution tensor and (i, j) over the pixels of
// the low-resolution one.  Only strides differ, so one kernel per backend serves both ops, for
// any strides (contiguous, channels_last, channel slices of a larger buffer).  The kernels move
// elements by their byte size, so every dtype is copied bit-exactly.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <type_traits>

namespace fastreshuffle {

enum Dim : int { kN = 0, kC = 1, kA = 2, kB = 3, kI = 4, kJ = 5 };

struct Geometry {
  std::array<int64_t, 6> size;
  std::array<int64_t, 6> src_stride;  // in elements
  std::array<int64_t, 6> dst_stride;  // in elements
  // true when the high-resolution tensor is laid out channels-last (C has the smallest stride)
  bool channels_last;
  // true for reshuffle_down (source = high-resolution tensor), false for reshuffle_up
  bool down;
  int64_t numel() const {
    int64_t n = 1;
    for (auto s : size) n *= s;
    return n;
  }
};

inline void check_input(const at::Tensor& x, int64_t scale, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": expected a 4-D (N, C, H, W) tensor, got a ", x.dim(),
              "-D tensor of shape ", x.sizes());
  TORCH_CHECK(scale >= 1, op, ": scale must be >= 1, got ", scale);
  TORCH_CHECK(scale <= (int64_t{1} << 20), op, ": scale ", scale, " is too large");
}

// Expected output sizes; errors name the offending sizes.
inline std::array<int64_t, 4> output_sizes(const at::Tensor& x, int64_t s, bool down) {
  const char* op = down ? "reshuffle_down" : "reshuffle_up";
  check_input(x, s, op);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  if (down) {
    TORCH_CHECK(H % s == 0 && W % s == 0, op, ": height ", H, " and width ", W,
                " must both be divisible by scale ", s, " (input shape ", x.sizes(), ")");
    return {N, C * s * s, H / s, W / s};
  }
  TORCH_CHECK(C % (s * s) == 0, op, ": channels ", C, " must be divisible by scale^2 = ", s * s,
              " (input shape ", x.sizes(), ")");
  return {N, C / (s * s), H * s, W * s};
}

inline void check_out(const at::Tensor& x, const at::Tensor& out, int64_t s, bool down) {
  const char* op = down ? "reshuffle_down" : "reshuffle_up";
  auto expect = output_sizes(x, s, down);
  TORCH_CHECK(out.dim() == 4 && out.size(0) == expect[0] && out.size(1) == expect[1] &&
                  out.size(2) == expect[2] && out.size(3) == expect[3],
              op, ": out has shape ", out.sizes(), " but input ", x.sizes(), " with scale ", s,
              " gives [", expect[0], ", ", expect[1], ", ", expect[2], ", ", expect[3], "]");
  TORCH_CHECK(out.scalar_type() == x.scalar_type(), op, ": out has dtype ", out.scalar_type(),
              " but input has dtype ", x.scalar_type());
  TORCH_CHECK(out.device() == x.device(), op, ": out is on ", out.device(), " but input is on ",
              x.device());
  if (out.numel() > 0) {
    TORCH_CHECK(at::has_internal_overlap(out) != at::MemOverlap::Yes, op,
                ": out has internal overlap (e.g. an expanded tensor); it cannot be written");
    const auto overlap = at::get_overlap_status(out, x);
    TORCH_CHECK(overlap != at::MemOverlapStatus::Full && overlap != at::MemOverlapStatus::Partial,
                op, ": out overlaps the input in memory; pass a separate tensor");
  }
}

// Geometry of the strided copy from x into out (shapes already checked).
inline Geometry make_geometry(const at::Tensor& x, const at::Tensor& out, int64_t s, bool down) {
  Geometry g;
  const at::Tensor& hi = down ? x : out;  // high-resolution tensor
  const at::Tensor& lo = down ? out : x;  // low-resolution tensor
  g.size = {hi.size(0), hi.size(1), s, s, lo.size(2), lo.size(3)};
  std::array<int64_t, 6> hi_stride = {hi.stride(0), hi.stride(1), hi.stride(2), hi.stride(3),
                                      s * hi.stride(2), s * hi.stride(3)};
  std::array<int64_t, 6> lo_stride = {lo.stride(0), s * s * lo.stride(1), s * lo.stride(1),
                                      lo.stride(1), lo.stride(2), lo.stride(3)};
  g.src_stride = down ? hi_stride : lo_stride;
  g.dst_stride = down ? lo_stride : hi_stride;
  g.channels_last = hi.size(1) > 1 && hi.stride(1) < hi.stride(3) && hi.stride(1) < hi.stride(2);
  g.down = down;
  return g;
}

// Output allocation keeps the input's memory format.
inline at::Tensor empty_output(const at::Tensor& x, int64_t s, bool down) {
  auto sz = output_sizes(x, s, down);
  auto fmt = x.suggest_memory_format();
  return at::empty({sz[0], sz[1], sz[2], sz[3]}, x.options().memory_format(fmt));
}

// Elements are moved as unsigned words of their byte size: bit-exact for every dtype.
struct U128 {
  uint64_t lo, hi;
};
template <int Bytes>
struct Word;
template <>
struct Word<1> { using type = uint8_t; };
template <>
struct Word<2> { using type = uint16_t; };
template <>
struct Word<4> { using type = uint32_t; };
template <>
struct Word<8> { using type = uint64_t; };
template <>
struct Word<16> { using type = U128; };

// Calls f(std::integral_constant<int, bytes>{}) for x's element size.
template <typename F>
void dispatch_element_size(const at::Tensor& x, F&& f) {
  switch (x.element_size()) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
    default:
      TORCH_CHECK(false, "reshuffle: unsupported element size ", x.element_size(), " for dtype ",
                  x.scalar_type());
  }
}

// A backend's copy: x -> out (shapes checked), direction `down`.
using CopyFn = void (*)(const at::Tensor& x, const at::Tensor& out, int64_t s, bool down);
// A backend's output allocation (sizes checked inside, memory format kept).
using EmptyFn = at::Tensor (*)(const at::Tensor& x, int64_t s, bool down);

// The four op kernels of a backend, built from its copy function.
template <CopyFn copy, EmptyFn empty, bool down>
at::Tensor reshuffle_functional(const at::Tensor& x, int64_t scale) {
  auto out = empty(x, scale, down);
  copy(x, out, scale, down);
  return out;
}

template <CopyFn copy, bool down>
void reshuffle_into(const at::Tensor& x, int64_t scale, const at::Tensor& out) {
  check_out(x, out, scale, down);
  copy(x, out, scale, down);
}

// Registers the four ops of one backend (inside its TORCH_LIBRARY_IMPL block).
template <CopyFn copy, EmptyFn empty = &empty_output>
void register_backend(torch::Library& m) {
  m.impl("reshuffle_down", &reshuffle_functional<copy, empty, true>);
  m.impl("reshuffle_up", &reshuffle_functional<copy, empty, false>);
  m.impl("reshuffle_down_out", &reshuffle_into<copy, true>);
  m.impl("reshuffle_up_out", &reshuffle_into<copy, false>);
}

}  // namespace fastreshuffle

// Index logic of the CUDA fast paths for dense layouts, free of torch and CUDA runtime headers
// so that tests can compile it as host code and check every thread's accesses on machines
// without a GPU (tests/test_cuda_index_host.py).  The kernels in reshuffle_kernel.cu are thin
// wrappers: one thread block per work item, then the functions below per thread.
//
// Dimensions follow reshuffle.h's 6-D view (n, c, a, b, i, j); strides in elements; `hs` for
// the high-resolution tensor, `ls` for the low-resolution one.
//
// Both paths are correct for any strides (the launcher picks one by layout, for speed).
// S: compile-time scale (2, 3, 4, 8) or 0 for a run-time one.
//
// Vectorized micro-tiles (the fast path when layout, sizes and 16-byte alignment allow; see
//   vec_mode): each thread moves one micro-tile with 16-byte (or the widest aligned) loads and
//   stores and permutes it in registers.  A micro-tile has one "packed" run of P contiguous
//   elements on one side and R "split" runs of L contiguous elements on the other, with
//   packed[Map::p_of(r, o)] <-> split_r[o]:
//     NCHW:      packed = V*S high-resolution elements of one row (j, b), split r = b: V
//                low-resolution elements of plane b;                  R = S,   L = V = 16 bytes
//     CL, S = 2: packed = V channels x 4 of one low-resolution pixel (c, a, b), split
//                r = (a, b): V channels of a high-resolution pixel;   R = 4,   L = V = 16 bytes
//     RGB CL:    packed = Vj low-resolution pixels (j, c, a, b), split r = a: the matching
//                Vj*S*3 elements (j, b, c) of high-resolution row a;  R = S,   L = Vj*S*3
//   Consecutive threads take consecutive micro-tiles along the contiguous dimension, so the
//   split side is coalesced per instruction and the packed side per pair of instructions.
//
// NCHW-like (hs[b] == 1, hs[j] == S, ls[j] == 1): one block per (n, c, i); its threads walk
//   the S high-resolution rows (W*S elements each) in memory order, so the high-resolution
//   side is fully coalesced and the low-resolution side is written / read as S runs of 32/S
//   consecutive elements per warp.  One division per element, by S (a shift for S = 2, 4, 8).
// channels-last-like (pixel vectors dense on both sides): one block per tile of (n, i, up to
//   tile_j pixels j, up to tile_c channels): phase 1 reads the source side into shared memory
//   in the source's memory order, phase 2 writes the destination side in its memory order, so
//   both global sides are coalesced (for RGB, whole pixel rows per block).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__CUDACC__)
#define FR_HD __host__ __device__
#define FR_UNROLL _Pragma("unroll")
#else
#define FR_HD
#define FR_UNROLL
#endif

namespace fastreshuffle {
namespace tiles {

enum : int { N = 0, C = 1, A = 2, B = 3, I = 4, J = 5 };

template <typename Index>
struct Geom {
  Index size[6];  // size[A] == size[B] == the scale s
  Index hs[6];    // high-resolution strides
  Index ls[6];    // low-resolution strides
  Index tile_c;   // channels-last path: channels per block (>= 1)
  Index tile_j;   // channels-last path: low-resolution pixels per block (>= 1)
  bool down;
};

// Scale: the compile-time S when given (S > 0), else the run-time one.
template <int S, typename Index>
FR_HD inline Index scale_of(const Geom<Index>& g) {
  return S > 0 ? Index(S) : g.size[A];
}

// ---- NCHW-dense --------------------------------------------------------------------------
template <typename Index>
FR_HD inline Index nchw_groups(const Geom<Index>& g) {
  return g.size[N] * g.size[C] * g.size[I];
}

// Thread t of nt in the block of `group` (0 <= group < nchw_groups).
template <typename T, int S, typename Index>
FR_HD inline void nchw_group(const T* __restrict__ src, T* __restrict__ dst, const Geom<Index>& g,
                             Index group, Index t, Index nt) {
  const Index i = group % g.size[I];
  const Index c = (group / g.size[I]) % g.size[C];
  const Index n = group / (g.size[I] * g.size[C]);
  const Index hb = n * g.hs[N] + c * g.hs[C] + i * g.hs[I];
  const Index lb = n * g.ls[N] + c * g.ls[C] + i * g.ls[I];
  const Index s = scale_of<S>(g);
  const Index len = g.size[J] * s;  // elements of one high-resolution row
  for (Index a = 0; a < s; ++a) {
    const Index ha = hb + a * g.hs[A];
    const Index la = lb + a * g.ls[A];
    for (Index r = t; r < len; r += nt) {
      const Index j = r / s;
      const Index b = r - j * s;
      const Index ho = ha + j * g.hs[J] + b * g.hs[B];  // == ha + r for dense rows
      const Index lo = la + b * g.ls[B] + j * g.ls[J];
      if (g.down) {
        dst[lo] = src[ho];
      } else {
        dst[ho] = src[lo];
      }
    }
  }
}

// ---- channels-last-like ------------------------------------------------------------------
// A block's tile: tile_j low-resolution pixels of one row i times tile_c channels, i.e.
// tile_j * tile_c * s * s elements (<= kTileElems unless one channel alone is larger), staged
// in shared memory in low-resolution order [jj][c][a][b].
constexpr int kTileElems = 1024;

template <typename Index>
FR_HD inline void nhwc_tiles(Index channels, Index s, Index* tile_c, Index* tile_j) {
  const Index k = s * s;
  Index tc = Index(kTileElems) / k;
  tc = tc < 1 ? Index(1) : tc;
  tc = tc > channels ? channels : tc;
  Index tj = Index(kTileElems) / (tc * k);
  *tile_c = tc;
  *tile_j = tj < 1 ? Index(1) : tj;
}

template <typename Index>
FR_HD inline Index nhwc_ctiles(const Geom<Index>& g) {
  return (g.size[C] + g.tile_c - 1) / g.tile_c;
}

template <typename Index>
FR_HD inline Index nhwc_jtiles(const Geom<Index>& g) {
  return (g.size[J] + g.tile_j - 1) / g.tile_j;
}

template <typename Index>
FR_HD inline Index nhwc_items(const Geom<Index>& g) {
  return g.size[N] * g.size[I] * nhwc_jtiles(g) * nhwc_ctiles(g);
}

template <typename Index>
struct PixelItem {
  Index hb;  // offset of high-resolution element (a, b, c) = (0, 0, c0) of pixel j0
  Index lb;  // offset of low-resolution element (c0 * s * s) of pixel j0
  Index tc;  // channels in this tile (<= tile_c)
  Index tj;  // pixels in this tile (<= tile_j)
};

template <typename Index>
FR_HD inline PixelItem<Index> nhwc_item(const Geom<Index>& g, Index item) {
  const Index ctiles = nhwc_ctiles(g), jtiles = nhwc_jtiles(g);
  const Index ct = item % ctiles;
  Index rest = item / ctiles;
  const Index jt = rest % jtiles;
  rest /= jtiles;
  const Index i = rest % g.size[I];
  const Index n = rest / g.size[I];
  const Index c0 = ct * g.tile_c, j0 = jt * g.tile_j;
  PixelItem<Index> p;
  p.hb = n * g.hs[N] + i * g.hs[I] + j0 * g.hs[J] + c0 * g.hs[C];
  p.lb = n * g.ls[N] + i * g.ls[I] + j0 * g.ls[J] + c0 * g.ls[C];
  p.tc = g.size[C] - c0 < g.tile_c ? g.size[C] - c0 : g.tile_c;
  p.tj = g.size[J] - j0 < g.tile_j ? g.size[J] - j0 : g.tile_j;
  return p;
}

// Element e of the tile in high-resolution memory order (a, jj, b, c), c fastest: its global
// offset and its shared-memory slot.
template <int S, typename Index>
FR_HD inline void nhwc_hi_elem(const Geom<Index>& g, const PixelItem<Index>& p, Index e,
                               Index* global, Index* slot) {
  const Index s = scale_of<S>(g);
  const Index c = e % p.tc;
  Index rest = e / p.tc;
  const Index b = rest % s;
  rest /= s;
  const Index jj = rest % p.tj;
  const Index a = rest / p.tj;
  *global = p.hb + jj * g.hs[J] + a * g.hs[A] + b * g.hs[B] + c * g.hs[C];
  *slot = (jj * p.tc + c) * (s * s) + a * s + b;
}

// Element e of the tile in low-resolution memory order (jj, c, a, b), b fastest: its global
// offset (its shared-memory slot is e itself).
template <int S, typename Index>
FR_HD inline Index nhwc_lo_elem(const Geom<Index>& g, const PixelItem<Index>& p, Index e) {
  const Index s = scale_of<S>(g);
  const Index k = s * s;
  const Index ab = e % k;
  const Index rest = e / k;
  const Index c = rest % p.tc;
  const Index jj = rest / p.tc;
  return p.lb + jj * g.ls[J] + c * g.ls[C] + (ab / s) * g.ls[A] + (ab % s) * g.ls[B];
}

// Phase 1 (global -> shared): read the source side in its memory order.
template <typename T, int S, typename Index>
FR_HD inline void nhwc_load(const T* __restrict__ src, T* smem, const Geom<Index>& g,
                            const PixelItem<Index>& p, Index t, Index nt) {
  const Index s = scale_of<S>(g);
  const Index total = p.tj * p.tc * s * s;
  for (Index e = t; e < total; e += nt) {
    if (g.down) {
      Index off, slot;
      nhwc_hi_elem<S>(g, p, e, &off, &slot);
      smem[slot] = src[off];
    } else {
      smem[e] = src[nhwc_lo_elem<S>(g, p, e)];
    }
  }
}

// Phase 2 (shared -> global): write the destination side in its memory order.
template <typename T, int S, typename Index>
FR_HD inline void nhwc_store(const T* smem, T* __restrict__ dst, const Geom<Index>& g,
                             const PixelItem<Index>& p, Index t, Index nt) {
  const Index s = scale_of<S>(g);
  const Index total = p.tj * p.tc * s * s;
  for (Index e = t; e < total; e += nt) {
    if (g.down) {
      dst[nhwc_lo_elem<S>(g, p, e)] = smem[e];
    } else {
      Index off, slot;
      nhwc_hi_elem<S>(g, p, e, &off, &slot);
      dst[off] = smem[slot];
    }
  }
}

// ---- vectorized micro-tiles ----------------------------------------------------------------
// One B-byte load or store (B = 1, 2, 4, 8, 16).
template <int B>
struct Chunk;
#if defined(__CUDACC__)
template <> struct Chunk<16> { using type = uint4; };
template <> struct Chunk<8> { using type = uint2; };
#else
struct alignas(16) HostChunk16 { uint32_t w[4]; };
struct alignas(8) HostChunk8 { uint32_t w[2]; };
template <> struct Chunk<16> { using type = HostChunk16; };
template <> struct Chunk<8> { using type = HostChunk8; };
#endif
template <> struct Chunk<4> { using type = uint32_t; };
template <> struct Chunk<2> { using type = uint16_t; };
template <> struct Chunk<1> { using type = uint8_t; };

// Widest chunk (<= 16 bytes) that divides a run of `bytes`: runs start at multiples of their
// own length from a 16-byte-aligned base (vec_mode checks that), so this is also their alignment.
constexpr int chunk_bytes(int bytes) {
  return bytes % 16 == 0 ? 16 : bytes % 8 == 0 ? 8 : bytes % 4 == 0 ? 4 : bytes % 2 == 0 ? 2 : 1;
}

template <typename T, int N>
FR_HD inline void load_run(const T* __restrict__ p, T (&v)[N]) {
  constexpr int B = chunk_bytes(N * int(sizeof(T)));
  using C = typename Chunk<B>::type;
  FR_UNROLL
  for (int k = 0; k < N * int(sizeof(T)) / B; ++k) {
    const C c = reinterpret_cast<const C*>(p)[k];
    std::memcpy(reinterpret_cast<unsigned char*>(v) + k * B, &c, B);
  }
}

template <typename T, int N>
FR_HD inline void store_run(T* __restrict__ p, const T (&v)[N]) {
  constexpr int B = chunk_bytes(N * int(sizeof(T)));
  using C = typename Chunk<B>::type;
  FR_UNROLL
  for (int k = 0; k < N * int(sizeof(T)) / B; ++k) {
    C c;
    std::memcpy(&c, reinterpret_cast<const unsigned char*>(v) + k * B, B);
    reinterpret_cast<C*>(p)[k] = c;
  }
}

enum VecMode : int { kVecNone = 0, kVecNCHW = 1, kVecCL2 = 2, kVecRGB = 3 };

// packed[v * R + r] <-> split_r[v]  (NCHW: v = j, r = b;  CL, S = 2: v = c, r = 2a + b)
template <int R_, int V_>
struct MapInterleave {
  static constexpr int R = R_, L = V_, P = R_ * V_;
  FR_HD static constexpr int p_of(int r, int o) { return o * R_ + r; }
};

// RGB channels-last: packed (j, c, a, b) of Vj pixels <-> split r = a: (j, b, c)
template <int S_, int Vj_>
struct MapRGB {
  static constexpr int C = 3, R = S_, L = Vj_ * S_ * C, P = Vj_ * C * S_ * S_;
  FR_HD static constexpr int p_of(int r, int o) {
    return (((o / (S_ * C)) * C + o % C) * S_ + r) * S_ + (o / C) % S_;
  }
};

// Pixels per RGB micro-tile: 16-byte high-resolution runs where possible, packed run <= 256 bytes.
constexpr int rgb_vj(int s, int elem) {
  int vj = 16 / (s * elem) > 1 ? 16 / (s * elem) : 1;
  while (vj > 1 && vj * 3 * s * s * elem > 256) vj /= 2;
  return vj * 3 * s * s * elem <= 256 ? vj : 0;
}

// Elements along the micro-tile's vector dimension (j for NCHW, c for CL), 16 bytes' worth.
constexpr int vec_elems(int elem) { return elem >= 16 ? 1 : 16 / elem; }

template <typename Index>
inline bool bytes_aligned(Index stride, Index size, int elem) {
  return size == 1 || (stride * Index(elem)) % 16 == 0;
}

// Which vectorized path applies (kVecNone: use the general paths).  Needs a compile-time scale
// (2, 4, 8), the layout of the mode, sizes divisible by the micro-tile, and 16-byte-aligned
// base addresses and run strides.
template <typename Index>
inline int vec_mode(const Geom<Index>& g, int elem, uint64_t src_addr, uint64_t dst_addr) {
  const Index s = g.size[A];
  if (!(s == 2 || s == 4 || s == 8) || src_addr % 16 != 0 || dst_addr % 16 != 0) return kVecNone;
  if (elem != 1 && elem != 2 && elem != 4 && elem != 8 && elem != 16) return kVecNone;
  const Index* hs = g.hs;
  const Index* ls = g.ls;
  const Index* sz = g.size;
  auto al = [&](const Index* st, int d) { return bytes_aligned<Index>(st[d], sz[d], elem); };
  const Index v = vec_elems(elem);
  if (hs[B] == 1 && hs[J] == s && ls[J] == 1 && sz[J] % v == 0 && al(hs, N) && al(hs, C) && al(hs, I) &&
      al(hs, A) && al(ls, N) && al(ls, C) && al(ls, I) && al(ls, A) && al(ls, B))
    return kVecNCHW;
  if (s == 2 && hs[C] == 1 && ls[B] == 1 && ls[A] == 2 && ls[C] == 4 && sz[C] % v == 0 && al(hs, N) &&
      al(hs, I) && al(hs, J) && al(hs, A) && al(hs, B) && al(ls, N) && al(ls, I) && al(ls, J))
    return kVecCL2;
  if (sz[C] == 3 && elem <= 8) {
    const int vj = rgb_vj(int(s), elem);
    if (vj > 0 && hs[C] == 1 && hs[B] == 3 && hs[J] == 3 * s && ls[B] == 1 && ls[A] == s &&
        ls[C] == s * s && ls[J] == 3 * s * s && sz[J] % vj == 0 && al(hs, N) && al(hs, I) && al(hs, A) &&
        al(ls, N) && al(ls, I))
      return kVecRGB;
  }
  return kVecNone;
}

// Micro-tiles of a mode (one per thread, grid-stride).
template <int Mode, typename Map, typename Index>
FR_HD inline Index vec_tiles(const Geom<Index>& g) {
  if (Mode == kVecNCHW) return g.size[N] * g.size[C] * g.size[I] * g.size[A] * (g.size[J] / Map::L);
  if (Mode == kVecCL2) return g.size[N] * g.size[I] * g.size[J] * (g.size[C] / Map::L);
  return g.size[N] * g.size[I] * (g.size[J] * 3 * g.size[A] / Map::L);  // kVecRGB
}

// Thread work: micro-tile t (0 <= t < vec_tiles).
template <typename T, int Mode, typename Map, typename Index>
FR_HD inline void vec_item(const T* __restrict__ src, T* __restrict__ dst, const Geom<Index>& g, Index t) {
  constexpr int R = Map::R;
  Index packed, split[R];
  bool packed_is_src;
  if (Mode == kVecNCHW) {  // t = (((n, c), i), a), jt
    const Index jts = g.size[J] / Map::L;
    const Index jt = t % jts;
    Index rest = t / jts;
    const Index a = rest % g.size[A];
    rest /= g.size[A];
    const Index i = rest % g.size[I];
    rest /= g.size[I];
    const Index c = rest % g.size[C];
    const Index n = rest / g.size[C];
    packed = n * g.hs[N] + c * g.hs[C] + i * g.hs[I] + a * g.hs[A] + jt * Map::P;
    const Index l0 = n * g.ls[N] + c * g.ls[C] + i * g.ls[I] + a * g.ls[A] + jt * Map::L;
    for (int r = 0; r < R; ++r) split[r] = l0 + Index(r) * g.ls[B];
    packed_is_src = g.down;
  } else if (Mode == kVecCL2) {  // t = ((n, i), j), ct
    const Index cts = g.size[C] / Map::L;
    const Index ct = t % cts;
    Index rest = t / cts;
    const Index j = rest % g.size[J];
    rest /= g.size[J];
    const Index i = rest % g.size[I];
    const Index n = rest / g.size[I];
    packed = n * g.ls[N] + i * g.ls[I] + j * g.ls[J] + ct * Map::P;
    const Index h0 = n * g.hs[N] + i * g.hs[I] + j * g.hs[J] + ct * Map::L;
    for (int r = 0; r < R; ++r) split[r] = h0 + Index(r / 2) * g.hs[A] + Index(r % 2) * g.hs[B];
    packed_is_src = !g.down;
  } else {  // kVecRGB: t = (n, i), jt
    const Index jts = g.size[J] * 3 * g.size[A] / Map::L;
    const Index jt = t % jts;
    const Index rest = t / jts;
    const Index i = rest % g.size[I];
    const Index n = rest / g.size[I];
    packed = n * g.ls[N] + i * g.ls[I] + jt * Map::P;
    const Index h0 = n * g.hs[N] + i * g.hs[I] + jt * Map::L;
    for (int r = 0; r < R; ++r) split[r] = h0 + Index(r) * g.hs[A];
    packed_is_src = !g.down;
  }
  if (packed_is_src) {
    T in[Map::P];
    load_run(src + packed, in);
    FR_UNROLL
    for (int r = 0; r < R; ++r) {
      T out[Map::L];
      FR_UNROLL
      for (int o = 0; o < Map::L; ++o) out[o] = in[Map::p_of(r, o)];
      store_run(dst + split[r], out);
    }
  } else {
    T out[Map::P];
    FR_UNROLL
    for (int r = 0; r < R; ++r) {
      T in[Map::L];
      load_run(src + split[r], in);
      FR_UNROLL
      for (int o = 0; o < Map::L; ++o) out[Map::p_of(r, o)] = in[o];
    }
    store_run(dst + packed, out);
  }
}

// Host: call f(std::integral_constant<int, Mode>{}, Map{}) for (mode, s) with element type T;
// false when there is no such instantiation (then the general paths run).
template <typename T, typename F>
inline bool vec_dispatch(int mode, int64_t s, F&& f) {
  constexpr int e = int(sizeof(T));
  constexpr int v = vec_elems(e);
  using NCHW = std::integral_constant<int, kVecNCHW>;
  using CL2 = std::integral_constant<int, kVecCL2>;
  using RGB = std::integral_constant<int, kVecRGB>;
  if (mode == kVecNCHW) {
    if (s == 2) return f(NCHW{}, MapInterleave<2, v>{}), true;
    if (s == 4) return f(NCHW{}, MapInterleave<4, v>{}), true;
    if (s == 8) return f(NCHW{}, MapInterleave<8, v>{}), true;
  } else if (mode == kVecCL2) {
    if (s == 2) return f(CL2{}, MapInterleave<4, v>{}), true;
  } else if (mode == kVecRGB) {
    if constexpr (e <= 8 && rgb_vj(2, e) > 0)
      if (s == 2) return f(RGB{}, MapRGB<2, rgb_vj(2, e)>{}), true;
    if constexpr (e <= 8 && rgb_vj(4, e) > 0)
      if (s == 4) return f(RGB{}, MapRGB<4, rgb_vj(4, e)>{}), true;
    if constexpr (e <= 8 && rgb_vj(8, e) > 0)
      if (s == 8) return f(RGB{}, MapRGB<8, rgb_vj(8, e)>{}), true;
  }
  return false;
}

}  // namespace tiles
}  // namespace fastreshuffle

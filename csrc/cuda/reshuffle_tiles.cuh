// Index logic of the CUDA fast paths for dense layouts, free of torch and CUDA runtime headers
// so that tests can compile it as host code and check every thread's accesses on machines
// without a GPU (tests/test_cuda_index_host.py).  The kernels in reshuffle_cuda.cu are thin
// wrappers: one thread block per work item, then the functions below per thread.
//
// Dimensions follow reshuffle.h's 6-D view (n, c, a, b, i, j); strides in elements; `hs` for
// the high-resolution tensor, `ls` for the low-resolution one.
//
// Both paths are correct for any strides (the launcher picks one by layout, for speed).
// S: compile-time scale (2, 3, 4, 8) or 0 for a run-time one.
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

#if defined(__CUDACC__)
#define FR_HD __host__ __device__
#else
#define FR_HD
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

}  // namespace tiles
}  // namespace fastreshuffle

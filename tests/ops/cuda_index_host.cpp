// Host-side check of the CUDA reshuffle kernels' index logic (csrc/reshuffle/cuda/reshuffle_tiles.cuh):
// runs every (block, thread) of both paths on the CPU, for every element size, scale, layout,
// direction and index type, with poisoned destinations, against the definition of Eq. 3/4
// evaluated with the tensors' own strides.  Built and run by tests/test_cuda_index_host.py
// with the host C++ compiler and, where present, with nvcc (as CUDA host code).
// Prints "ok <cases>" or the first failures; exit status 0 only if all cases pass.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "reshuffle/cuda/reshuffle_tiles.cuh"

using namespace fastreshuffle::tiles;

struct E16 {
  uint64_t lo, hi;
};
template <typename T>
T make(uint64_t r) {
  return static_cast<T>(r);
}
template <>
E16 make<E16>(uint64_t r) {
  return {r, ~r * 3};
}
template <typename T>
bool same(const T& x, const T& y) {
  return std::memcmp(&x, &y, sizeof(T)) == 0;
}

// A 4-D tensor in a storage: offset + strides (elements).
struct Layout {
  int64_t size[4];
  int64_t st[4];
  int64_t offset;
  int64_t storage;
};

// kind: 0 contiguous, 1 channels_last, 2 channel slice of a larger buffer, 3 H/W transposed,
// 4 every other column of a wider tensor
Layout make_layout(const int64_t* sz, int kind) {
  Layout l;
  for (int d = 0; d < 4; ++d) l.size[d] = sz[d];
  const int64_t n = sz[0], c = sz[1], h = sz[2], w = sz[3];
  l.offset = 0;
  switch (kind) {
    case 0:
      l.st[3] = 1, l.st[2] = w, l.st[1] = h * w, l.st[0] = c * h * w;
      l.storage = n * c * h * w;
      break;
    case 1:
      l.st[1] = 1, l.st[3] = c, l.st[2] = w * c, l.st[0] = h * w * c;
      l.storage = n * c * h * w;
      break;
    case 2:
      l.st[3] = 1, l.st[2] = w, l.st[1] = h * w, l.st[0] = (c + 5) * h * w;
      l.offset = 2 * h * w;
      l.storage = n * (c + 5) * h * w;
      break;
    case 3:
      l.st[2] = 1, l.st[3] = h, l.st[1] = h * w, l.st[0] = c * h * w;
      l.storage = n * c * h * w;
      break;
    default:
      l.st[3] = 2, l.st[2] = 2 * w, l.st[1] = 2 * h * w, l.st[0] = 2 * c * h * w;
      l.storage = 2 * n * c * h * w;
      break;
  }
  if (l.storage == 0) l.storage = 1;
  return l;
}

int64_t at(const Layout& l, int64_t n, int64_t c, int64_t h, int64_t w) {
  return l.offset + n * l.st[0] + c * l.st[1] + h * l.st[2] + w * l.st[3];
}

int failures = 0;
int cases = 0;

int vec_runs[4][17] = {};  // vectorized micro-tile cases run, per mode and element size

// path: 0 NCHW rows, 1 channels-last tiles, 2 vectorized micro-tiles (skipped unless vec_mode
// accepts the case, exactly as the launcher decides)
template <typename T, int S, typename Index>
void run_case(int64_t n, int64_t c, int64_t hl, int64_t wl, int64_t s, bool down, int kind_hi,
              int kind_lo, int path, Index nt, std::mt19937_64& rng) {
  const bool cl_path = path == 1;
  const int64_t hsz[4] = {n, c, hl * s, wl * s};
  const int64_t lsz[4] = {n, c * s * s, hl, wl};
  const Layout hi = make_layout(hsz, kind_hi), lo = make_layout(lsz, kind_lo);
  std::vector<T> hbuf(hi.storage), lbuf(lo.storage);
  const T poison = make<T>(0xA4A4A4A4A4A4A4A4ull);  // even; sources are odd
  std::vector<T>& sbuf = down ? hbuf : lbuf;
  std::vector<T>& dbuf = down ? lbuf : hbuf;
  for (auto& v : sbuf) v = make<T>(rng() | 1);  // odd: never equal to the poison
  for (auto& v : dbuf) v = poison;

  Geom<Index> g;
  const int64_t size[6] = {n, c, s, s, hl, wl};
  const int64_t hs[6] = {hi.st[0], hi.st[1], hi.st[2], hi.st[3], s * hi.st[2], s * hi.st[3]};
  const int64_t ls[6] = {lo.st[0], s * s * lo.st[1], s * lo.st[1], lo.st[1], lo.st[2], lo.st[3]};
  for (int d = 0; d < 6; ++d) {
    g.size[d] = Index(size[d]);
    g.hs[d] = Index(hs[d]);
    g.ls[d] = Index(ls[d]);
  }
  g.down = down;
  nhwc_tiles<Index>(Index(c), Index(s), &g.tile_c, &g.tile_j);
  const T* src = sbuf.data() + (down ? hi.offset : lo.offset);
  T* dst = dbuf.data() + (down ? lo.offset : hi.offset);

  if (path == 2) {
    const int mode = vec_mode<Index>(g, int(sizeof(T)), reinterpret_cast<uint64_t>(src),
                                     reinterpret_cast<uint64_t>(dst));
    bool ran = false;
    if (mode != kVecNone)
      ran = vec_dispatch<T>(mode, s, [&](auto m, auto map) {
        constexpr int Mode = decltype(m)::value;
        using Map = decltype(map);
        const Index tiles = vec_tiles<Mode, Map, Index>(g);
        for (Index t = 0; t < tiles; ++t) vec_item<T, Mode, Map, Index>(src, dst, g, t);
      });
    if (!ran) return;  // not eligible: the launcher runs the general paths (checked above)
    ++vec_runs[mode][sizeof(T)];
  } else if (!cl_path) {
    const Index groups = nchw_groups(g);
    for (Index grp = 0; grp < groups; ++grp)
      for (Index t = 0; t < nt; ++t) nchw_group<T, S, Index>(src, dst, g, grp, t, nt);
  } else {
    const Index items = nhwc_items(g);
    std::vector<T> smem(static_cast<size_t>(g.tile_c * g.tile_j * s * s), poison);
    for (Index it = 0; it < items; ++it) {
      const PixelItem<Index> p = nhwc_item(g, it);
      std::fill(smem.begin(), smem.end(), poison);  // a stale slot would show up
      for (Index t = 0; t < nt; ++t) nhwc_load<T, S, Index>(src, smem.data(), g, p, t, nt);
      for (Index t = 0; t < nt; ++t) nhwc_store<T, S, Index>(smem.data(), dst, g, p, t, nt);
    }
  }

  // reference: Eq. 3 / Eq. 4 with the tensors' own strides; count written elements
  int64_t bad = 0, written = 0;
  for (int64_t in = 0; in < n; ++in)
    for (int64_t ic = 0; ic < c; ++ic)
      for (int64_t a = 0; a < s; ++a)
        for (int64_t b = 0; b < s; ++b)
          for (int64_t i = 0; i < hl; ++i)
            for (int64_t j = 0; j < wl; ++j) {
              const T& hv = hbuf[at(hi, in, ic, i * s + a, j * s + b)];
              const T& lv = lbuf[at(lo, in, ic * s * s + a * s + b, i, j)];
              bad += !same(hv, lv);
              ++written;
            }
  int64_t poisoned_left = 0;
  for (const auto& v : dbuf) poisoned_left += same(v, poison);
  const int64_t expect_left = static_cast<int64_t>(dbuf.size()) - written;
  ++cases;
  if (bad || poisoned_left != expect_left) {
    if (++failures <= 10)
      std::printf("FAIL T=%zuB S=%d idx=%zuB n=%lld c=%lld hl=%lld wl=%lld s=%lld %s hi=%d lo=%d path %d nt=%lld: "
                  "%lld wrong, %lld untouched (expected %lld)\n",
                  sizeof(T), S, sizeof(Index), (long long)n, (long long)c, (long long)hl, (long long)wl,
                  (long long)s, down ? "down" : "up", kind_hi, kind_lo, path,
                  (long long)nt, (long long)bad, (long long)poisoned_left, (long long)expect_left);
  }
}

template <typename T, int S, typename Index>
void sweep(int64_t s, std::mt19937_64& rng) {
  const int64_t shapes[][4] = {{1, 1, 1, 1}, {2, 3, 2, 5}, {1, 5, 3, 7}, {1, 70, 1, 3}, {1, 2, 0, 3}};
  const Index nts[] = {1, 7, 32};
  for (const auto& sh : shapes)
    for (int down = 0; down < 2; ++down)
      for (int kind = 0; kind < 5; ++kind)
        for (int cl = 0; cl < 2; ++cl)
          for (Index nt : nts) {
            // the low-resolution side in the same layout family as the high-resolution one,
            // and once in a different one
            run_case<T, S, Index>(sh[0], sh[1], sh[2], sh[3], s, down, kind, kind, cl, nt, rng);
            run_case<T, S, Index>(sh[0], sh[1], sh[2], sh[3], s, down, kind, (kind + 1) % 5, cl, nt, rng);
            if (cl == 0 && nt == 1)  // the vectorized path, where these shapes qualify
              run_case<T, S, Index>(sh[0], sh[1], sh[2], sh[3], s, down, kind, kind, 2, nt, rng);
          }
}

// Shapes the vectorized micro-tiles accept (widths and channels multiples of the 16-byte
// vectors, RGB), every layout pair and direction; vec_mode decides which run.
template <typename T, int S, typename Index>
void sweep_vec(std::mt19937_64& rng) {
  const int64_t shapes[][4] = {{1, 3, 2, 16}, {2, 3, 1, 8}, {2, 16, 2, 32}, {1, 32, 3, 4}, {1, 3, 1, 2},
                               {2, 6, 1, 16}, {1, 1, 2, 1}, {1, 8, 2, 3}, {2, 4, 1, 5}};
  for (const auto& sh : shapes)
    for (int down = 0; down < 2; ++down)
      for (int kh = 0; kh < 5; ++kh)
        for (int kl = 0; kl < 5; ++kl)
          run_case<T, S, Index>(sh[0], sh[1], sh[2], sh[3], S, down, kh, kl, 2, Index(1), rng);
}

template <typename T, typename Index>
void all_scales(std::mt19937_64& rng) {
  sweep_vec<T, 2, Index>(rng);
  sweep_vec<T, 4, Index>(rng);
  sweep_vec<T, 8, Index>(rng);
  sweep<T, 0, Index>(1, rng);
  sweep<T, 2, Index>(2, rng);
  sweep<T, 0, Index>(2, rng);
  sweep<T, 3, Index>(3, rng);
  sweep<T, 4, Index>(4, rng);
  sweep<T, 0, Index>(5, rng);
  sweep<T, 8, Index>(8, rng);
}

int main() {
  std::mt19937_64 rng(12345);
  all_scales<uint8_t, int32_t>(rng);
  all_scales<uint16_t, int32_t>(rng);
  all_scales<uint32_t, int32_t>(rng);
  all_scales<uint64_t, int32_t>(rng);
  all_scales<E16, int32_t>(rng);
  all_scales<uint8_t, int64_t>(rng);
  all_scales<E16, int64_t>(rng);
  // the tile sizes the launcher uses: within the shared-memory budget, at least one each
  for (int64_t ch : {1, 3, 64, 1000})
    for (int64_t s : {1, 2, 3, 8, 16, 40}) {
      int64_t tc = 0, tj = 0;
      nhwc_tiles<int64_t>(ch, s, &tc, &tj);
      ++cases;
      if (tc < 1 || tj < 1 || tc > ch || (s * s <= kTileElems && tc * tj * s * s > kTileElems)) {
        ++failures;
        std::printf("FAIL tiles C=%lld s=%lld: tile_c=%lld tile_j=%lld\n", (long long)ch, (long long)s,
                    (long long)tc, (long long)tj);
      }
    }
  // every vectorized mode must have run for each element size it serves (a vec_mode that
  // rejected everything would pass the checks above)
  for (int m = 1; m < 4; ++m)
    for (int e : {1, 2, 4, 8, 16})
      if (vec_runs[m][e] < 5 && !(m == kVecRGB && e == 16)) {
        ++failures;
        std::printf("FAIL vectorized mode %d ran only %d cases with %d-byte elements\n", m, vec_runs[m][e], e);
      }
  if (failures) {
    std::printf("%d of %d cases failed\n", failures, cases);
    return 1;
  }
  std::printf("ok %d\n", cases);
  for (int m = 1; m < 4; ++m)
    std::printf("vectorized mode %d cases by element size 1/2/4/8/16: %d %d %d %d %d\n", m, vec_runs[m][1],
                vec_runs[m][2], vec_runs[m][4], vec_runs[m][8], vec_runs[m][16]);
  return 0;
}

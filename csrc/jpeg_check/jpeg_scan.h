// A JPEG file's entropy-coded data walked, block by block, without decoding pixels: whether every
// block of every scan is there and well formed.  Torch-free (the op is in cpu/jpeg_check_kernel.cpp).
//
// Why: libjpeg turns damage into pictures.  Data that ends early (a file cut and an end-of-image
// marker added, or a header claiming 16000 x 16000 over 700 bytes) decodes as flat grey, garbage
// decodes as noise, a restart marker out of sequence shifts what follows -- each one a warning
// that Pillow does not pass on, so the damaged picture looked like a photo to restore.
//
// Covered: Huffman-coded frames, baseline, extended sequential (8 or 12 bits) and progressive
// (spectral selection and successive approximation, EOB runs), interleaved or not, with restart
// intervals.  Not checked (status kNotChecked): arithmetic coding, lossless and hierarchical
// frames, a height given by a DNL marker, scans whose Huffman tables the file leaves out
// (Motion-JPEG frames: libjpeg-turbo takes the standard ones).  Only the first frame is walked
// (an MPO's first image).
// What libjpeg decodes to the same picture is not refused: bytes left over between a complete scan
// and the next marker ("extraneous bytes": some cameras write them), FF 00 between segments, a
// broken table no scan uses, components sharing one id.  One exception: a run of coefficients past
// the end of a block, which libjpeg decodes without a warning, is refused -- no encoder writes it,
// it is damage (bits read out of step).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace fastreshuffle {
namespace jpeg_scan {

enum Status : int64_t {
  kOk = 0,
  kNotChecked = 1,     // a kind of JPEG this walk does not cover
  kEndsEarly = 2,      // a scan's data ends (a marker, the end of the file) before its last block
  kBadCode = 3,        // bits that are no code of the scan's Huffman table
  kBadCoefficients = 4,  // a block's coefficients run past its last one
  kBadRestart = 5,     // a restart marker missing or out of sequence
  kBadHeader = 6,      // a marker segment that cannot be read (cut short, a table missing, ...)
};

struct Result {
  int64_t status = kOk;
  int64_t offset = 0;        // byte offset where the problem was found
  int64_t blocks_done = 0;   // blocks of the scan read before it (kEndsEarly, kBadCode, ...)
  int64_t blocks_total = 0;  // blocks of that scan
  int64_t scan = 0;          // 1-based number of that scan
};

struct Huffman {
  bool defined = false;
  bool broken = false;   // given, but over-subscribed
  int32_t maxcode[18];
  int32_t valptr[17];
  int32_t mincode[17];
  uint8_t vals[256];
  uint16_t look[512];  // 9-bit lookahead: (length << 8) | value, 0 where the code is longer
};

// Canonical codes of JPEG Annex C from the 16 counts; false for an over-subscribed table.
inline bool build_huffman(Huffman& h, const uint8_t* counts, const uint8_t* vals, int nvals) {
  h.defined = false;
  std::memset(h.look, 0, sizeof(h.look));
  std::memset(h.vals, 0, sizeof(h.vals));
  std::memcpy(h.vals, vals, nvals);
  int32_t code = 0, k = 0;
  for (int len = 1; len <= 16; ++len) {
    const int n = counts[len - 1];
    h.mincode[len] = code;
    h.valptr[len] = k;
    if (n) {
      if (code + n >= (1 << len)) return false;   // (no all-ones code: libjpeg refuses the table)
      for (int i = 0; i < n && len <= 9; ++i) {
        const int c = code + i, fill = 9 - len;
        for (int f = 0; f < (1 << fill); ++f) h.look[(c << fill) | f] = uint16_t((len << 8) | vals[k + i]);
      }
    }
    code += n;
    k += n;
    h.maxcode[len] = n ? code - 1 : -1;
    code <<= 1;
  }
  h.maxcode[17] = 0x7fffffff;
  h.defined = true;
  return true;
}

// The bits of one entropy-coded segment: 0xFF 0x00 is a data byte 0xFF; any other 0xFF xx is a
// marker, where the segment's bits end.
struct Bits {
  const uint8_t* d;
  int64_t n, pos;  // pos: next byte
  uint64_t buf = 0;
  int bits = 0;
  bool at_marker = false;  // pos is at a marker (or the end of the file)

  void fill() {
    while (bits <= 56 && !at_marker) {
      if (pos >= n) { at_marker = true; return; }
      const uint8_t b = d[pos];
      if (b == 0xFF) {
        if (pos + 1 >= n || d[pos + 1] != 0x00) { at_marker = true; return; }
        pos += 2;
      } else {
        pos += 1;
      }
      buf |= uint64_t(b) << (56 - bits);
      bits += 8;
    }
  }
  uint32_t peek(int k) {  // k in 1..24; zero bits past the end
    if (bits < k) fill();
    return uint32_t(buf >> (64 - k));
  }
  bool skip(int k) {
    if (bits < k) fill();
    if (bits < k) return false;
    buf = k == 64 ? 0 : buf << k;
    bits -= k;
    return true;
  }
  bool get(int k, uint32_t& v) {
    if (k == 0) { v = 0; return true; }
    v = peek(k);
    return skip(k);
  }
  // Drop what is left of the segment (padding, extraneous bytes) up to the next marker: its offset.
  int64_t to_marker() {
    buf = 0;
    bits = 0;
    while (!at_marker) {
      if (pos >= n) { at_marker = true; break; }
      if (d[pos] == 0xFF && pos + 1 < n && d[pos + 1] != 0x00 && d[pos + 1] != 0xFF) { at_marker = true; break; }
      pos += (d[pos] == 0xFF && pos + 1 < n && d[pos + 1] == 0x00) ? 2 : 1;
    }
    while (pos + 1 < n && d[pos] == 0xFF && d[pos + 1] == 0xFF) ++pos;  // fill bytes before a marker
    return pos;
  }
};

// One Huffman symbol, or -1 with the status set.
inline int decode(Bits& r, const Huffman& h, int64_t& status) {
  const uint16_t e = h.look[r.peek(9)];
  if (e) {
    if (!r.skip(e >> 8)) { status = kEndsEarly; return -1; }
    return e & 0xFF;
  }
  int32_t code = 0;
  for (int len = 1; len <= 16; ++len) {
    uint32_t b;
    if (!r.get(1, b)) { status = kEndsEarly; return -1; }
    code = (code << 1) | int32_t(b);
    if (code <= h.maxcode[len]) return h.vals[(h.valptr[len] + code - h.mincode[len]) & 0xFF];
  }
  status = kBadCode;
  return -1;
}

struct Component {
  int id = 0, h = 1, v = 1;
  int64_t bw = 0, bh = 0;        // blocks across / down (non-interleaved scans)
  int64_t gw = 0, gh = 0;        // the block grid padded to whole MCUs
  std::vector<uint64_t> nonzero; // progressive: coefficients made nonzero so far, bit k per block
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline Result check(const uint8_t* d, int64_t n) {
  Result res;
  auto fail = [&](int64_t status, int64_t at) {
    res.status = status;
    res.offset = at;
    return res;
  };
  if (n < 4 || d[0] != 0xFF || d[1] != 0xD8) return fail(kBadHeader, 0);
  Huffman dc[4], ac[4];
  std::vector<Component> comps;
  int64_t width = 0, height = 0, restart = 0, scans = 0;
  bool frame = false, progressive = false;
  int hmax = 1, vmax = 1;
  int64_t pos = 2;
  while (true) {
    while (pos < n && d[pos] != 0xFF) ++pos;  // (bytes between segments: tolerated, as libjpeg does)
    while (pos + 1 < n && d[pos + 1] == 0xFF) ++pos;
    if (pos + 1 >= n) return scans ? res : fail(kEndsEarly, pos);   // the end of the file
    const int m = d[pos + 1];
    pos += 2;
    if (m == 0x00) continue;                                        // FF 00 between segments: libjpeg skips it
    if (m == 0xD9) return scans ? res : fail(kEndsEarly, pos - 2);  // EOI
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;           // markers without a segment
    if (pos + 2 > n) return fail(kBadHeader, pos);
    const int64_t len = (int64_t(d[pos]) << 8) | d[pos + 1];
    if (len < 2 || pos + len > n) return fail(kBadHeader, pos);
    const uint8_t* s = d + pos + 2;
    const int64_t sl = len - 2;
    const int64_t seg = pos;
    pos += len;
    if (m == 0xC0 || m == 0xC1 || m == 0xC2) {
      if (scans) return res;   // a second frame after the first's scans (an MPO's next image): not walked
      //                          (one before any scan replaces the first: Pillow reports the last)
      comps.clear();
      hmax = vmax = 1;
      if (sl < 6) return fail(kBadHeader, seg);
      height = (int64_t(s[1]) << 8) | s[2];
      width = (int64_t(s[3]) << 8) | s[4];
      const int nf = s[5];
      if (height == 0) return fail(kNotChecked, seg);       // DNL
      if (width == 0 || nf == 0 || sl < 6 + 3 * nf) return fail(kBadHeader, seg);
      comps.resize(nf);
      for (int i = 0; i < nf; ++i) {
        comps[i].id = s[6 + 3 * i];
        comps[i].h = s[7 + 3 * i] >> 4;
        comps[i].v = s[7 + 3 * i] & 15;
        if (comps[i].h < 1 || comps[i].h > 4 || comps[i].v < 1 || comps[i].v > 4) return fail(kBadHeader, seg);
        hmax = std::max(hmax, comps[i].h);
        vmax = std::max(vmax, comps[i].v);
      }
      const int64_t mcux = ceil_div(width, 8 * hmax), mcuy = ceil_div(height, 8 * vmax);
      progressive = m == 0xC2;
      for (auto& c : comps) {
        c.bw = ceil_div(ceil_div(width * c.h, hmax), 8);
        c.bh = ceil_div(ceil_div(height * c.v, vmax), 8);
        c.gw = mcux * c.h;
        c.gh = mcuy * c.v;
      }
      frame = true;
    } else if ((m >= 0xC3 && m <= 0xCF) && m != 0xC4 && m != 0xC8 && m != 0xCC) {
      return fail(kNotChecked, seg);   // lossless, hierarchical, arithmetic coding
    } else if (m == 0xC4) {            // DHT
      int64_t i = 0;
      while (i < sl) {
        if (i + 17 > sl) return fail(kBadHeader, seg);
        const int tc = s[i] >> 4, th = s[i] & 15;
        int total = 0;
        for (int j = 0; j < 16; ++j) total += s[i + 1 + j];
        if (tc > 1 || th > 3 || total > 256 || i + 17 + total > sl) return fail(kBadHeader, seg);
        // (an over-subscribed table is refused only when a scan uses it: libjpeg builds no other)
        Huffman& t = tc ? ac[th] : dc[th];
        t.broken = !build_huffman(t, s + i + 1, s + i + 17, total);
        i += 17 + total;
      }
    } else if (m == 0xDD) {            // DRI
      if (sl < 2) return fail(kBadHeader, seg);
      restart = (int64_t(s[0]) << 8) | s[1];
    } else if (m == 0xDA) {            // SOS, then the scan's data
      if (!frame || sl < 1) return fail(kBadHeader, seg);
      const int ns = s[0];
      if (ns < 1 || ns > 4 || sl < 1 + 2 * ns + 3) return fail(kBadHeader, seg);
      Component* sc[4];
      int td[4], ta[4];
      for (int i = 0; i < ns; ++i) {
        // the first frame component with this id not yet in the scan (libjpeg's get_sos: files
        // whose components all have one id decode as if numbered in order)
        sc[i] = nullptr;
        for (auto& c : comps) {
          if (c.id != s[1 + 2 * i] || std::find(sc, sc + i, &c) != sc + i) continue;
          sc[i] = &c;
          break;
        }
        if (sc[i] == nullptr) return fail(kBadHeader, seg);
        td[i] = s[2 + 2 * i] >> 4;
        ta[i] = s[2 + 2 * i] & 15;
        if (td[i] > 3 || ta[i] > 3) return fail(kBadHeader, seg);
      }
      const int ss = progressive ? s[1 + 2 * ns] : 0, se = progressive ? s[2 + 2 * ns] : 63;
      const int ah = s[3 + 2 * ns] >> 4;
      const bool dc_scan = ss == 0, refine = progressive && ah != 0;
      // (a sequential scan is read whole whatever its Ss / Se say: libjpeg only warns of them)
      if (progressive && (ss > se || se > 63 || (ss == 0 && se != 0) || (ss > 0 && ns != 1))) {
        return fail(kBadHeader, seg);
      }
      for (int i = 0; i < ns; ++i) {   // the tables this scan reads
        const bool need_dc = dc_scan && !refine, need_ac = !progressive || !dc_scan;
        // none given: libjpeg-turbo takes the standard tables (Motion-JPEG frames omit them): not walked
        if ((need_dc && dc[td[i]].broken) || (need_ac && ac[ta[i]].broken)) return fail(kBadHeader, seg);
        if ((need_dc && !dc[td[i]].defined) || (need_ac && !ac[ta[i]].defined)) return fail(kNotChecked, seg);
      }
      if (progressive && !scans) {
        // Every block costs at least one bit (its DC code), so a frame claiming more blocks than
        // the file has bits ends early: said before the refinement state (8 bytes a block) is made
        int64_t blocks = 0;
        for (auto& c : comps) blocks += c.bw * c.bh;
        if (blocks > 8 * n) {
          res.scan = 1;
          res.blocks_total = blocks;
          return fail(kEndsEarly, pos);
        }
        for (auto& c : comps) c.nonzero.assign(size_t(c.gw * c.gh), 0);
      }
      ++scans;
      res.scan = scans;
      const int64_t mcux = ceil_div(width, 8 * hmax), mcuy = ceil_div(height, 8 * vmax);
      // MCUs of the scan, and blocks per MCU: interleaved, each component's h x v; else one block
      const int64_t mcus = ns > 1 ? mcux * mcuy : sc[0]->bw * sc[0]->bh;
      int per_mcu = 0;
      for (int i = 0; i < ns; ++i) per_mcu += ns > 1 ? sc[i]->h * sc[i]->v : 1;
      res.blocks_total = mcus * per_mcu;
      res.blocks_done = 0;
      Bits r{d, n, pos};
      int64_t status = kOk;
      int64_t eobrun = 0, restarts = 0;
      for (int64_t mcu = 0; mcu < mcus; ++mcu) {
        if (restart && mcu && mcu % restart == 0) {   // RSTn, n counting 0..7, between intervals
          const int64_t at = r.to_marker();
          if (at + 1 >= n || d[at] != 0xFF) return fail(kEndsEarly, at);
          const int mk = d[at + 1];
          if (mk < 0xD0 || mk > 0xD7) return fail(mk == 0xD9 || mk == 0xDA ? kEndsEarly : kBadRestart, at);
          if (mk != 0xD0 + (restarts & 7)) return fail(kBadRestart, at);
          ++restarts;
          r = Bits{d, n, at + 2};
          eobrun = 0;
        }
        for (int i = 0; i < ns; ++i) {
          Component& c = *sc[i];
          const int bv = ns > 1 ? c.v : 1, bh = ns > 1 ? c.h : 1;
          for (int y = 0; y < bv; ++y) {
            for (int x = 0; x < bh; ++x) {
              // the block's place in the component's grid (progressive refinement keeps state there)
              const int64_t gy = ns > 1 ? (mcu / mcux) * c.v + y : mcu / c.bw;
              const int64_t gx = ns > 1 ? (mcu % mcux) * c.h + x : mcu % c.bw;
              uint64_t* nz = progressive ? &c.nonzero[size_t(gy * c.gw + gx)] : nullptr;
              uint32_t v;
              if (dc_scan) {
                if (refine) {
                  if (!r.get(1, v)) status = kEndsEarly;
                } else {
                  const int t = decode(r, dc[td[i]], status);
                  if (t > 16) status = kBadCode;
                  else if (t >= 0 && !r.get(t, v)) status = kEndsEarly;
                  if (!progressive && status == kOk) {   // sequential: the AC coefficients follow
                    for (int k = 1; k < 64 && status == kOk;) {
                      const int rs = decode(r, ac[ta[i]], status);
                      if (rs < 0) break;
                      const int run = rs >> 4, sz = rs & 15;
                      if (sz == 0) {
                        if (run != 15) break;   // end of block
                        k += 16;
                        continue;
                      }
                      k += run;
                      if (k > 63) { status = kBadCoefficients; break; }
                      if (!r.get(sz, v)) { status = kEndsEarly; break; }
                      ++k;
                    }
                  }
                }
              } else if (!refine) {              // progressive AC, first pass
                if (eobrun > 0) {
                  --eobrun;
                } else {
                  for (int k = ss; k <= se && status == kOk;) {
                    const int rs = decode(r, ac[ta[i]], status);
                    if (rs < 0) break;
                    const int run = rs >> 4, sz = rs & 15;
                    if (sz == 0) {
                      if (run < 15) {
                        eobrun = int64_t(1) << run;
                        if (run) {
                          if (!r.get(run, v)) { status = kEndsEarly; break; }
                          eobrun += v;
                        }
                        --eobrun;
                        break;
                      }
                      k += 16;
                      continue;
                    }
                    k += run;
                    if (k > se) { status = kBadCoefficients; break; }
                    if (!r.get(sz, v)) { status = kEndsEarly; break; }
                    *nz |= uint64_t(1) << k;
                    ++k;
                  }
                }
              } else {                            // progressive AC, refinement (libjpeg's order)
                int k = ss;
                if (eobrun == 0) {
                  for (; k <= se && status == kOk; ++k) {
                    const int rs = decode(r, ac[ta[i]], status);
                    if (rs < 0) break;
                    int run = rs >> 4;
                    const int sz = rs & 15;
                    if (sz) {
                      if (sz != 1) { status = kBadCoefficients; break; }
                      if (!r.get(1, v)) { status = kEndsEarly; break; }
                    } else if (run != 15) {
                      eobrun = int64_t(1) << run;
                      if (run) {
                        if (!r.get(run, v)) { status = kEndsEarly; break; }
                        eobrun += v;
                      }
                      break;
                    }
                    // pass over `run` zero coefficients, a correction bit for each nonzero one
                    for (; k <= se; ++k) {
                      if (*nz >> k & 1) {
                        if (!r.get(1, v)) { status = kEndsEarly; break; }
                      } else if (--run < 0) {
                        break;
                      }
                    }
                    if (status != kOk) break;
                    if (sz) {
                      if (k > se) { status = kBadCoefficients; break; }
                      *nz |= uint64_t(1) << k;
                    }
                  }
                }
                if (eobrun > 0 && status == kOk) {
                  for (; k <= se; ++k) {
                    if ((*nz >> k & 1) && !r.get(1, v)) { status = kEndsEarly; break; }
                  }
                  --eobrun;
                }
              }
              if (status != kOk) return fail(status, r.pos);
              ++res.blocks_done;
            }
          }
        }
      }
      pos = r.to_marker();
    }
    // APPn, COM, DQT, ...: skipped
  }
}

}  // namespace jpeg_scan
}  // namespace fastreshuffle

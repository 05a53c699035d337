// A CPU allocator for large tensors on transparent huge pages.
//
// Large outputs are allocated 2 MiB-aligned and marked MADV_HUGEPAGE (transparent huge pages),
// so that first touching them costs one page fault per 2 MiB instead of one per 4 KiB.  For
// a freshly allocated 50 MB output the 4 KiB faults (and zeroing) take several times longer
// than the copy itself (measured: 35 ms vs 5 ms for a 1x3x2048x2048 float32 clone).  Where THP
// is disabled the advice is ignored and this is an ordinary aligned allocation.
#pragma once

#include <c10/core/Allocator.h>

#include <cstddef>

namespace fastreshuffle {

// Smaller outputs (below kHugeThreshold bytes) go through torch's CPU allocator: glibc serves
// blocks below its largest mmap threshold (32 MiB on 64-bit) from the heap once warm, reusing
// already-faulted pages, which is faster still (measured: a 12.6 MB uint8 output 1.5 ms vs
// 3 ms with fresh huge pages).
constexpr size_t kHugeThreshold = size_t{32} << 20;

// The allocator (one per process, created at first use; it lives as long as the process).
c10::Allocator* huge_page_allocator();

}  // namespace fastreshuffle

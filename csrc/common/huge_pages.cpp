// The huge-page CPU allocator (huge_pages.h).
#include "common/huge_pages.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fastreshuffle {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;

void free_huge(void* p) { std::free(p); }

struct HugePageAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    void* p = nullptr;
    if (n == 0) return {nullptr, nullptr, &free_huge, c10::Device(c10::DeviceType::CPU)};
    const int err = posix_memalign(&p, kHugePage, n);
    TORCH_CHECK(err == 0 && p != nullptr, "reshuffle: could not allocate ", n,
                " bytes for the output (out of memory)");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, n, MADV_HUGEPAGE);  // advice only: failure just means 4 KiB pages
#endif
    return {p, p, &free_huge, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &free_huge; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

}  // namespace

c10::Allocator* huge_page_allocator() {
  static HugePageAllocator allocator;
  return &allocator;
}

}  // namespace fastreshuffle

#include "runtime.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>

#include <unistd.h>

namespace fastcnn {
namespace {

int initial_threads() {
#ifdef _OPENMP
  return std::max(1, omp_get_max_threads());  // honours OMP_NUM_THREADS
#else
  return 1;
#endif
}

// Process-wide on purpose: omp_set_num_threads only changes the calling thread's setting, but a user who calls
// fastcnn.set_num_threads expects every later call, from any Python thread, to use that many threads.
std::atomic<int> g_threads{initial_threads()};
std::atomic<std::int64_t> g_memory_limit{0};

}  // namespace

int num_threads() { return g_threads.load(std::memory_order_relaxed); }

int max_settable_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return static_cast<int>(std::max<unsigned>(256u, 4u * hw));
}

void set_num_threads(int n) {
  if (n < 1 || n > max_settable_threads()) {
    throw std::invalid_argument("set_num_threads: n must be between 1 and " + std::to_string(max_settable_threads()) +
                                "; got " + std::to_string(n));
  }
#ifdef _OPENMP
  g_threads.store(n, std::memory_order_relaxed);
#else
  (void)n;  // a serial build has one thread whatever is asked
#endif
}

std::int64_t default_memory_limit() {
  // Linux overcommits, so a failed malloc cannot be relied on: bound what one call may ask for instead.
  // Half of physical memory leaves room for the caller's own arrays.
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) return std::int64_t{4} << 30;
  return static_cast<std::int64_t>(pages) * page_size / 2;
}

std::int64_t memory_limit() {
  std::int64_t limit = g_memory_limit.load(std::memory_order_relaxed);
  return limit > 0 ? limit : default_memory_limit();
}

void set_memory_limit(std::int64_t bytes) {
  if (bytes < 0) throw std::invalid_argument("set_memory_limit: bytes must be positive; got " + std::to_string(bytes));
  g_memory_limit.store(bytes, std::memory_order_relaxed);  // 0 restores the default
}

index_t checked_mul(index_t a, index_t b, const char* what) {
  index_t result;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &result)) {
    throw std::invalid_argument(std::string(what) + ": size arithmetic overflows 64-bit integers");
  }
  return result;
}

index_t checked_add(index_t a, index_t b, const char* what) {
  index_t result;
  if (__builtin_add_overflow(a, b, &result)) {
    throw std::invalid_argument(std::string(what) + ": size arithmetic overflows 64-bit integers");
  }
  return result;
}

void check_memory(const char* op, index_t bytes) {
  const std::int64_t limit = memory_limit();
  if (bytes > limit) {
    throw MemoryLimitError(std::string(op) + ": this call needs " + std::to_string(bytes) +
                           " bytes for its outputs and workspaces, more than fastcnn's memory limit of " +
                           std::to_string(limit) + " bytes (see fastcnn.set_memory_limit); use a smaller batch");
  }
}

void AlignedDeleter::operator()(float* p) const noexcept { std::free(p); }

FloatBuffer allocate_floats(index_t count) {
  if (count < 1) count = 1;
  const index_t bytes = checked_mul(ceil_div(count, 16) * 16, static_cast<index_t>(sizeof(float)), "allocate");
  void* p = std::aligned_alloc(64, static_cast<std::size_t>(bytes));
  if (p == nullptr) throw std::bad_alloc();
  return FloatBuffer(static_cast<float*>(p));
}

index_t l2_cache_bytes() {
  static const index_t bytes = [] {
#ifdef _SC_LEVEL2_CACHE_SIZE
    const long reported = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (reported > 0) return static_cast<index_t>(reported);
#endif
    return index_t{1} << 20;
  }();
  return bytes;
}

}  // namespace fastcnn

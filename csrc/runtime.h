// Process-wide runtime settings (thread count, memory limit) and the small helpers every operator uses:
// checked size arithmetic, aligned per-call workspaces and a deterministic parallel loop.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastcnn {

using index_t = std::int64_t;

// Thrown when an operator's outputs and workspaces would exceed the memory limit; bindings turn it into a
// Python MemoryError carrying this message.
class MemoryLimitError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

int num_threads();
void set_num_threads(int n);
int max_settable_threads();

std::int64_t memory_limit();
void set_memory_limit(std::int64_t bytes);
std::int64_t default_memory_limit();

// a * b, or std::invalid_argument naming `what` when the product does not fit in int64.
index_t checked_mul(index_t a, index_t b, const char* what);
index_t checked_add(index_t a, index_t b, const char* what);

// Raise MemoryLimitError when `bytes` exceed the limit; `op` names the caller in the message.
void check_memory(const char* op, index_t bytes);

// 64-byte aligned float buffer owned by one call (never shared between calls, so concurrent calls are safe).
struct AlignedDeleter {
  void operator()(float* p) const noexcept;
};
using FloatBuffer = std::unique_ptr<float[], AlignedDeleter>;
FloatBuffer allocate_floats(index_t count);

// Runs body(item, thread) for item in [0, items). Items must write disjoint outputs; then the result does not
// depend on how items are spread over threads, which is how every kernel stays bitwise thread-count invariant.
template <class Body>
void parallel_for(index_t items, int threads, Body&& body) {
  if (items <= 0) return;
  if (threads > items) threads = static_cast<int>(items);
#ifdef _OPENMP
  if (threads > 1) {
    // Items are handed out in runs of about 1/16 of a thread's share: dynamic, so uneven items still balance,
    // but not one by one, which made the threads fight over the shared counter (2048 pooling planes of 4 KiB:
    // 6x slower at 2 threads than at 1).
    const index_t run = std::max<index_t>(1, items / (16 * static_cast<index_t>(threads)));
#pragma omp parallel for schedule(dynamic, run) num_threads(threads)
    for (index_t item = 0; item < items; ++item) body(item, omp_get_thread_num());
    return;
  }
#endif
  for (index_t item = 0; item < items; ++item) body(item, 0);
}

inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

// One core's L2 cache in bytes (sysconf; 1 MiB when the system does not say).
index_t l2_cache_bytes();

}  // namespace fastcnn

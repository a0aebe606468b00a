#include "activation.h"

#include <algorithm>

namespace fastcnn {
namespace {

constexpr index_t kSpan = 1 << 15;  // elements per work item: big enough to amortise scheduling

}  // namespace

void relu_forward(index_t count, int threads, const float* x, float* y) {
  parallel_for(ceil_div(count, kSpan), threads, [&](index_t item, int) {
    const index_t end = std::min(count, (item + 1) * kSpan);
    for (index_t i = item * kSpan; i < end; ++i) y[i] = (x[i] > 0.0f || x[i] != x[i]) ? x[i] : 0.0f;  // NaN stays NaN, as in PyTorch
  });
}

void relu_backward(index_t count, int threads, const float* dy, const float* y, float* dx) {
  parallel_for(ceil_div(count, kSpan), threads, [&](index_t item, int) {
    const index_t end = std::min(count, (item + 1) * kSpan);
    for (index_t i = item * kSpan; i < end; ++i) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
  });
}

}  // namespace fastcnn

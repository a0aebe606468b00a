// Elementwise activations whose cost is memory traffic: run on the kernels' thread pool instead of NumPy's
// single thread.
#pragma once

#include "runtime.h"

namespace fastcnn {

void relu_forward(index_t count, int threads, const float* x, float* y);                    // y = max(x, 0), NaN kept
void relu_backward(index_t count, int threads, const float* dy, const float* y, float* dx);  // dx = dy * (y > 0)

}  // namespace fastcnn

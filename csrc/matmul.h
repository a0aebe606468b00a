// Dense matrix product C = op(A) * op(B) for fully connected layers, on the same thread pool as the convolution
// kernels. (Calling NumPy's BLAS in between our OpenMP kernels makes two thread pools spin against each other on
// the same cores; on 2 cores that cost a LeNet training step 4x.)
#pragma once

#include "runtime.h"

namespace fastcnn {

struct MatmulGeometry {
  index_t m, n, k;
  bool transpose_a;  // A stored as (k, m) instead of (m, k)
  bool transpose_b;  // B stored as (n, k) instead of (k, n)
};

index_t matmul_workspace_bytes(const MatmulGeometry& g, int threads);

void matmul(const MatmulGeometry& g, int threads,
            const float* a,  // [m, k] or [k, m] when transpose_a
            const float* b,  // [k, n] or [n, k] when transpose_b
            float* c);       // [m, n]

}  // namespace fastcnn

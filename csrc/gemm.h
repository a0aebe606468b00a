// Single-precision GEMM used by the convolution operators: C = (accumulate ? C : 0) + A * B.
// A and B are strided views, so the operators pass transposes (W^T, im2col^T) without copying.
#pragma once

#include "runtime.h"

namespace fastcnn {

struct MatrixView {
  const float* data;
  index_t row_stride;  // distance between A(i, k) and A(i + 1, k)
  index_t col_stride;  // distance between A(i, k) and A(i, k + 1)
};

// One instruction-set variant of the blocked GEMM. sgemm is serial: operators split the output between
// threads themselves. For a given K, every element of C is summed in the same order whatever the tiling of
// M and N, so splitting the output never changes a result bit.
struct GemmKernel {
  const char* name;
  int mr;                    // micro-tile rows
  int nr;                    // micro-tile columns
  index_t workspace_floats;  // packing space one sgemm call needs
  void (*sgemm)(index_t M, index_t N, index_t K, MatrixView A, MatrixView B, float* C, index_t ldc, bool accumulate,
                float* workspace);
};

// The best variant this CPU supports, chosen once at first use. FASTCNN_SIMD=generic|avx2|avx512 caps the choice
// (used by tests to check every variant against the reference).
const GemmKernel& gemm_kernel();

const GemmKernel& gemm_kernel_generic();
#ifdef FASTCNN_HAVE_X86_VARIANTS
const GemmKernel& gemm_kernel_avx2();
const GemmKernel& gemm_kernel_avx512();
#endif

}  // namespace fastcnn

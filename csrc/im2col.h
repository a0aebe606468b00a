// im2col and its adjoint for the convolution operators, plus writers that put operands straight into the GEMM's
// packed layouts (gemm.h). Kernels only: no checks, no threads.
#pragma once

#include "conv2d.h"
#include "gemm.h"

namespace fastcnn {

// Rows [row0, row0 + rows) of the im2col matrix of one sample and group, columns [p0, p0 + cols), into dst
// (row stride ld). Row r is input channel r / (kH*kW) of `planes` at kernel offset (r / kW % kH, r % kW).
void im2col(const ConvGeometry& g, const float* planes, index_t row0, index_t rows, index_t p0, index_t cols,
            float* dst, index_t ld);

// The adjoint of im2col: adds rows [0, rows) of src (row stride ld) back onto the input planes. For a fixed row,
// distinct columns land on distinct pixels, so each pixel receives its terms in row order.
void col2im_add(const ConvGeometry& g, float* planes, index_t rows, index_t p0, index_t cols, const float* src,
                index_t ld);

// Copies a rows x cols matrix (row stride ld) into packed B (K x N) at rows [row0, ...), columns [column0, ...).
void copy_into_packed_b(const GemmKernel& gemm, const float* src, index_t ld, index_t rows, index_t cols,
                        float* packed, index_t K, index_t N, index_t row0, index_t column0);

// Zeroes the columns of packed B's last panel that lie past N (the micro-kernel reads whole panels).
void zero_packed_b_tail(const GemmKernel& gemm, float* packed, index_t K, index_t N);

// Copies an M x cols matrix (row stride ld) into packed A (M x K) at columns [k0, k0 + cols), rows past M zeroed.
void copy_into_packed_a(const GemmKernel& gemm, const float* src, index_t ld, index_t M, index_t cols, float* packed,
                        index_t K, index_t k0);

// The whole im2col matrix of one group for samples [n0, n0 + samples), each contributing output columns
// [p0, p0 + cols), into packed B (K = patch size, N = samples * cols), padding columns zeroed.
void im2col_packed(const GemmKernel& gemm, const ConvGeometry& g, const float* x, index_t group, index_t n0,
                   index_t samples, index_t p0, index_t cols, float* packed);

// Rows [0, panel_rows) x columns [0, cols) of src (row stride ld), transposed into the packed-B panel whose first
// column is r0 (a multiple of NR), at rows [k0, k0 + cols); the panel's lanes past panel_rows are zeroed.
void transpose_panel_into_packed_b(const GemmKernel& gemm, const float* src, index_t ld, index_t panel_rows,
                                   index_t cols, float* packed, index_t K, index_t N, index_t r0, index_t k0);

// im2col rows [row0, row0 + rows) x columns [p0, p0 + cols) of one sample, transposed, into packed B
// (K, N = rows) at rows [k0, k0 + cols): the B operand of dW += dY * col^T.
void im2col_packed_transposed(const GemmKernel& gemm, const ConvGeometry& g, const float* planes, index_t row0,
                              index_t rows, index_t p0, index_t cols, float* packed, index_t K,
                              index_t k0);

}  // namespace fastcnn

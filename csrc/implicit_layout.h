// The data layouts the implicit-GEMM convolution (conv2d_implicit.cpp) reads and writes: zero-padded input planes,
// grad_output laid out on the padded width or transposed into channel panels, weights packed whole, and the
// stores that take GEMM tiles back to NCHW. The explicit path's counterpart is im2col.h.
#pragma once

#include "conv2d.h"

namespace fastcnn {

// The zero-padded copy of one (sample, group) that the GEMM reads.
struct PaddedInput {
  index_t height, width;  // Hp, Wp
  index_t columns;        // GEMM columns per (sample, group): (H_out - 1) * Wp + W_out, wrapped ones included
  index_t floats;         // per (sample, group): the planes plus NR zeros the last tile may read past them
};

// The padded layout of one (sample, group) of g's input, for micro-tiles NR columns wide.
PaddedInput padded_input(const ConvGeometry& g, index_t nr);

// Whether every value is finite (an exponent of all ones is an infinity or NaN); integer arithmetic, so the loop
// vectorises.
bool all_finite(const float* values, index_t count);
// The same on `threads` threads for large arrays (a serial scan of a whole batch held back the second thread).
bool all_finite(const float* values, index_t count, int threads);

// The planes of one (sample, group) into its zero-padded copy (and the slack after it zeroed). Returns whether
// every value copied is finite when asked to check.
bool pad_unit(const ConvGeometry& g, const PaddedInput& pad, const float* src, float* dst, bool check_finite);

// One (sample, group)'s grad_output channels laid out on the padded width: row o holds dy[o][oh][ow] at
// oh * Wp + ow, zeros in the wrapped columns and up to `length`.
void spread_rows(const ConvGeometry& g, const PaddedInput& pad, const float* dy_planes, index_t channels,
                 index_t length, float* dst);

// One (sample, group)'s grad_output channels transposed into NR-channel panels: panel p holds [pixel][NR] for
// channels p * NR + j, zeros past the last channel. The B operand of multiply_taps.
void transpose_channels(const float* dy_planes, index_t channels, index_t plane, index_t nr, float* dst);

// Rows [0, M) of a row-major M x K matrix into the whole-K packed layout: panel i0 at i0 * K holds [k][MR].
void pack_whole(index_t M, index_t K, const float* src, index_t mr, float* packed);

// The transpose of a row-major M x K matrix (so K x M), packed whole in NR-column panels: panel j0 at j0 * K
// holds [k][NR], columns past M zero. The B operand of multiply_pixels.
void pack_transposed_whole(index_t M, index_t K, const float* src, index_t nr, float* packed);

// Columns [q0, q1) of a unit's output tile (row stride ld), keeping those that are real pixels, into y.
void store_pixels(const ConvGeometry& g, const PaddedInput& pad, const float* tile, index_t ld, index_t q0,
                  index_t q1, index_t rows, const float* bias, float* y_planes);

}  // namespace fastcnn

// Single-precision GEMM used by the convolution operators: C = (accumulate ? C : 0) + A * B.
//
// Operands are packed first, then multiplied. Packing layouts (shared by every variant, parametrised by the
// variant's MR, NR and KC) let an operator write im2col output straight into packed B, skipping a copy:
//   packed A (M x K): K is cut into blocks of KC; block b starts at b*KC*Mpad, Mpad = M rounded up to MR; inside,
//     row panel i0 (MR rows) starts at i0*kc and holds [k][MR]. Rows past M are zero.
//   packed B (K x N): block b starts at b*KC*Npad, Npad = N rounded up to NR; inside, column panel j0 (NR columns)
//     starts at j0*kc and holds [k][NR]. Columns past N are zero.
// where kc = min(KC, K - b*KC) is the size of block b.
#pragma once

#include "runtime.h"

namespace fastcnn {

constexpr index_t kMaxImplicitSegments = 64;

// The rows multiply_abt_implicit takes inner products of: `count` pieces of `length` floats (a multiple of the
// vector width), piece r starting a_stride * r floats after the row's start in A and b_stride * r in B.
struct DotRows {
  index_t count, length, a_stride, b_stride;
};

struct MatrixView {
  const float* data;
  index_t row_stride;  // distance between A(i, k) and A(i + 1, k)
  index_t col_stride;  // distance between A(i, k) and A(i, k + 1)
};

// One instruction-set variant. Everything here is serial: operators split the output between threads.
// For a given K, each element of C is summed in the same order whatever the M/N tiling, so splitting the output
// between threads never changes a result bit.
struct GemmKernel {
  const char* name;
  int mr;      // micro-tile rows
  int nr;      // micro-tile columns
  index_t kc;  // K block
  void (*pack_a)(index_t M, index_t K, MatrixView A, float* packed);
  void (*pack_b)(index_t K, index_t N, MatrixView B, float* packed);
  void (*multiply_packed)(index_t M, index_t N, index_t K, const float* packed_a, const float* packed_b, float* C,
                          index_t ldc, bool accumulate);
  // C (+)= A * B^T for row-major A (M x K, row stride lda) and B (N x K, row stride ldb), without packing.
  void (*multiply_abt)(index_t M, index_t N, index_t K, const float* A, index_t lda, const float* B, index_t ldb,
                       float* C, index_t ldc, bool accumulate);
  // C (M x N) = bias[i] (when bias is not null) + A * B for A packed whole (panel i0 at i0 * K holding [k][R],
  // R = implicit_panel_rows(M)) and B(k, j) = base[offsets[k] + j],
  // read in place: the implicit-GEMM convolution. base must be readable up to offsets[k] + N rounded up to NR.
  // `stream`: C will not be read again soon, so whole tiles may be written past the caches (when aligned).
  void (*multiply_implicit)(index_t M, index_t N, index_t K, const float* packed_a, const float* base,
                            const index_t* offsets, const float* bias, float* C, index_t ldc, bool stream);
  // C (M x N) (+)= sum over s < S of A_s * B_s^T, row i of A_s at a[s] + i * lda and row j of B_s at
  // b[s] + offsets[j], rows in pieces as DotRows says; S <= kMaxImplicitSegments.
  void (*multiply_abt_implicit)(index_t M, index_t N, index_t S, const DotRows& rows, const float* const* a, index_t lda,
                                const float* const* b, const index_t* offsets, float* C, index_t ldc, bool accumulate);
  // y[j * channel_stride + i] = bias[j] (or 0 with no bias) + (A * B)(i, j) for 1 <= rows <= mr pixels and j < M,
  // A(i, k) = base[offsets[k] + pixels[i]] and B the K x M matrix packed whole in NR-column panels (panel j0 at
  // j0 * K holding [k][NR], columns past M zero): a tile of consecutive output pixels, stored transposed to NCHW.
  void (*multiply_pixels)(index_t rows, index_t M, index_t K, const float* base, const index_t* offsets,
                          const index_t* pixels, const float* packed_b, const float* bias, float* y,
                          index_t channel_stride);
  // The weight gradient along channels: for 1 <= taps <= mr and nr <= NR channels, C(i, j) at
  // c[i * ldc_tap + j * ldc_channel] (+)= sum over s < S and the rows x cols output pixels (oh, ow) of
  // inputs[s][offsets[i] + oh * row_stride + ow] * grads[s][(oh * cols + ow) * NR + j].
  void (*multiply_taps)(index_t taps, index_t nr, index_t S, const float* const* inputs, const float* const* grads,
                        const index_t* offsets, index_t rows, index_t cols, index_t row_stride, float* c,
                        index_t ldc_tap, index_t ldc_channel, bool accumulate);
  // Winograd F(2x2, 3x3) (conv2d_winograd.cpp), on a channels-last input whose channels are whole vectors.
  // Input transforms of count <= mr tiles (tile i's 4x4 window at origins[i]; pixels pixel_stride and rows
  // row_stride floats apart) as rows i0 .. i0 + mr of 16 packed-A matrices (padded_m x channels, matrix e at
  // packed + e * matrix_stride), rows past count zero.
  void (*winograd_pack_input)(index_t count, const float* const* origins, index_t pixel_stride, index_t row_stride,
                              index_t channels, index_t i0, index_t padded_m, index_t matrix_stride, float* packed);
  // Output transforms (+ bias, which has room for the channels rounded up to a vector) of count <= 4 tiles side by
  // side, tile i's sums at m + e * matrix_stride + i * tile_stride, to NCHW y (the tiles' top-left pixel, channel
  // 0): rows < rows (1 or 2) and columns < columns (at most 8) of each of `channels` planes.
  void (*winograd_store_output)(index_t count, const float* m, index_t tile_stride, index_t matrix_stride,
                                index_t channels, const float* bias, float* y, index_t plane, index_t width,
                                index_t rows, index_t columns);
  // dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < columns (planes to channels last).
  void (*transpose_to_channels_last)(index_t rows, index_t columns, const float* src, index_t src_stride, float* dst,
                                     index_t dst_stride);
  // The Winograd weight gradient's operands, for blocks of `tiles` <= kc tiles (one K block). Input transforms of
  // count tiles as rows t0.. of 16 packed-B matrices (tiles x channels), matrix e at packed + e * matrix_stride ...
  void (*winograd_pack_input_rows)(index_t count, const float* const* origins, index_t pixel_stride,
                                   index_t row_stride, index_t channels, index_t t0, index_t tiles,
                                   index_t matrix_stride, float* packed);
  // ... and A dy A^T of count 2x2 grad_output tiles (channels last) as columns t0.. of 16 packed-A matrices
  // (channels x tiles).
  void (*winograd_pack_gradient)(index_t count, const float* const* origins, index_t pixel_stride,
                                 index_t row_stride, index_t channels, index_t t0, index_t tiles,
                                 index_t matrix_stride, float* packed);
  int vector_floats;  // VL: floats per SIMD vector

  // Rows per packed panel of multiply_implicit's A: MR, or all of M when M is smaller (one exact panel).
  index_t implicit_panel_rows(index_t M) const { return M < mr ? M : mr; }

  index_t packed_a_floats(index_t M, index_t K) const { return ceil_div(M, mr) * mr * K; }
  index_t packed_b_floats(index_t K, index_t N) const { return ceil_div(N, nr) * nr * K; }

  // Address of B(k, j) in packed B (K x N): for operators that write their B operand directly in packed form.
  float* packed_b_at(float* packed, index_t K, index_t N, index_t k, index_t j) const {
    const index_t padded_n = ceil_div(N, nr) * nr;
    const index_t block = k / kc, block_k = k - block * kc;
    const index_t block_size = std::min(kc, K - block * kc);
    const index_t panel = j / nr;
    return packed + block * kc * padded_n + panel * nr * block_size + block_k * nr + (j - panel * nr);
  }

  // Convenience: pack both operands into `workspace` (packed_a_floats + packed_b_floats) and multiply.
  void sgemm(index_t M, index_t N, index_t K, MatrixView A, MatrixView B, float* C, index_t ldc, bool accumulate,
             float* workspace) const {
    float* packed_b = workspace + packed_a_floats(M, K);
    pack_a(M, K, A, workspace);
    pack_b(K, N, B, packed_b);
    multiply_packed(M, N, K, workspace, packed_b, C, ldc, accumulate);
  }
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

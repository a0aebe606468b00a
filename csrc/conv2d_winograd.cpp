// 3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016).
//
// The output is cut into 2x2 tiles; tile (ty, tx) reads the 4x4 window of the padded input at (2 ty, 2 tx). With
// U = G g G^T for each (output channel, input channel) filter g and V = B^T d B for each (tile, input channel)
// window d, the tile is A^T [sum over input channels of U (.) V] A. For each of the 16 transform positions e the
// channel sums are one GEMM, M_e (tiles x C_out) = V_e (tiles x C_in) * U_e (C_in x C_out): 16 multiply-adds per
// tile and channel pair against the direct convolution's 36, which is how a large layer gets past the machine's
// FMA peak (PyTorch's oneDNN does the same there). The price is the transforms, linear in the channels, so a layer
// needs enough channels both ways (kMinChannels); and rounding, small because the transforms' coefficients are
// 0, +-1 and +-1/2 (the results are tested against the reference at the direct paths' tolerance).
//
// Layout: each block of tile rows (whole images, or rows of one image) copies the input rows its tiles read into
// its thread's buffer, channels last and zero-padded, channels rounded up to whole vectors, so that a vector holds
// one pixel's channels and every transform is whole-vector additions (gemm_kernel.inc). It then transforms its
// tiles into the packed A operands of the 16 GEMMs (sized to stay in L2), multiplies, and transforms the sums
// straight into y.
// Each output is one fixed sequence of operations, so results are bitwise the same for any thread count. The input
// gradient is this forward on the transposed geometry (conv2d_implicit.cpp); the weight gradient, at the end of
// this file, reuses the input copy and transform.
#include "conv2d_winograd.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "conv2d_implicit.h"  // sum_partial_gradients
#include "gemm.h"
#include "implicit_layout.h"  // all_finite

namespace fastcnn {
namespace {

constexpr index_t kPositions = 16;              // the 4x4 transform positions
// Fewer channels either way and the transforms cost more than the multiply-adds saved (measured: 16 -> 16 or 32
// channels on 32x32 planes ran 8-40% slower than the implicit GEMM, 32 -> 32 and more ran 10-45% faster).
constexpr index_t kMinChannels = 32;
constexpr index_t kBlockBudgetFloats = 131072;  // 512 KiB per thread of transformed tiles and their sums
constexpr index_t kBlocksPerThread = 4;         // enough blocks to balance the threads
constexpr index_t kMaxPanelRows = 16;           // at least any variant's MR

struct WinogradPlan {
  index_t channels, out_channels;                     // rounded up to whole vectors
  index_t tiles_high, tiles_wide;                     // per image
  index_t padded_height, padded_width, image_floats;  // one image of the channels-last padded copy
  index_t tile_rows, rows_per_block;                  // blocks of rows of tiles (see next_block)
  std::vector<index_t> block_starts;                  // the forward's blocks: tile rows [start[i], start[i + 1])
  index_t image_slots;                                // images a block spans at most
  index_t padded_tiles;                               // a block's tiles rounded up to MR
  index_t transformed_floats, sums_floats;            // per thread: 16 packed V_e and 16 M_e
  index_t weight_floats;                              // the 16 packed U_e
  index_t input_floats, pixel_floats;                 // per thread: the block's images copied, one transposed
  int threads;
};

// Where the block starting at tile row row0 ends (at most `limit`): either within one image, or whole images.
// Each block copies the input rows its tiles read into its thread's buffer (image_slots images), so no workspace
// grows with the batch (a whole-batch copy had to go through DRAM and could exceed a memory limit the direct paths
// fit in).
index_t next_block(const WinogradPlan& plan, index_t row0, index_t limit) {
  const index_t th = plan.tiles_high, image_end = (row0 / th + 1) * th;
  if (row0 % th == 0 && plan.rows_per_block >= th) {
    const index_t whole = std::min(limit, row0 + plan.rows_per_block) / th * th;
    if (whole > row0) return whole;
  }
  return std::min({limit, image_end, row0 + plan.rows_per_block});
}

// Blocks of at most `rows` rows of tiles: whole images when an image has no more, and the buffers that takes.
void set_block_sizes(WinogradPlan& plan, index_t rows) {
  const GemmKernel& gemm = gemm_kernel();
  const index_t th = plan.tiles_high;
  plan.rows_per_block = rows >= th ? rows / th * th : rows;
  plan.image_slots = std::max<index_t>(1, plan.rows_per_block / th);
  plan.input_floats = checked_mul(plan.image_slots, plan.image_floats, "conv2d");
  plan.padded_tiles = ceil_div(checked_mul(plan.rows_per_block, plan.tiles_wide, "conv2d"), gemm.mr) * gemm.mr;
}

WinogradPlan plan_winograd(const ConvGeometry& g, int threads) {
  const GemmKernel& gemm = gemm_kernel();
  if (gemm.mr > kMaxPanelRows) throw std::logic_error("conv2d: a GEMM variant's MR exceeds kMaxPanelRows");
  const index_t vl = gemm.vector_floats;
  WinogradPlan plan{};
  plan.channels = ceil_div(g.in_channels, vl) * vl;
  plan.out_channels = ceil_div(g.out_channels, vl) * vl;
  plan.tiles_high = ceil_div(g.out_height, 2);
  plan.tiles_wide = ceil_div(g.out_width, 2);
  plan.padded_height = 2 * plan.tiles_high + 2;  // >= H + padding: every input row and column has a place
  plan.padded_width = 2 * plan.tiles_wide + 2;
  plan.image_floats =
      checked_mul(checked_mul(plan.padded_height, plan.padded_width, "conv2d"), plan.channels, "conv2d");
  plan.pixel_floats = checked_mul(g.in_plane(), g.in_channels, "conv2d");
  plan.tile_rows = checked_mul(g.batch, plan.tiles_high, "conv2d");
  const index_t floats_per_tile = kPositions * (plan.channels + plan.out_channels);
  const index_t budget_rows = std::max<index_t>(1, kBlockBudgetFloats / floats_per_tile / plan.tiles_wide);
  const index_t balanced_rows = std::max<index_t>(1, plan.tile_rows / (kBlocksPerThread * threads));
  plan.rows_per_block = std::min(budget_rows, balanced_rows);
  set_block_sizes(plan, plan.rows_per_block);
  for (index_t row = 0; row < plan.tile_rows; row = next_block(plan, row, plan.tile_rows))
    plan.block_starts.push_back(row);
  plan.block_starts.push_back(plan.tile_rows);
  plan.transformed_floats = checked_mul(kPositions * plan.padded_tiles, plan.channels, "conv2d");
  plan.sums_floats = checked_mul(kPositions * plan.padded_tiles, plan.out_channels, "conv2d");
  plan.weight_floats = checked_mul(kPositions, gemm.packed_b_floats(plan.channels, plan.out_channels), "conv2d");
  plan.threads = static_cast<int>(std::min<index_t>(threads, static_cast<index_t>(plan.block_starts.size()) - 1));
  return plan;
}

// u[e * position_stride] = (G g G^T)[e] for the 3x3 filter g (row-major), G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2;
// 0 0 1].
void transform_filter(const float* g, float* u, index_t position_stride) {
  float gg[4][3];  // G g
  for (int j = 0; j < 3; ++j) {
    gg[0][j] = g[j];
    gg[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
    gg[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
    gg[3][j] = g[6 + j];
  }
  for (int r = 0; r < 4; ++r) {
    u[(4 * r + 0) * position_stride] = gg[r][0];
    u[(4 * r + 1) * position_stride] = 0.5f * (gg[r][0] + gg[r][1] + gg[r][2]);
    u[(4 * r + 2) * position_stride] = 0.5f * (gg[r][0] - gg[r][1] + gg[r][2]);
    u[(4 * r + 3) * position_stride] = gg[r][2];
  }
}

// The 16 U_e (C x C_out, zero past the real channels), each written straight into the packed layout of a GEMM B
// operand (gemm.h): row c of K block b = c / KC at b * KC * Npad + (c - b * KC) * NR, in column panels of NR. A
// panel's 16 rows are gathered in a small buffer first: the 16 matrices lie a multiple of 4 KiB apart, and
// writing them element by element thrashed one L1 set.
void pack_filters(const ConvGeometry& g, const WinogradPlan& plan, int threads, const float* w, float* packed) {
  const GemmKernel& gemm = gemm_kernel();
  const index_t cp = plan.channels, kp = plan.out_channels, nr = gemm.nr;
  const index_t padded_n = ceil_div(kp, nr) * nr, matrix = gemm.packed_b_floats(cp, kp);
  parallel_for(cp, threads, [&](index_t c, int) {
    const index_t block = c / gemm.kc, kc = std::min(gemm.kc, cp - block * gemm.kc);
    float* row = packed + block * gemm.kc * padded_n + (c - block * gemm.kc) * nr;
    std::vector<float> panel(static_cast<std::size_t>(kPositions * nr));  // [e][j]
    for (index_t j0 = 0; j0 < padded_n; j0 += nr) {
      std::fill(panel.begin(), panel.end(), 0.0f);
      for (index_t o = j0; o < std::min(j0 + nr, g.out_channels) && c < g.in_channels; ++o)
        transform_filter(w + (o * g.in_channels + c) * 9, &panel[o - j0], nr);
      for (index_t e = 0; e < kPositions; ++e)
        std::copy(&panel[e * nr], &panel[e * nr] + nr, row + e * matrix + j0 * kc);
    }
  });
}

// Rows [row_begin, row_end) of one image's channels-last copy: padded_width pixels of `stride` floats per row,
// the image's planes (channels x height x width at src) placed with pixel (h, w) at (h + top, w + left), zeros
// around them and past the channels. The transposition goes through `pixels` (with AVX-512
// in blocks of 8 channels x 16 pixels of the flattened plane: rows as narrow as 8 pixels would leave it element by
// element), then row by row into place.
void copy_channels_last(index_t channels, index_t height, index_t width, const float* src, index_t top, index_t left,
                        index_t row_begin, index_t row_end, index_t padded_width, index_t stride, float* pixels,
                        float* dst) {
  const index_t row_floats = padded_width * stride;
  const index_t h0 = std::clamp<index_t>(row_begin - top, 0, height), h1 = std::clamp<index_t>(row_end - top, 0, height);
  if (h1 > h0)
    gemm_kernel().transpose_to_channels_last(channels, (h1 - h0) * width, src + h0 * width, height * width, pixels,
                                            channels);
  for (index_t row = row_begin; row < row_end; ++row) {
    float* out = dst + row * row_floats;
    const index_t h = row - top;
    if (h < 0 || h >= height) {
      std::fill(out, out + row_floats, 0.0f);
      continue;
    }
    float* first = out + left * stride;
    std::fill(out, first, 0.0f);
    for (index_t w = 0; w < width; ++w) {
      const float* pixel = pixels + ((h - h0) * width + w) * channels;
      std::copy(pixel, pixel + channels, first + w * stride);
      std::fill(first + w * stride + channels, first + (w + 1) * stride, 0.0f);
    }
    std::fill(first + width * stride, out + row_floats, 0.0f);
  }
}

// The images the block of tile rows [row0, row1) spans, slot s holding image row0 / tiles_high + s: for each, the
// padded rows its tiles read (input rows with `top` and `left` padding, `stride` floats per pixel), copied into
// dst + s * image_floats at their places in the full padded image. `tile_height` is 2 for grad_output (its 2x2
// tiles), 4 for the input (4x4 windows).
void copy_block(const WinogradPlan& plan, index_t row0, index_t row1, index_t channels, index_t height, index_t width,
                const float* planes, index_t top, index_t left, index_t padded_width, index_t stride,
                index_t image_floats, index_t tile_height, float* pixels, float* dst) {
  const index_t th = plan.tiles_high, first_image = row0 / th;
  for (index_t n = first_image; n * th < row1; ++n) {
    const index_t ty_first = std::max(row0, n * th) - n * th, ty_last = std::min(row1, (n + 1) * th) - 1 - n * th;
    copy_channels_last(channels, height, width, planes + n * channels * height * width, top, left, 2 * ty_first,
                       2 * ty_last + tile_height, padded_width, stride, pixels,
                       dst + (n - first_image) * image_floats);
  }
}

void copy_input_block(const ConvGeometry& g, const WinogradPlan& plan, index_t row0, index_t row1, const float* x,
                      float* pixels, float* input) {
  copy_block(plan, row0, row1, g.in_channels, g.in_height, g.in_width, x, g.pad_top, g.pad_left, plan.padded_width,
             plan.channels, plan.image_floats, 4, pixels, input);
}

// Where tile `tile` of the block starting at tile row row0 starts in a copy the block made with copy_block (of
// images image_floats apart, padded_width pixels of `stride` floats per row): its 4x4 input window, or with
// grad_output's copy, its 2x2 gradient.
const float* tile_origin(const WinogradPlan& plan, const float* copy, index_t image_floats, index_t padded_width,
                         index_t stride, index_t row0, index_t tile) {
  const index_t row = row0 + tile / plan.tiles_wide, tx = tile % plan.tiles_wide;
  const index_t slot = row / plan.tiles_high - row0 / plan.tiles_high, ty = row % plan.tiles_high;
  return copy + slot * image_floats + (2 * ty * padded_width + 2 * tx) * stride;
}

}  // namespace

bool winograd_applies(const ConvGeometry& g) {
  return g.kernel_height == 3 && g.kernel_width == 3 && g.stride_h == 1 && g.stride_w == 1 && g.dilation_h == 1 &&
         g.dilation_w == 1 && g.groups == 1 && g.in_channels >= kMinChannels && g.out_channels >= kMinChannels;
}

namespace {
index_t forward_per_thread_floats(const WinogradPlan& plan) {
  return plan.input_floats + plan.pixel_floats + plan.transformed_floats + plan.sums_floats;
}
}  // namespace

index_t winograd_forward_workspace_bytes(const ConvGeometry& g, int threads) {
  const WinogradPlan plan = plan_winograd(g, threads);
  index_t floats = checked_add(plan.weight_floats, plan.out_channels, "conv2d");  // filters, padded bias
  floats = checked_add(floats, checked_mul(plan.threads, forward_per_thread_floats(plan), "conv2d"), "conv2d");
  return checked_mul(floats, static_cast<index_t>(sizeof(float)), "conv2d");
}

bool winograd_forward(const ConvGeometry& g, int threads, const float* x, const float* w, const float* b, float* y) {
  if (!all_finite(x, g.batch * g.in_channels * g.in_plane(), threads) || !all_finite(w, g.out_channels * g.patch_size()))
    return false;
  const index_t output_floats = g.batch * g.out_channels * g.out_plane();
  const GemmKernel& gemm = gemm_kernel();
  const WinogradPlan plan = plan_winograd(g, threads);
  const index_t cp = plan.channels, kp = plan.out_channels, tiles_wide = plan.tiles_wide;
  const index_t plane = g.out_plane(), packed_filter_floats = gemm.packed_b_floats(cp, kp);

  FloatBuffer filters = allocate_floats(plan.weight_floats);
  pack_filters(g, plan, threads, w, filters.get());
  std::vector<float> bias(static_cast<std::size_t>(kp), 0.0f);
  if (b != nullptr) std::copy(b, b + g.out_channels, bias.begin());

  const index_t per_thread = forward_per_thread_floats(plan);
  FloatBuffer workspace = allocate_floats(checked_mul(plan.threads, per_thread, "conv2d"));
  const index_t blocks = static_cast<index_t>(plan.block_starts.size()) - 1;
  parallel_for(blocks, plan.threads, [&](index_t block, int thread) {
    float* input = workspace.get() + thread * per_thread;
    float* pixels = input + plan.input_floats;
    float* transformed = pixels + plan.pixel_floats;
    float* sums = transformed + plan.transformed_floats;
    const index_t row0 = plan.block_starts[block], row1 = plan.block_starts[block + 1];
    copy_input_block(g, plan, row0, row1, x, pixels, input);
    const index_t tiles = (row1 - row0) * tiles_wide, padded_m = ceil_div(tiles, gemm.mr) * gemm.mr;
    const float* origins[kMaxPanelRows];
    for (index_t i0 = 0; i0 < tiles; i0 += gemm.mr) {
      const index_t count = std::min<index_t>(gemm.mr, tiles - i0);
      for (index_t i = 0; i < count; ++i)
        origins[i] = tile_origin(plan, input, plan.image_floats, plan.padded_width, cp, row0, i0 + i);
      gemm.winograd_pack_input(count, origins, cp, plan.padded_width * cp, cp, i0, padded_m, padded_m * cp,
                               transformed);
    }
    for (index_t e = 0; e < kPositions; ++e)
      gemm.multiply_packed(tiles, kp, cp, transformed + e * padded_m * cp, filters.get() + e * packed_filter_floats,
                           sums + e * padded_m * kp, kp, false);
    for (index_t row = row0; row < row1; ++row) {
      const index_t n = row / plan.tiles_high, ty = row % plan.tiles_high;
      float* y_row = y + n * g.out_channels * plane + 2 * ty * g.out_width;
      for (index_t tx = 0; tx < tiles_wide; tx += 4) {
        const index_t tile = (row - row0) * tiles_wide + tx;
        gemm.winograd_store_output(std::min<index_t>(4, tiles_wide - tx), sums + tile * kp, kp, padded_m * kp,
                                   g.out_channels, b != nullptr ? bias.data() : nullptr, y_row + 2 * tx, plane,
                                   g.out_width, std::min<index_t>(2, g.out_height - 2 * ty),
                                   std::min<index_t>(8, g.out_width - 2 * tx));
      }
    }
  });
  // Finite values near the float range can still overflow inside a transform (a sum of four inputs), and
  // infinity - infinity there is NaN where the direct sum is finite: then the direct paths redo the call.
  return all_finite(y, output_floats, threads);
}

// ---------------------------------------------------------------------------------------------------------------
// The weight gradient. The forward is linear in U = G g G^T, so dL/dU = sum over tiles of (A dy A^T) (.) V and
// dL/dg = G^T (dL/dU) G: per position e, a GEMM over the tiles, S_e (C_out x C) = sum_t Y_e[t]^T V_e[t] with
// Y_e the transformed 2x2 tiles of grad_output. Tiles are summed in kWeightChunks chunks of tile rows fixed by the
// shapes (each a work item with its own partial S, added in chunk order), so the result does not depend on the
// thread count; a chunk's blocks of tiles are each one K block of the GEMM, accumulated into its partial.
// ---------------------------------------------------------------------------------------------------------------
namespace {

// Each chunk has a 16 x C_out x C partial to sum at the end: 8 chunks measured 13% slower than 4 at 2 threads
// (64x128x8x8 and 1x64x56x56). The price of 4: this pass uses at most 4 threads.
constexpr index_t kWeightChunks = 4;
constexpr index_t kSumPadFloats = 16;  // S_e matrices 64 bytes more than a multiple of 4 KiB apart: see below

struct WeightPlan {
  WinogradPlan tiles;
  index_t chunks;
  index_t padded_m, padded_n;  // S's rows (C_out) rounded up to MR, columns (C) to NR
  index_t a_floats, b_floats;  // one position's packed operands for a block of the most tiles
  index_t sum_stride;          // between the 16 S_e of one partial
  index_t grad_image_floats;   // grad_output channels last, tiles_high * 2 x tiles_wide * 2 pixels
  index_t pixel_floats;         // per thread: one image of the input or of grad_output transposed
  index_t partial_floats, per_thread_floats;
  int threads;
};

WeightPlan plan_weight(const ConvGeometry& g, int threads) {
  const GemmKernel& gemm = gemm_kernel();
  WeightPlan plan{};
  plan.tiles = plan_winograd(g, threads);
  const WinogradPlan& t = plan.tiles;
  plan.chunks = std::min(kWeightChunks, t.tile_rows);
  const index_t floats_per_tile = kPositions * (t.channels + t.out_channels);
  const index_t budget_rows = std::max<index_t>(1, kBlockBudgetFloats / floats_per_tile / t.tiles_wide);
  set_block_sizes(plan.tiles, std::min(budget_rows, std::max<index_t>(1, gemm.kc / t.tiles_wide)));
  plan.tiles.block_starts.clear();  // the forward's blocks: here blocks follow the chunks (next_block)
  const index_t block_tiles = t.rows_per_block * t.tiles_wide;
  plan.padded_m = ceil_div(t.out_channels, gemm.mr) * gemm.mr;
  plan.padded_n = ceil_div(t.channels, gemm.nr) * gemm.nr;
  plan.a_floats = plan.padded_m * block_tiles;
  plan.b_floats = plan.padded_n * block_tiles;
  plan.sum_stride = t.out_channels * t.channels + kSumPadFloats;
  plan.grad_image_floats = 4 * t.tiles_high * t.tiles_wide * t.out_channels;
  plan.partial_floats = checked_mul(checked_mul(plan.chunks, kPositions, "conv2d"), plan.sum_stride, "conv2d");
  plan.pixel_floats = std::max(t.pixel_floats, checked_mul(g.out_plane(), g.out_channels, "conv2d"));
  plan.per_thread_floats = kPositions * (plan.a_floats + plan.b_floats) + t.input_floats +
                           checked_mul(t.image_slots, plan.grad_image_floats, "conv2d") + plan.pixel_floats;
  plan.threads = static_cast<int>(std::min<index_t>(threads, plan.chunks));
  return plan;
}

// One filter's gradient (3x3, row-major) = G^T S G, S[e] at sums[e * sum_stride]; G^T = [1 1/2 1/2 0;
// 0 1/2 -1/2 0; 0 1/2 1/2 1].
void transform_gradient(const float* sums, index_t sum_stride, float* dw) {
  float s[4][4], r[3][4];
  for (int e = 0; e < 16; ++e) s[e / 4][e % 4] = sums[e * sum_stride];
  for (int j = 0; j < 4; ++j) {
    r[0][j] = s[0][j] + 0.5f * (s[1][j] + s[2][j]);
    r[1][j] = 0.5f * (s[1][j] - s[2][j]);
    r[2][j] = 0.5f * (s[1][j] + s[2][j]) + s[3][j];
  }
  for (int i = 0; i < 3; ++i) {
    dw[3 * i + 0] = r[i][0] + 0.5f * (r[i][1] + r[i][2]);
    dw[3 * i + 1] = 0.5f * (r[i][1] - r[i][2]);
    dw[3 * i + 2] = 0.5f * (r[i][1] + r[i][2]) + r[i][3];
  }
}

}  // namespace

bool winograd_backward_weight_applies(const ConvGeometry& g) {
  // A block holds whole rows of tiles in one K block of the GEMM. With AVX2 (6-row panels, 8-float vectors) or
  // without SIMD it measured 2-50% slower than the direct weight gradient for 32 to 64 channels (faster only from
  // 128), also with the transformed gradient packed by pack_a instead of in 6-float runs: the direct paths serve
  // those machines.
  const GemmKernel& gemm = gemm_kernel();
  return winograd_applies(g) && gemm.vector_floats == 16 && ceil_div(g.out_width, 2) <= gemm.kc;
}

index_t winograd_backward_weight_workspace_bytes(const ConvGeometry& g, int threads) {
  const WeightPlan plan = plan_weight(g, threads);
  index_t floats = checked_mul(plan.threads, plan.per_thread_floats, "conv2d");
  floats = checked_add(floats, plan.partial_floats + kPositions * plan.sum_stride, "conv2d");
  return checked_mul(floats, static_cast<index_t>(sizeof(float)), "conv2d");
}

bool winograd_backward_weight(const ConvGeometry& g, int threads, const float* dy, const float* x, float* dw) {
  if (!all_finite(x, g.batch * g.in_channels * g.in_plane(), threads) ||
      !all_finite(dy, g.batch * g.out_channels * g.out_plane(), threads))
    return false;
  const GemmKernel& gemm = gemm_kernel();
  const WeightPlan plan = plan_weight(g, threads);
  const WinogradPlan& t = plan.tiles;
  const index_t cp = t.channels, kp = t.out_channels, grad_width = 2 * t.tiles_wide;

  FloatBuffer workspace = allocate_floats(checked_mul(plan.threads, plan.per_thread_floats, "conv2d"));
  FloatBuffer partials = allocate_floats(plan.partial_floats);
  parallel_for(plan.chunks, plan.threads, [&](index_t chunk, int thread) {
    float* a = workspace.get() + thread * plan.per_thread_floats;
    float* b = a + kPositions * plan.a_floats;
    float* input = b + kPositions * plan.b_floats;
    float* grads = input + t.input_floats;
    float* pixels = grads + t.image_slots * plan.grad_image_floats;
    float* sums = partials.get() + chunk * kPositions * plan.sum_stride;
    for (index_t e = 0; e < kPositions; ++e)  // the padding between S_e is summed with them (never read after)
      std::fill(sums + e * plan.sum_stride + kp * cp, sums + (e + 1) * plan.sum_stride, 0.0f);
    const index_t first_row = t.tile_rows * chunk / plan.chunks, end_row = t.tile_rows * (chunk + 1) / plan.chunks;
    const float* origins[kMaxPanelRows];
    const float* grad_origins[kMaxPanelRows];
    for (index_t row0 = first_row, row1; row0 < end_row; row0 = row1) {
      row1 = next_block(t, row0, end_row);
      copy_input_block(g, t, row0, row1, x, pixels, input);
      // grad_output on whole 2x2 tiles: zeros past its last row and column
      copy_block(t, row0, row1, g.out_channels, g.out_height, g.out_width, dy, 0, 0, grad_width, kp,
                 plan.grad_image_floats, 2, pixels, grads);
      const index_t tiles = (row1 - row0) * t.tiles_wide;
      const index_t a_matrix = plan.padded_m * tiles, b_matrix = plan.padded_n * tiles;
      // rows and columns past the real channels must be zero; where they lie depends on the block's size
      if (plan.padded_m > kp) std::fill(a, a + kPositions * a_matrix, 0.0f);
      if (plan.padded_n > cp) std::fill(b, b + kPositions * b_matrix, 0.0f);
      for (index_t i0 = 0; i0 < tiles; i0 += kMaxPanelRows) {
        const index_t count = std::min(kMaxPanelRows, tiles - i0);
        for (index_t i = 0; i < count; ++i) {
          origins[i] = tile_origin(t, input, t.image_floats, t.padded_width, cp, row0, i0 + i);
          grad_origins[i] = tile_origin(t, grads, plan.grad_image_floats, grad_width, kp, row0, i0 + i);
        }
        gemm.winograd_pack_input_rows(count, origins, cp, t.padded_width * cp, cp, i0, tiles, b_matrix, b);
        gemm.winograd_pack_gradient(count, grad_origins, kp, grad_width * kp, kp, i0, tiles, a_matrix, a);
      }
      for (index_t e = 0; e < kPositions; ++e)
        gemm.multiply_packed(kp, cp, tiles, a + e * a_matrix, b + e * b_matrix, sums + e * plan.sum_stride, cp,
                             row0 != first_row);
    }
  });

  // The chunks' partial sums in chunk order, then the filter-space transform (and, as in the forward, a check for
  // an overflow inside a transform, which sends the call to the direct paths). The 16 S_e are read together for
  // each filter: kSumPadFloats keeps them from sharing one L1 set (they would be a multiple of 4 KiB apart).
  FloatBuffer total = allocate_floats(kPositions * plan.sum_stride);
  sum_partial_gradients(partials.get(), plan.chunks, kPositions * plan.sum_stride, threads, total.get());
  parallel_for(g.out_channels, threads, [&](index_t o, int) {
    for (index_t c = 0; c < g.in_channels; ++c)
      transform_gradient(total.get() + o * cp + c, plan.sum_stride, dw + (o * g.in_channels + c) * 9);
  });
  return all_finite(dw, g.out_channels * g.patch_size(), threads);
}

}  // namespace fastcnn

// Convolution as GEMM over im2col blocks: the explicit path. Stride-1 convolutions go to the implicit GEMM of
// conv2d_implicit.cpp instead (which needs no im2col), except where it says the explicit path does better.
//
// Layout: x [N, C_in, H, W], w [C_out, C_in/groups, kH, kW], y [N, C_out, H_out, W_out]. For one group,
// y_g (C_out/g x N*P) = w_g (C_out/g x K) * col (K x N*P), where P = H_out * W_out and the K = C_in/g * kH * kW
// rows of col are the input pixels under each kernel position. The N*P output columns are cut into blocks
// (ColumnBlocks) small enough for their im2col to stay in L2 while the GEMM consumes it: a block is part of one
// sample's plane when planes are large, or several whole samples when planes are small (LeNet's 10x10 maps),
// which keeps GEMM tiles full and per-call costs amortised. im2col is written straight into the GEMM's packed
// layout; 1x1 stride-1 convolutions need none.
//
// Work split and determinism: each work item writes a disjoint part of the output and sums every element in an
// order fixed by the geometry alone (the GEMM's K blocks, and for the weight gradient the sample chunks and the
// samples per block), never by the thread count. So any number of threads gives bitwise the same result.
#include "conv2d.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "conv2d_implicit.h"
#include "conv2d_winograd.h"
#include "gemm.h"
#include "im2col.h"

namespace fastcnn {
namespace {

constexpr index_t kColumnBudgetFloats = 128 * 1024;  // 512 KiB of im2col per block: fits in L2 beside the GEMM
constexpr index_t kMaxWeightSampleChunks = 16;       // partial weight gradients, summed in chunk order
constexpr index_t kInnerProductMinColumns = 512;     // weight gradient: unpacked inner products from this width
constexpr index_t kMultiSampleMaxPlane = 256;        // blocks span whole samples only for planes this small

std::string shape_text(index_t a, index_t b) { return std::to_string(a) + "x" + std::to_string(b); }

[[noreturn]] void fail(const std::string& message) { throw std::invalid_argument("conv2d: " + message); }

// Output columns of a GEMM block that keep its im2col inside the budget (a multiple of 64, at least 64).
index_t column_target(const ConvGeometry& g) {
  const index_t cols = kColumnBudgetFloats / std::max<index_t>(1, g.patch_size());
  return std::max<index_t>(64, cols / 64 * 64);
}

// How one group's N * P output columns are cut into GEMM blocks.
struct ColumnBlocks {
  index_t samples_per_block;  // > 1: each block holds that many whole samples
  index_t block_columns;      // columns of a full block
  index_t blocks_per_sample;  // when samples_per_block == 1: blocks one plane is cut into
  index_t count;              // blocks per group

  struct Block {
    index_t n0, samples, p0, cols;  // samples [n0, n0 + samples), each contributing columns [p0, p0 + cols)
    index_t width() const { return samples * cols; }
  };

  Block at(const ConvGeometry& g, index_t block) const {
    if (samples_per_block > 1) {
      const index_t n0 = block * samples_per_block;
      return Block{n0, std::min(samples_per_block, g.batch - n0), 0, g.out_plane()};
    }
    const index_t n = block / blocks_per_sample, p0 = (block % blocks_per_sample) * block_columns;
    return Block{n, 1, p0, std::min(block_columns, g.out_plane() - p0)};
  }
};

// `max_samples` caps the samples per block (forward passes use it to leave a block for every thread).
ColumnBlocks column_blocks(const ConvGeometry& g, index_t max_samples) {
  const index_t plane = g.out_plane(), target = column_target(g);
  ColumnBlocks blocks{};
  blocks.samples_per_block =
      plane > kMultiSampleMaxPlane ? 1 : std::max<index_t>(1, std::min({target / plane, max_samples, g.batch}));
  if (blocks.samples_per_block > 1) {
    blocks.block_columns = blocks.samples_per_block * plane;
    blocks.blocks_per_sample = 0;
    blocks.count = ceil_div(g.batch, blocks.samples_per_block);
  } else {
    blocks.block_columns = std::min(target, plane);
    blocks.blocks_per_sample = ceil_div(plane, blocks.block_columns);
    blocks.count = checked_mul(g.batch, blocks.blocks_per_sample, "conv2d");
  }
  return blocks;
}

// Forward-style passes have no sum across samples, so blocks may shrink to leave one for every thread.
index_t samples_for_threads(const ConvGeometry& g, int threads) {
  return std::max<index_t>(1, g.batch / ceil_div(threads, g.groups));
}

// Balanced split of [0, total) into `parts` ranges; returns the start of range `part`.
index_t split_point(index_t total, index_t parts, index_t part) { return total * part / parts; }

struct ForwardPlan {
  ColumnBlocks blocks;
  index_t items, per_thread_floats, packed_weight_floats;
  int threads;
};

ForwardPlan plan_forward(const ConvGeometry& g, int threads) {
  const GemmKernel& gemm = gemm_kernel();
  ForwardPlan plan{};
  plan.blocks = column_blocks(g, samples_for_threads(g, threads));
  plan.items = checked_mul(g.groups, plan.blocks.count, "conv2d");
  plan.threads = static_cast<int>(std::min<index_t>(threads, plan.items));
  const index_t width = plan.blocks.block_columns, cout_g = g.out_channels_per_group();
  // per thread: packed im2col block, and the block's output when it spans several samples
  const index_t staging = plan.blocks.samples_per_block > 1 ? checked_mul(cout_g, width, "conv2d") : 0;
  plan.per_thread_floats = checked_add(gemm.packed_b_floats(g.patch_size(), width), staging, "conv2d");
  plan.packed_weight_floats = checked_mul(g.groups, gemm.packed_a_floats(cout_g, g.patch_size()), "conv2d");
  return plan;
}

struct BackwardInputPlan {
  ColumnBlocks blocks;
  index_t channel_chunks, chunk_rows, items, per_thread_floats, packed_weight_floats;
  int threads;
};

BackwardInputPlan plan_backward_input(const ConvGeometry& g, int threads) {
  const GemmKernel& gemm = gemm_kernel();
  BackwardInputPlan plan{};
  // A block's columns must cover whole planes here (col2im of a partial plane would need the rest), so planes
  // larger than the budget are handled a sample at a time with the column loop inside the item.
  plan.blocks = column_blocks(g, samples_for_threads(g, threads));
  const index_t block_groups = checked_mul(g.groups, plan.blocks.samples_per_block > 1 ? plan.blocks.count : g.batch,
                                           "conv2d");
  // Few blocks: split the input channels too so every thread has work. A pixel only receives terms from its
  // own channel's rows, so this split does not change any sum.
  plan.channel_chunks = block_groups >= threads ? 1 : std::min(g.in_channels_per_group(), ceil_div(threads, block_groups));
  plan.items = block_groups * plan.channel_chunks;
  plan.threads = static_cast<int>(std::min<index_t>(threads, plan.items));
  plan.chunk_rows = ceil_div(g.in_channels_per_group(), plan.channel_chunks) * g.kernel_area();
  const index_t width = plan.blocks.block_columns, cout_g = g.out_channels_per_group();
  // per thread: packed dY block and the GEMM's output columns for col2im
  const index_t columns = g.is_pointwise() && plan.blocks.samples_per_block == 1 ? 0 : checked_mul(plan.chunk_rows, width, "conv2d");
  plan.per_thread_floats = checked_add(gemm.packed_b_floats(cout_g, width), columns, "conv2d");
  // W^T packed once per call for every (group, channel chunk)
  plan.packed_weight_floats =
      checked_mul(checked_mul(g.groups, plan.channel_chunks, "conv2d"), gemm.packed_a_floats(plan.chunk_rows, cout_g), "conv2d");
  return plan;
}

struct BackwardWeightPlan {
  ColumnBlocks blocks;
  index_t sample_chunks, row_chunks, chunk_rows, items, per_thread_floats, partial_floats;
  int threads;
  bool inner_products;  // long pixel rows: unpacked inner products; short ones: the packed GEMM
};

BackwardWeightPlan plan_backward_weight(const ConvGeometry& g, int threads) {
  const GemmKernel& gemm = gemm_kernel();
  BackwardWeightPlan plan{};
  // The batch is summed in a fixed number of chunks (a function of N only), each into its own partial
  // gradient, and the partials are added in chunk order. Inside a chunk, blocks of whole samples (also fixed by
  // the geometry) form the GEMM's K dimension. Parallel, yet the same bits for any thread count.
  plan.sample_chunks = std::min(g.batch, kMaxWeightSampleChunks);
  // Inner products along pixels need no transposing copy, but pay a horizontal sum per element: they win for
  // long pixel rows of one sample (measured: LeNet's 28x28 planes), the packed GEMM otherwise.
  plan.inner_products = std::min(column_target(g), g.out_plane()) >= kInnerProductMinColumns;
  plan.blocks = column_blocks(g, plan.inner_products ? 1 : ceil_div(g.batch, plan.sample_chunks));
  const index_t chunk_groups = plan.sample_chunks * g.groups;
  plan.row_chunks = chunk_groups >= threads ? 1 : std::min(g.patch_size(), ceil_div(threads, chunk_groups));
  plan.items = chunk_groups * plan.row_chunks;
  plan.threads = static_cast<int>(std::min<index_t>(threads, plan.items));
  plan.chunk_rows = ceil_div(g.patch_size(), plan.row_chunks);
  const index_t width = plan.blocks.block_columns;
  if (plan.inner_products) {  // per thread: one im2col block, read as it is
    plan.per_thread_floats = g.is_pointwise() ? 1 : checked_mul(plan.chunk_rows, width, "conv2d");
  } else {  // per thread: packed dY block and packed im2col^T block (gathered straight into its panels)
    plan.per_thread_floats = checked_add(gemm.packed_a_floats(g.out_channels_per_group(), width),
                                         gemm.packed_b_floats(width, plan.chunk_rows), "conv2d");
  }
  const index_t weight_floats = checked_mul(g.out_channels, g.patch_size(), "conv2d");
  plan.partial_floats = plan.sample_chunks > 1 ? checked_mul(plan.sample_chunks, weight_floats, "conv2d") : 0;
  return plan;
}

index_t workspace_bytes(int threads, index_t per_thread_floats, index_t extra_floats) {
  const index_t floats = checked_add(checked_mul(threads, per_thread_floats, "conv2d"), extra_floats, "conv2d");
  return checked_mul(floats, static_cast<index_t>(sizeof(float)), "conv2d");
}

}  // namespace

bool ConvGeometry::is_pointwise() const {
  return kernel_height == 1 && kernel_width == 1 && stride_h == 1 && stride_w == 1 && pad_top == 0 &&
         pad_bottom == 0 && pad_left == 0 && pad_right == 0;
}

ConvGeometry make_conv_geometry(ConvGeometry g) {
  if (g.batch < 1 || g.in_channels < 1 || g.in_height < 1 || g.in_width < 1)
    fail("input must have positive sizes");
  if (g.out_channels < 1 || g.kernel_height < 1 || g.kernel_width < 1) fail("weight must have positive sizes");
  if (g.stride_h < 1 || g.stride_w < 1) fail("stride must be >= 1");
  if (g.dilation_h < 1 || g.dilation_w < 1) fail("dilation must be >= 1");
  if (g.pad_top < 0 || g.pad_bottom < 0 || g.pad_left < 0 || g.pad_right < 0) fail("padding must be >= 0");
  if (g.groups < 1 || g.in_channels % g.groups != 0 || g.out_channels % g.groups != 0)
    fail("groups must divide both in_channels and out_channels; got groups=" + std::to_string(g.groups));
  const index_t padded_h = checked_add(checked_add(g.in_height, g.pad_top, "conv2d"), g.pad_bottom, "conv2d");
  const index_t padded_w = checked_add(checked_add(g.in_width, g.pad_left, "conv2d"), g.pad_right, "conv2d");
  const index_t extent_h = checked_add(checked_mul(g.dilation_h, g.kernel_height - 1, "conv2d"), 1, "conv2d");
  const index_t extent_w = checked_add(checked_mul(g.dilation_w, g.kernel_width - 1, "conv2d"), 1, "conv2d");
  if (extent_h > padded_h || extent_w > padded_w)
    fail("the kernel must fit in the padded input; got padded input " + shape_text(padded_h, padded_w) +
         " and dilated kernel " + shape_text(extent_h, extent_w));
  g.out_height = (padded_h - extent_h) / g.stride_h + 1;
  g.out_width = (padded_w - extent_w) / g.stride_w + 1;
  // Every product the kernels form must fit: element counts of x, y, w and the im2col matrix.
  checked_mul(checked_mul(g.batch, g.in_channels, "conv2d"), checked_mul(g.in_height, g.in_width, "conv2d"), "conv2d");
  checked_mul(checked_mul(g.batch, g.out_channels, "conv2d"), checked_mul(g.out_height, g.out_width, "conv2d"), "conv2d");
  checked_mul(checked_mul(g.out_channels, g.in_channels, "conv2d"), g.kernel_area(), "conv2d");
  checked_mul(g.patch_size(), g.out_plane(), "conv2d");
  return g;
}

index_t conv2d_forward_workspace_bytes(const ConvGeometry& g, int threads) {
  index_t bytes;
  if (implicit_conv_applies(g)) {
    bytes = implicit_forward_workspace_bytes(g, threads);
  } else {
    const ForwardPlan plan = plan_forward(g, threads);
    bytes = workspace_bytes(plan.threads, plan.per_thread_floats, plan.packed_weight_floats);
  }
  // Winograd falls back to the others for non-finite values: room for either
  return winograd_applies(g) ? std::max(bytes, winograd_forward_workspace_bytes(g, threads)) : bytes;
}

index_t conv2d_backward_input_workspace_bytes(const ConvGeometry& g, int threads) {
  const BackwardInputPlan plan = plan_backward_input(g, threads);
  const index_t explicit_bytes = workspace_bytes(plan.threads, plan.per_thread_floats, plan.packed_weight_floats);
  // the implicit path falls back to the explicit one for non-finite weights: room for either
  if (implicit_backward_input_applies(g))
    return std::max(explicit_bytes, implicit_backward_input_workspace_bytes(g, threads));
  return explicit_bytes;
}

index_t conv2d_backward_weight_workspace_bytes(const ConvGeometry& g, int threads) {
  const BackwardWeightPlan plan = plan_backward_weight(g, threads);
  index_t bytes = workspace_bytes(plan.threads, plan.per_thread_floats, plan.partial_floats);
  // Winograd and the implicit path fall back to the explicit one for non-finite values: room for any
  if (implicit_conv_applies(g)) bytes = std::max(bytes, implicit_backward_weight_workspace_bytes(g, threads));
  if (winograd_backward_weight_applies(g))
    bytes = std::max(bytes, winograd_backward_weight_workspace_bytes(g, threads));
  return bytes;
}

void conv2d_forward(const ConvGeometry& g, int threads, const float* x, const float* w, const float* b, float* y) {
  if (winograd_applies(g) && winograd_forward(g, threads, x, w, b, y)) return;
  if (implicit_conv_applies(g)) return implicit_forward(g, threads, x, w, b, y);
  const GemmKernel& gemm = gemm_kernel();
  const ForwardPlan plan = plan_forward(g, threads);
  const index_t plane = g.out_plane(), patch = g.patch_size(), width = plan.blocks.block_columns;
  const index_t cin_g = g.in_channels_per_group(), cout_g = g.out_channels_per_group();
  // The weights are the A operand of every work item: pack them once per call.
  FloatBuffer packed_weights = allocate_floats(plan.packed_weight_floats);
  const index_t weight_stride = gemm.packed_a_floats(cout_g, patch);
  for (index_t group = 0; group < g.groups; ++group)
    gemm.pack_a(cout_g, patch, MatrixView{w + group * cout_g * patch, patch, 1}, packed_weights.get() + group * weight_stride);
  FloatBuffer workspace = allocate_floats(plan.threads * plan.per_thread_floats);

  parallel_for(plan.items, plan.threads, [&](index_t item, int thread) {
    const index_t group = item % g.groups;
    const ColumnBlocks::Block block = plan.blocks.at(g, item / g.groups);
    const index_t total = block.width();
    float* packed_columns = workspace.get() + thread * plan.per_thread_floats;
    float* staging = packed_columns + gemm.packed_b_floats(patch, width);

    if (g.is_pointwise()) {
      for (index_t s = 0; s < block.samples; ++s) {
        const float* x_group = x + ((block.n0 + s) * g.in_channels + group * cin_g) * g.in_plane();
        copy_into_packed_b(gemm, x_group + block.p0, g.in_plane(), patch, block.cols, packed_columns, patch, total, 0,
                           s * block.cols);
      }
      zero_packed_b_tail(gemm, packed_columns, patch, total);
    } else {
      im2col_packed(gemm, g, x, group, block.n0, block.samples, block.p0, block.cols, packed_columns);
    }

    // One sample: straight into y. Several: into staging (C_out/g x total), then each sample's part into y.
    const bool staged = block.samples > 1;
    float* out = staged ? staging : y + (block.n0 * g.out_channels + group * cout_g) * plane + block.p0;
    const index_t ld = staged ? total : plane;
    if (b != nullptr) {
      for (index_t co = 0; co < cout_g; ++co) std::fill(out + co * ld, out + co * ld + total, b[group * cout_g + co]);
    }
    gemm.multiply_packed(cout_g, total, patch, packed_weights.get() + group * weight_stride, packed_columns, out, ld,
                         b != nullptr);
    if (staged) {
      for (index_t s = 0; s < block.samples; ++s)
        for (index_t co = 0; co < cout_g; ++co)
          std::memcpy(y + ((block.n0 + s) * g.out_channels + group * cout_g + co) * plane, staging + co * total + s * plane,
                      static_cast<std::size_t>(plane) * sizeof(float));
    }
  });
}

void conv2d_backward_input(const ConvGeometry& g, int threads, const float* dy, const float* w, float* dx) {
  if (implicit_backward_input_applies(g) && implicit_backward_input(g, threads, dy, w, dx)) return;
  const GemmKernel& gemm = gemm_kernel();
  const BackwardInputPlan plan = plan_backward_input(g, threads);
  const index_t plane = g.out_plane(), patch = g.patch_size(), area = g.kernel_area();
  const index_t cin_g = g.in_channels_per_group(), cout_g = g.out_channels_per_group();
  const index_t width = plan.blocks.block_columns;
  const bool multi = plan.blocks.samples_per_block > 1;
  auto chunk_start = [&](index_t chunk) { return split_point(cin_g, plan.channel_chunks, chunk); };

  // A = w_g^T restricted to a chunk's rows: A(r, co) = w[group*cout_g + co][c0*area + r]. Packed once per call.
  FloatBuffer packed_weights = allocate_floats(plan.packed_weight_floats);
  const index_t weight_stride = gemm.packed_a_floats(plan.chunk_rows, cout_g);
  for (index_t group = 0; group < g.groups; ++group) {
    for (index_t chunk = 0; chunk < plan.channel_chunks; ++chunk) {
      const index_t c0 = chunk_start(chunk), rows = (chunk_start(chunk + 1) - c0) * area;
      gemm.pack_a(rows, cout_g, MatrixView{w + group * cout_g * patch + c0 * area, 1, patch},
                  packed_weights.get() + (group * plan.channel_chunks + chunk) * weight_stride);
    }
  }
  FloatBuffer workspace = allocate_floats(plan.threads * plan.per_thread_floats);

  parallel_for(plan.items, plan.threads, [&](index_t item, int thread) {
    const index_t chunk = item % plan.channel_chunks, block_group = item / plan.channel_chunks;
    const index_t group = block_group % g.groups, unit = block_group / g.groups;
    const index_t c0 = chunk_start(chunk), c1 = chunk_start(chunk + 1);
    if (c0 == c1) return;
    const index_t rows = (c1 - c0) * area;
    const float* packed_wT = packed_weights.get() + (group * plan.channel_chunks + chunk) * weight_stride;
    float* packed_dy = workspace.get() + thread * plan.per_thread_floats;
    float* columns = packed_dy + gemm.packed_b_floats(cout_g, width);
    auto dx_planes = [&](index_t n) { return dx + (n * g.in_channels + group * cin_g + c0) * g.in_plane(); };
    auto dy_group = [&](index_t n) { return dy + (n * g.out_channels + group * cout_g) * plane; };

    if (multi) {  // several whole samples in one GEMM, then col2im sample by sample
      const ColumnBlocks::Block block = plan.blocks.at(g, unit);
      const index_t total = block.width();
      for (index_t s = 0; s < block.samples; ++s)
        copy_into_packed_b(gemm, dy_group(block.n0 + s), plane, cout_g, plane, packed_dy, cout_g, total, 0, s * plane);
      zero_packed_b_tail(gemm, packed_dy, cout_g, total);
      gemm.multiply_packed(rows, total, cout_g, packed_wT, packed_dy, columns, total, false);
      for (index_t s = 0; s < block.samples; ++s) {
        float* planes = dx_planes(block.n0 + s);
        if (g.is_pointwise()) {
          for (index_t r = 0; r < rows; ++r)
            std::memcpy(planes + r * g.in_plane(), columns + r * total + s * plane, static_cast<std::size_t>(plane) * sizeof(float));
        } else {
          std::fill(planes, planes + (c1 - c0) * g.in_plane(), 0.0f);
          col2im_add(g, planes, rows, 0, plane, columns + s * plane, total);
        }
      }
      return;
    }
    // one sample, its plane in blocks of columns
    const index_t n = unit;
    float* planes = dx_planes(n);
    if (!g.is_pointwise()) std::fill(planes, planes + (c1 - c0) * g.in_plane(), 0.0f);
    for (index_t p0 = 0; p0 < plane; p0 += width) {
      const index_t cols = std::min(width, plane - p0);
      gemm.pack_b(cout_g, cols, MatrixView{dy_group(n) + p0, plane, 1}, packed_dy);
      if (g.is_pointwise()) {
        gemm.multiply_packed(rows, cols, cout_g, packed_wT, packed_dy, planes + p0, g.in_plane(), false);
      } else {
        gemm.multiply_packed(rows, cols, cout_g, packed_wT, packed_dy, columns, cols, false);
        col2im_add(g, planes, rows, p0, cols, columns, cols);
      }
    }
  });
}

void conv2d_backward_weight(const ConvGeometry& g, int threads, const float* dy, const float* x, float* dw) {
  if (winograd_backward_weight_applies(g) && winograd_backward_weight(g, threads, dy, x, dw)) return;
  if (implicit_conv_applies(g) && implicit_backward_weight(g, threads, dy, x, dw)) return;
  const GemmKernel& gemm = gemm_kernel();
  const BackwardWeightPlan plan = plan_backward_weight(g, threads);
  FloatBuffer workspace = allocate_floats(plan.threads * plan.per_thread_floats);
  FloatBuffer partials = allocate_floats(plan.partial_floats);
  const index_t plane = g.out_plane(), patch = g.patch_size(), width = plan.blocks.block_columns;
  const index_t cin_g = g.in_channels_per_group(), cout_g = g.out_channels_per_group();
  const index_t weight_floats = g.out_channels * patch;
  const index_t per_block = plan.blocks.samples_per_block;

  parallel_for(plan.items, plan.threads, [&](index_t item, int thread) {
    const index_t row_chunk = item % plan.row_chunks, chunk_group = item / plan.row_chunks;
    const index_t group = chunk_group % g.groups, chunk = chunk_group / g.groups;
    const index_t r0 = split_point(patch, plan.row_chunks, row_chunk);
    const index_t r1 = split_point(patch, plan.row_chunks, row_chunk + 1);
    if (r0 == r1) return;
    const index_t n0 = split_point(g.batch, plan.sample_chunks, chunk);
    const index_t n1 = split_point(g.batch, plan.sample_chunks, chunk + 1);
    float* target = (plan.sample_chunks > 1 ? partials.get() + chunk * weight_floats : dw) + group * cout_g * patch + r0;
    float* space = workspace.get() + thread * plan.per_thread_floats;
    auto x_group = [&](index_t n) { return x + (n * g.in_channels + group * cin_g) * g.in_plane(); };
    auto dy_group = [&](index_t n) { return dy + (n * g.out_channels + group * cout_g) * plane; };
    bool accumulate = false;

    if (plan.inner_products) {  // dW_g[:, r0:r1] += dY_g[:, p0:p0+cols] . col[r0:r1, p0:p0+cols]
      for (index_t n = n0; n < n1; ++n) {
        for (index_t p0 = 0; p0 < plane; p0 += width) {
          const index_t cols = std::min(width, plane - p0);
          const float* col_rows = x_group(n) + r0 * g.in_plane() + p0;
          index_t ld = g.in_plane();
          if (!g.is_pointwise()) {
            im2col(g, x_group(n), r0, r1 - r0, p0, cols, space, cols);
            col_rows = space;
            ld = cols;
          }
          gemm.multiply_abt(cout_g, r1 - r0, cols, dy_group(n) + p0, plane, col_rows, ld, target, patch, accumulate);
          accumulate = true;
        }
      }
      return;
    }
    // Packed GEMM with K = the pixels of a block: several whole samples, or part of one sample's plane.
    float* packed_dy = space;
    float* packed_columns = packed_dy + gemm.packed_a_floats(cout_g, width);
    const index_t rows = r1 - r0;
    auto add_piece = [&](index_t n, index_t p0, index_t cols, index_t K, index_t k0) {
      copy_into_packed_a(gemm, dy_group(n) + p0, plane, cout_g, cols, packed_dy, K, k0);
      if (g.is_pointwise()) {  // col is x itself
        for (index_t p = 0; p < rows; p += gemm.nr)
          transpose_panel_into_packed_b(gemm, x_group(n) + (r0 + p) * g.in_plane() + p0, g.in_plane(),
                                        std::min<index_t>(gemm.nr, rows - p), cols, packed_columns, K, rows, p, k0);
      } else {
        im2col_packed_transposed(gemm, g, x_group(n), r0, rows, p0, cols, packed_columns, K, k0);
      }
    };
    if (per_block > 1) {
      for (index_t first = n0; first < n1; first += per_block) {
        const index_t samples = std::min(per_block, n1 - first), K = samples * plane;
        for (index_t s = 0; s < samples; ++s) add_piece(first + s, 0, plane, K, s * plane);
        gemm.multiply_packed(cout_g, rows, K, packed_dy, packed_columns, target, patch, accumulate);
        accumulate = true;
      }
      return;
    }
    for (index_t n = n0; n < n1; ++n) {
      for (index_t p0 = 0; p0 < plane; p0 += width) {
        const index_t cols = std::min(width, plane - p0);
        add_piece(n, p0, cols, cols, 0);
        gemm.multiply_packed(cout_g, rows, cols, packed_dy, packed_columns, target, patch, accumulate);
        accumulate = true;
      }
    }
  });

  if (plan.sample_chunks > 1) sum_partial_gradients(partials.get(), plan.sample_chunks, weight_floats, threads, dw);
}

void conv2d_backward_bias(const ConvGeometry& g, int threads, const float* dy, float* db) {
  const index_t plane = g.out_plane();
  parallel_for(g.out_channels, threads, [&](index_t co, int) {
    double sum = 0.0;  // double: a batch of 64 x 56 x 56 terms would lose digits in float
    for (index_t n = 0; n < g.batch; ++n) {
      const float* src = dy + (n * g.out_channels + co) * plane;
      for (index_t p = 0; p < plane; ++p) sum += src[p];
    }
    db[co] = static_cast<float>(sum);
  });
}

}  // namespace fastcnn

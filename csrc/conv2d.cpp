// Convolution as GEMM over im2col blocks.
//
// Layout: x [N, C_in, H, W], w [C_out, C_in/groups, kH, kW], y [N, C_out, H_out, W_out]. For one sample and one
// group, y_g (C_out/g x P) = w_g (C_out/g x K) * col (K x P), where P = H_out * W_out and the K = C_in/g * kH * kW
// rows of col are the input pixels under each kernel position. col is built one block of output columns at a
// time (column_block), small enough to stay in L2 while the GEMM consumes it; 1x1 stride-1 convolutions skip it.
//
// Work split and determinism: each work item writes a disjoint part of the output and sums every element in an
// order fixed by the geometry alone (the column blocks, the GEMM's K blocks, the sample chunks of the weight
// gradient), never by the thread count. So any number of threads gives bitwise the same result.
#include "conv2d.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "gemm.h"

namespace fastcnn {
namespace {

constexpr index_t kColumnBudgetFloats = 128 * 1024;  // 512 KiB of im2col per block: fits in L2 beside the GEMM
constexpr index_t kMaxWeightSampleChunks = 16;
constexpr index_t kInnerProductMinColumns = 512;       // partial weight gradients summed in a fixed order

std::string shape_text(index_t a, index_t b) { return std::to_string(a) + "x" + std::to_string(b); }

[[noreturn]] void fail(const std::string& message) { throw std::invalid_argument("conv2d: " + message); }

index_t column_block(const ConvGeometry& g) {
  const index_t plane = g.out_plane();
  index_t cols = kColumnBudgetFloats / std::max<index_t>(1, g.patch_size());
  cols = std::max<index_t>(64, cols / 64 * 64);
  return std::min(cols, plane);
}

// Rows [row0, row0 + rows) of the im2col matrix of one sample and group, columns [p0, p0 + cols), into dst
// (row stride ld). Row r is input channel r / (kH*kW) of `planes` at kernel offset (r / kW % kH, r % kW).
void im2col(const ConvGeometry& g, const float* planes, index_t row0, index_t rows, index_t p0, index_t cols,
            float* dst, index_t ld) {
  const index_t area = g.kernel_area();
  for (index_t r = row0; r < row0 + rows; ++r) {
    const index_t channel = r / area, ki = (r % area) / g.kernel_width, kj = r % g.kernel_width;
    const float* plane = planes + channel * g.in_plane();
    float* out = dst + (r - row0) * ld;
    index_t oh = p0 / g.out_width, ow = p0 % g.out_width;
    for (index_t done = 0; done < cols; ow = 0, ++oh) {
      const index_t segment = std::min(g.out_width - ow, cols - done);
      float* seg = out + done;
      done += segment;
      const index_t ih = oh * g.stride_h - g.pad_top + ki * g.dilation_h;
      if (ih < 0 || ih >= g.in_height) {
        std::fill(seg, seg + segment, 0.0f);
        continue;
      }
      const float* src = plane + ih * g.in_width;
      const index_t iw0 = ow * g.stride_w - g.pad_left + kj * g.dilation_w;
      if (g.stride_w == 1) {
        const index_t lo = std::clamp<index_t>(-iw0, 0, segment);
        const index_t hi = std::clamp<index_t>(g.in_width - iw0, lo, segment);
        std::fill(seg, seg + lo, 0.0f);
        std::memcpy(seg + lo, src + iw0 + lo, static_cast<std::size_t>(hi - lo) * sizeof(float));
        std::fill(seg + hi, seg + segment, 0.0f);
      } else {
        for (index_t t = 0; t < segment; ++t) {
          const index_t iw = iw0 + t * g.stride_w;
          seg[t] = (iw >= 0 && iw < g.in_width) ? src[iw] : 0.0f;
        }
      }
    }
  }
}

// The adjoint of im2col: adds rows [0, rows) of src (channels starting at `planes`) back onto the input planes.
// For a fixed row, distinct columns land on distinct pixels, so each pixel receives its terms in row order.
void col2im_add(const ConvGeometry& g, float* planes, index_t rows, index_t p0, index_t cols, const float* src,
                index_t ld) {
  const index_t area = g.kernel_area();
  for (index_t r = 0; r < rows; ++r) {
    const index_t channel = r / area, ki = (r % area) / g.kernel_width, kj = r % g.kernel_width;
    float* plane = planes + channel * g.in_plane();
    const float* in = src + r * ld;
    index_t oh = p0 / g.out_width, ow = p0 % g.out_width;
    for (index_t done = 0; done < cols; ow = 0, ++oh) {
      const index_t segment = std::min(g.out_width - ow, cols - done);
      const float* seg = in + done;
      done += segment;
      const index_t ih = oh * g.stride_h - g.pad_top + ki * g.dilation_h;
      if (ih < 0 || ih >= g.in_height) continue;
      float* dst = plane + ih * g.in_width;
      const index_t iw0 = ow * g.stride_w - g.pad_left + kj * g.dilation_w;
      if (g.stride_w == 1) {
        const index_t lo = std::clamp<index_t>(-iw0, 0, segment);
        const index_t hi = std::clamp<index_t>(g.in_width - iw0, lo, segment);
        for (index_t t = lo; t < hi; ++t) dst[iw0 + t] += seg[t];
      } else {
        for (index_t t = 0; t < segment; ++t) {
          const index_t iw = iw0 + t * g.stride_w;
          if (iw >= 0 && iw < g.in_width) dst[iw] += seg[t];
        }
      }
    }
  }
}

// Rows [0, rows) of the im2col matrix of one sample and group, columns [p0, p0 + cols), written straight into
// packed B (K = rows, N = cols) for the forward GEMM: no intermediate im2col matrix to write and read again.
void im2col_packed(const GemmKernel& gemm, const ConvGeometry& g, const float* planes, index_t rows, index_t p0,
                   index_t cols, float* row_buffer, float* packed) {
  const index_t nr = gemm.nr;
  for (index_t r = 0; r < rows; ++r) {
    im2col(g, planes, r, 1, p0, cols, row_buffer, cols);
    for (index_t j0 = 0; j0 < cols; j0 += nr) {
      const index_t n = std::min(nr, cols - j0);
      float* dst = gemm.packed_b_at(packed, rows, cols, r, j0);
      std::memcpy(dst, row_buffer + j0, static_cast<std::size_t>(n) * sizeof(float));
      std::fill(dst + n, dst + nr, 0.0f);
    }
  }
}

// Rows [row0, row0 + rows) x columns [p0, p0 + cols) of the im2col matrix, transposed, as packed B
// (K = cols, N = rows) for the weight-gradient GEMM dW += dY * col^T when output planes are small. One panel's
// NR rows are built in `tile` (NR x cols, in L1/L2), then copied column by column into the panel, so every
// write to the panel is a run of NR consecutive floats.
void im2col_packed_transposed(const GemmKernel& gemm, const ConvGeometry& g, const float* planes, index_t row0,
                              index_t rows, index_t p0, index_t cols, float* tile, float* packed) {
  const index_t nr = gemm.nr, kc = gemm.kc;
  for (index_t r0 = 0; r0 < rows; r0 += nr) {
    const index_t panel_rows = std::min(nr, rows - r0);
    im2col(g, planes, row0 + r0, panel_rows, p0, cols, tile, cols);
    for (index_t k0 = 0; k0 < cols; k0 += kc) {
      float* dst = gemm.packed_b_at(packed, cols, rows, k0, r0);
      const index_t block = std::min(kc, cols - k0);
      for (index_t t = 0; t < block; ++t) {
        float* lane = dst + t * nr;
        const float* src = tile + k0 + t;
        for (index_t j = 0; j < panel_rows; ++j) lane[j] = src[j * cols];
        for (index_t j = panel_rows; j < nr; ++j) lane[j] = 0.0f;  // lanes past N are zero
      }
    }
  }
}

// Balanced split of [0, total) into `parts` ranges; returns the start of range `part`.
index_t split_point(index_t total, index_t parts, index_t part) { return total * part / parts; }

struct ForwardPlan {
  index_t column_block, blocks, items, per_thread_floats, packed_weight_floats;
  int threads;
};

ForwardPlan plan_forward(const ConvGeometry& g, int threads) {
  const GemmKernel& gemm = gemm_kernel();
  ForwardPlan plan{};
  plan.column_block = column_block(g);
  plan.blocks = ceil_div(g.out_plane(), plan.column_block);
  plan.items = checked_mul(checked_mul(g.batch, g.groups, "conv2d"), plan.blocks, "conv2d");
  plan.threads = static_cast<int>(std::min<index_t>(threads, plan.items));
  // per thread: packed im2col block and one im2col row
  plan.per_thread_floats = checked_add(gemm.packed_b_floats(g.patch_size(), plan.column_block), plan.column_block, "conv2d");
  plan.packed_weight_floats = checked_mul(g.groups, gemm.packed_a_floats(g.out_channels_per_group(), g.patch_size()), "conv2d");
  return plan;
}

struct BackwardInputPlan {
  index_t column_block, channel_chunks, chunk_rows, items, per_thread_floats, packed_weight_floats;
  int threads;
};

BackwardInputPlan plan_backward_input(const ConvGeometry& g, int threads) {
  const GemmKernel& gemm = gemm_kernel();
  BackwardInputPlan plan{};
  plan.column_block = column_block(g);
  const index_t samples_groups = checked_mul(g.batch, g.groups, "conv2d");
  // Few samples: split the input channels too so every thread has work. A pixel only receives terms from its
  // own channel's rows, so this split does not change any sum.
  plan.channel_chunks = samples_groups >= threads ? 1 : std::min(g.in_channels_per_group(), ceil_div(threads, samples_groups));
  plan.items = samples_groups * plan.channel_chunks;
  plan.threads = static_cast<int>(std::min<index_t>(threads, plan.items));
  plan.chunk_rows = ceil_div(g.in_channels_per_group(), plan.channel_chunks) * g.kernel_area();
  const index_t cout_g = g.out_channels_per_group();
  // per thread: packed dY block and the GEMM's output columns for col2im
  const index_t columns = g.is_pointwise() ? 0 : checked_mul(plan.chunk_rows, plan.column_block, "conv2d");
  plan.per_thread_floats = checked_add(gemm.packed_b_floats(cout_g, plan.column_block), columns, "conv2d");
  // W^T packed once per call for every (group, channel chunk)
  plan.packed_weight_floats =
      checked_mul(checked_mul(g.groups, plan.channel_chunks, "conv2d"), gemm.packed_a_floats(plan.chunk_rows, cout_g), "conv2d");
  return plan;
}

struct BackwardWeightPlan {
  index_t column_block, sample_chunks, row_chunks, chunk_rows, items, per_thread_floats, partial_floats;
  int threads;
  bool inner_products;  // long pixel rows: unpacked inner products; short ones: the packed GEMM
};

BackwardWeightPlan plan_backward_weight(const ConvGeometry& g, int threads) {
  const GemmKernel& gemm = gemm_kernel();
  BackwardWeightPlan plan{};
  plan.column_block = column_block(g);
  // The batch is summed in a fixed number of chunks (a function of N only), each into its own partial
  // gradient, and the partials are added in chunk order: parallel, yet the same bits for any thread count.
  plan.sample_chunks = std::min(g.batch, kMaxWeightSampleChunks);
  const index_t chunk_groups = plan.sample_chunks * g.groups;
  plan.row_chunks = chunk_groups >= threads ? 1 : std::min(g.patch_size(), ceil_div(threads, chunk_groups));
  plan.items = chunk_groups * plan.row_chunks;
  plan.threads = static_cast<int>(std::min<index_t>(threads, plan.items));
  plan.chunk_rows = ceil_div(g.patch_size(), plan.row_chunks);
  // Inner products along pixels need no transposing copy, but pay a horizontal sum per element: they win when
  // a block has many pixels (measured: LeNet's 28x28 planes), the packed GEMM when it has few.
  plan.inner_products = plan.column_block >= kInnerProductMinColumns;
  if (plan.inner_products) {  // per thread: one im2col block, read as it is
    plan.per_thread_floats = g.is_pointwise() ? 1 : checked_mul(plan.chunk_rows, plan.column_block, "conv2d");
  } else {  // per thread: packed dY block, packed im2col^T block and one panel's rows of im2col
    plan.per_thread_floats = checked_add(
        checked_add(gemm.packed_a_floats(g.out_channels_per_group(), plan.column_block),
                    gemm.packed_b_floats(plan.column_block, plan.chunk_rows), "conv2d"),
        checked_mul(gemm.nr, plan.column_block, "conv2d"), "conv2d");
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
  const ForwardPlan plan = plan_forward(g, threads);
  return workspace_bytes(plan.threads, plan.per_thread_floats, plan.packed_weight_floats);
}

index_t conv2d_backward_input_workspace_bytes(const ConvGeometry& g, int threads) {
  const BackwardInputPlan plan = plan_backward_input(g, threads);
  return workspace_bytes(plan.threads, plan.per_thread_floats, plan.packed_weight_floats);
}

index_t conv2d_backward_weight_workspace_bytes(const ConvGeometry& g, int threads) {
  const BackwardWeightPlan plan = plan_backward_weight(g, threads);
  return workspace_bytes(plan.threads, plan.per_thread_floats, plan.partial_floats);
}

void conv2d_forward(const ConvGeometry& g, int threads, const float* x, const float* w, const float* b, float* y) {
  const GemmKernel& gemm = gemm_kernel();
  const ForwardPlan plan = plan_forward(g, threads);
  const index_t plane = g.out_plane(), patch = g.patch_size();
  const index_t cin_g = g.in_channels_per_group(), cout_g = g.out_channels_per_group();
  // The weights are the A operand of every work item: pack them once per call.
  FloatBuffer packed_weights = allocate_floats(plan.packed_weight_floats);
  const index_t weight_stride = gemm.packed_a_floats(cout_g, patch);
  for (index_t group = 0; group < g.groups; ++group)
    gemm.pack_a(cout_g, patch, MatrixView{w + group * cout_g * patch, patch, 1}, packed_weights.get() + group * weight_stride);
  FloatBuffer workspace = allocate_floats(plan.threads * plan.per_thread_floats);

  parallel_for(plan.items, plan.threads, [&](index_t item, int thread) {
    const index_t block = item % plan.blocks, sample_group = item / plan.blocks;
    const index_t group = sample_group % g.groups, n = sample_group / g.groups;
    const index_t p0 = block * plan.column_block, cols = std::min(plan.column_block, plane - p0);
    const float* x_group = x + (n * g.in_channels + group * cin_g) * g.in_plane();
    float* packed_columns = workspace.get() + thread * plan.per_thread_floats;
    float* row_buffer = packed_columns + gemm.packed_b_floats(patch, plan.column_block);

    if (g.is_pointwise()) {
      gemm.pack_b(patch, cols, MatrixView{x_group + p0, g.in_plane(), 1}, packed_columns);
    } else {
      im2col_packed(gemm, g, x_group, patch, p0, cols, row_buffer, packed_columns);
    }
    float* y_block = y + (n * g.out_channels + group * cout_g) * plane + p0;
    if (b != nullptr) {
      for (index_t co = 0; co < cout_g; ++co)
        std::fill(y_block + co * plane, y_block + co * plane + cols, b[group * cout_g + co]);
    }
    gemm.multiply_packed(cout_g, cols, patch, packed_weights.get() + group * weight_stride, packed_columns, y_block,
                         plane, b != nullptr);
  });
}

void conv2d_backward_input(const ConvGeometry& g, int threads, const float* dy, const float* w, float* dx) {
  const GemmKernel& gemm = gemm_kernel();
  const BackwardInputPlan plan = plan_backward_input(g, threads);
  const index_t plane = g.out_plane(), patch = g.patch_size(), area = g.kernel_area();
  const index_t cin_g = g.in_channels_per_group(), cout_g = g.out_channels_per_group();
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
    const index_t chunk = item % plan.channel_chunks, sample_group = item / plan.channel_chunks;
    const index_t group = sample_group % g.groups, n = sample_group / g.groups;
    const index_t c0 = chunk_start(chunk), c1 = chunk_start(chunk + 1);
    if (c0 == c1) return;
    const index_t rows = (c1 - c0) * area;
    float* dx_planes = dx + (n * g.in_channels + group * cin_g + c0) * g.in_plane();
    const float* dy_group = dy + (n * g.out_channels + group * cout_g) * plane;
    const float* packed_wT = packed_weights.get() + (group * plan.channel_chunks + chunk) * weight_stride;
    float* packed_dy = workspace.get() + thread * plan.per_thread_floats;
    float* columns = packed_dy + gemm.packed_b_floats(cout_g, plan.column_block);

    if (g.is_pointwise()) {
      for (index_t p0 = 0; p0 < plane; p0 += plan.column_block) {
        const index_t cols = std::min(plan.column_block, plane - p0);
        gemm.pack_b(cout_g, cols, MatrixView{dy_group + p0, plane, 1}, packed_dy);
        gemm.multiply_packed(rows, cols, cout_g, packed_wT, packed_dy, dx_planes + p0, g.in_plane(), false);
      }
      return;
    }
    std::fill(dx_planes, dx_planes + (c1 - c0) * g.in_plane(), 0.0f);
    for (index_t p0 = 0; p0 < plane; p0 += plan.column_block) {
      const index_t cols = std::min(plan.column_block, plane - p0);
      gemm.pack_b(cout_g, cols, MatrixView{dy_group + p0, plane, 1}, packed_dy);
      gemm.multiply_packed(rows, cols, cout_g, packed_wT, packed_dy, columns, cols, false);
      col2im_add(g, dx_planes, rows, p0, cols, columns, cols);
    }
  });
}

void conv2d_backward_weight(const ConvGeometry& g, int threads, const float* dy, const float* x, float* dw) {
  const GemmKernel& gemm = gemm_kernel();
  const BackwardWeightPlan plan = plan_backward_weight(g, threads);
  FloatBuffer workspace = allocate_floats(plan.threads * plan.per_thread_floats);
  FloatBuffer partials = allocate_floats(plan.partial_floats);
  const index_t plane = g.out_plane(), patch = g.patch_size();
  const index_t cin_g = g.in_channels_per_group(), cout_g = g.out_channels_per_group();
  const index_t weight_floats = g.out_channels * patch;

  parallel_for(plan.items, plan.threads, [&](index_t item, int thread) {
    const index_t row_chunk = item % plan.row_chunks, chunk_group = item / plan.row_chunks;
    const index_t group = chunk_group % g.groups, chunk = chunk_group / g.groups;
    const index_t r0 = split_point(patch, plan.row_chunks, row_chunk);
    const index_t r1 = split_point(patch, plan.row_chunks, row_chunk + 1);
    if (r0 == r1) return;
    const index_t n0 = split_point(g.batch, plan.sample_chunks, chunk);
    const index_t n1 = split_point(g.batch, plan.sample_chunks, chunk + 1);
    float* target = (plan.sample_chunks > 1 ? partials.get() + chunk * weight_floats : dw) + group * cout_g * patch + r0;
    float* columns = workspace.get() + thread * plan.per_thread_floats;
    bool accumulate = false;
    for (index_t n = n0; n < n1; ++n) {
      const float* x_group = x + (n * g.in_channels + group * cin_g) * g.in_plane();
      const float* dy_group = dy + (n * g.out_channels + group * cout_g) * plane;
      for (index_t p0 = 0; p0 < plane; p0 += plan.column_block) {
        const index_t cols = std::min(plan.column_block, plane - p0);
        // dW_g[:, r0:r1] += dY_g[:, p0:p0+cols] * col[r0:r1, p0:p0+cols]^T
        if (plan.inner_products) {
          const float* col_rows = x_group + r0 * g.in_plane() + p0;
          index_t ld = g.in_plane();
          if (!g.is_pointwise()) {
            im2col(g, x_group, r0, r1 - r0, p0, cols, columns, cols);
            col_rows = columns;
            ld = cols;
          }
          gemm.multiply_abt(cout_g, r1 - r0, cols, dy_group + p0, plane, col_rows, ld, target, patch, accumulate);
        } else {
          float* packed_dy = columns;
          float* packed_columns = packed_dy + gemm.packed_a_floats(cout_g, plan.column_block);
          float* tile = packed_columns + gemm.packed_b_floats(plan.column_block, plan.chunk_rows);
          gemm.pack_a(cout_g, cols, MatrixView{dy_group + p0, plane, 1}, packed_dy);
          if (g.is_pointwise()) {
            gemm.pack_b(cols, r1 - r0, MatrixView{x_group + r0 * g.in_plane() + p0, 1, g.in_plane()}, packed_columns);
          } else {
            im2col_packed_transposed(gemm, g, x_group, r0, r1 - r0, p0, cols, tile, packed_columns);
          }
          gemm.multiply_packed(cout_g, r1 - r0, cols, packed_dy, packed_columns, target, patch, accumulate);
        }
        accumulate = true;
      }
    }
  });

  if (plan.sample_chunks > 1) {
    constexpr index_t kSpan = 4096;
    parallel_for(ceil_div(weight_floats, kSpan), threads, [&](index_t item, int) {
      const index_t e0 = item * kSpan, e1 = std::min(weight_floats, e0 + kSpan);
      std::copy(partials.get() + e0, partials.get() + e1, dw + e0);
      for (index_t s = 1; s < plan.sample_chunks; ++s) {
        const float* part = partials.get() + s * weight_floats;
        for (index_t e = e0; e < e1; ++e) dw[e] += part[e];
      }
    });
  }
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

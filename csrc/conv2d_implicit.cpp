// Stride-1 convolution as an implicit GEMM: the GEMM reads its B operand straight from a zero-padded copy of
// the input instead of an im2col matrix.
//
// With the input of one (sample, group) padded to Hp x Wp planes, output pixel (oh, ow) at GEMM column
// q = oh * Wp + ow needs, for kernel tap k = (c, ki, kj), the padded input at q + offset(k), where
// offset(k) = c * Hp * Wp + ki * dilation_h * Wp + kj * dilation_w. So row k of im2col is the padded input itself,
// shifted by offset(k): a run of consecutive columns is a run of consecutive floats, and the micro-kernel loads
// it in place. Columns with ow >= W_out wrap around into the next row: they are computed and thrown away, which
// costs Wp / W_out more multiply-adds than needed, far less than writing and reading im2col (whose cost grows
// with the kernel area and dominated small layers: LeNet's convolutions spent most of their time in it).
//
// Many channels on small planes are better served the other way round (vectors along output channels, tiles of
// consecutive output pixels); the input gradient is the same convolution on the transposed geometry (by Winograd's
// algorithm where conv2d_winograd.cpp applies, as the forward in conv2d.cpp); the weight
// gradient takes inner products along pixels or sums taps x channels tiles (see plan_weight). The layouts all of
// them read and write are in implicit_layout.h. For the input gradient, whose transposed geometry pads grad_output
// heavily, the taps run kernel rows first, k = (ki, c, kj), and each run of tiles skips those that only meet
// padding rows (see live_taps).
//
// Each output element is one sum in a fixed order (k order inside one micro-kernel call; for the weight gradient,
// sample chunks fixed by the shapes), whatever the tiling or the number of threads, so results are bitwise the
// same for any thread count. (The taps a tile skips depend on where it starts, a multiple of NR from the plane's
// first column whatever the thread count, and only ever multiply zeros.)
#include "conv2d_implicit.h"

#include <algorithm>
#include <vector>

#include "conv2d_winograd.h"
#include "gemm.h"
#include "implicit_layout.h"

namespace fastcnn {
namespace {

constexpr index_t kMaxWasteRatio = 2;           // padded width at most this many times the output width
constexpr index_t kStagingBudgetFloats = 65536;  // 256 KiB of output columns per thread, kept in L2
constexpr index_t kMaxTileRows = 16;             // at least any variant's MR

// Which way the implicit GEMM's vectors run. Along pixels (the wrapped columns above), tiles are MR channels x NR
// pixel columns and the wrapped columns are the waste; along channels, tiles are MR consecutive output pixels
// (running on across rows) x NR channels and the waste is only a plane's short last tile or a partial last vector
// of channels. The plan takes
// whichever wastes less, which is channels for many-channel layers on small planes (CIFAR- and VGG-like layers).
enum class Vectors { along_pixels, along_channels };

// Fraction of the computed lanes that produce an output, each way.
double pixel_vector_efficiency(const ConvGeometry& g, const PaddedInput& pad, const GemmKernel& gemm) {
  const index_t m = g.out_channels_per_group(), rows = gemm.implicit_panel_rows(m);
  return static_cast<double>(g.out_width) / pad.width * m / (ceil_div(m, rows) * rows);
}
double channel_vector_efficiency(const ConvGeometry& g, const GemmKernel& gemm) {
  const index_t m = g.out_channels_per_group(), vl = gemm.vector_floats;
  // pixel tiles run on across row ends: only the plane's last tile may be short
  const double lanes = static_cast<double>(g.out_plane()) / (ceil_div(g.out_plane(), gemm.mr) * gemm.mr) * m /
                       (ceil_div(m, vl) * vl);
  // Each output is then stored transposed: about half a cycle with AVX-512's in-register transpose, one cycle
  // element by element otherwise, against the K / VL cycles of multiply-adds it took. That matters for short sums
  // (3 input channels x 3 x 3 taps measured 40% slower this way).
  const double store_cycles = vl == 16 ? 0.5 : 1.0;
  return lanes / (1.0 + store_cycles * static_cast<double>(vl) / g.patch_size());
}
constexpr double kChannelVectorMargin = 0.01;  // a tie goes to the wrapped columns

struct ImplicitPlan {
  PaddedInput pad;
  Vectors vectors;
  index_t units;          // (sample, group) pairs, each with its own padded input
  index_t chunks;         // parts of a unit: ranges of GEMM columns, of output rows (row tiles) or of pixels
  index_t chunk_columns;  // along pixels: a multiple of NR
  index_t chunk_pixels;   // along channels: a multiple of MR
  // along pixels, when W_out is a whole number of NR-wide tiles: tiles are output rows, written straight into y
  // (no wrapped columns, no staging copy), and chunks are ranges of chunk_rows output rows
  bool row_tiles;
  index_t chunk_rows;
  // Row tiles of an output larger than the threads' L2 caches are written past the caches: it cannot stay in
  // them for the next layer anyway, and ordinary stores would read every line in first (3 input channels:
  // 20% of the layer's time).
  bool stream_output;
  index_t items;
  index_t padded_m;       // along pixels: output channels per group rounded up to the panel rows
  index_t weight_panel;   // along channels: output channels per group rounded up to NR
  int threads;
  // With a unit for every thread, a work item is a whole unit (all its chunks): it pads the unit into its
  // thread's buffer, so the workspace stays small whatever the batch and the copy is in cache when read. With
  // fewer units than threads (a single image), items are (unit, chunk) and those few units are padded once.
  bool pad_per_item;
  index_t chunks_per_item;
  index_t shared_input_floats, weight_floats, per_thread_floats;  // per thread: output tile (+ padded unit)
};

ImplicitPlan plan_implicit(const ConvGeometry& g, int threads) {
  const GemmKernel& gemm = gemm_kernel();
  if (gemm.mr > kMaxTileRows) throw std::logic_error("conv2d: a GEMM variant's MR exceeds kMaxTileRows");
  const index_t nr = gemm.nr, cout_g = g.out_channels_per_group(), patch = g.patch_size();
  ImplicitPlan plan{};
  plan.pad = padded_input(g, nr);
  plan.units = checked_mul(g.batch, g.groups, "conv2d");
  plan.vectors = channel_vector_efficiency(g, gemm) > pixel_vector_efficiency(g, plan.pad, gemm) + kChannelVectorMargin
                     ? Vectors::along_channels
                     : Vectors::along_pixels;
  // Enough items for every thread (a single image is split), each item's output in L2.
  const index_t wanted_chunks = ceil_div(2 * threads, plan.units);
  index_t tile_floats = 0;
  if (plan.vectors == Vectors::along_pixels) {
    const index_t rows = gemm.implicit_panel_rows(cout_g);
    plan.padded_m = ceil_div(cout_g, rows) * rows;
    plan.weight_floats = checked_mul(g.groups, checked_mul(plan.padded_m, patch, "conv2d"), "conv2d");
    plan.row_tiles = g.out_width % nr == 0;
    const index_t output_bytes =
        checked_mul(checked_mul(g.batch, g.out_channels, "conv2d"), checked_mul(g.out_plane(), 4, "conv2d"), "conv2d");
    plan.stream_output = plan.row_tiles && output_bytes > checked_mul(threads, l2_cache_bytes(), "conv2d");
    if (plan.row_tiles) {
      plan.chunk_rows = ceil_div(g.out_height, std::min(wanted_chunks, g.out_height));
      plan.chunks = ceil_div(g.out_height, plan.chunk_rows);
    } else {
      const index_t budget_columns = std::max<index_t>(nr, kStagingBudgetFloats / cout_g / nr * nr);
      plan.chunk_columns = std::min(budget_columns, ceil_div(ceil_div(plan.pad.columns, wanted_chunks), nr) * nr);
      plan.chunks = ceil_div(plan.pad.columns, plan.chunk_columns);
      tile_floats = checked_mul(cout_g, plan.chunk_columns, "conv2d");
    }
  } else {
    const index_t tiles = ceil_div(g.out_plane(), gemm.mr);
    plan.chunk_pixels = ceil_div(tiles, std::min(wanted_chunks, tiles)) * gemm.mr;
    plan.chunks = ceil_div(g.out_plane(), plan.chunk_pixels);
    plan.weight_panel = ceil_div(cout_g, nr) * nr;
    plan.weight_floats = checked_mul(g.groups, checked_mul(plan.weight_panel, patch, "conv2d"), "conv2d");

  }
  plan.pad_per_item = plan.chunks == 1 || plan.units >= threads;
  plan.chunks_per_item = plan.pad_per_item ? plan.chunks : 1;
  plan.items = plan.pad_per_item ? plan.units : checked_mul(plan.units, plan.chunks, "conv2d");
  plan.threads = static_cast<int>(std::min<index_t>(threads, plan.items));
  plan.shared_input_floats = plan.pad_per_item ? 0 : checked_mul(plan.units, plan.pad.floats, "conv2d");
  plan.per_thread_floats = checked_add(tile_floats, plan.pad_per_item ? plan.pad.floats : 0, "conv2d");
  return plan;
}

index_t plan_bytes(const ImplicitPlan& plan, index_t patch) {
  index_t floats = checked_add(plan.shared_input_floats, plan.weight_floats, "conv2d");
  floats = checked_add(floats, checked_mul(plan.threads, plan.per_thread_floats, "conv2d"), "conv2d");
  floats = checked_add(floats, checked_mul(patch, 2, "conv2d"), "conv2d");  // the offsets (64-bit)
  return checked_mul(floats, static_cast<index_t>(sizeof(float)), "conv2d");
}

// The transposed geometry whose stride-1 convolution of grad_output is grad_input (see implicit_backward_input).
ConvGeometry transposed_geometry(const ConvGeometry& g) {
  ConvGeometry t = g;
  t.in_channels = g.out_channels;
  t.in_height = g.out_height;
  t.in_width = g.out_width;
  t.out_channels = g.in_channels;
  const index_t reach_h = (g.kernel_height - 1) * g.dilation_h, reach_w = (g.kernel_width - 1) * g.dilation_w;
  t.pad_top = reach_h - g.pad_top;
  t.pad_bottom = reach_h - g.pad_bottom;
  t.pad_left = reach_w - g.pad_left;
  t.pad_right = reach_w - g.pad_right;
  t.out_height = g.in_height;
  t.out_width = g.in_width;
  return t;
}

bool paddings_fit_kernel(const ConvGeometry& g) {
  const index_t reach_h = (g.kernel_height - 1) * g.dilation_h, reach_w = (g.kernel_width - 1) * g.dilation_w;
  return g.pad_top <= reach_h && g.pad_bottom <= reach_h && g.pad_left <= reach_w && g.pad_right <= reach_w;
}

// Kernel rows first. For the input gradient (implicit_backward_input), the transposed geometry pads grad_output
// by nearly the kernel's reach: LeNet's second layer reads 10 real rows of an 18-row padded plane, and about half
// of the implicit GEMM's products for real outputs were weights times padding. With the taps ordered (ki, c, kj) instead of (c, ki, kj),
// the taps whose kernel row falls on padding rows for every output row of a tile are one run at either end of K,
// and the tile's GEMM skips them. Their products are exact zeros only for finite weights (0 * inf is NaN), which
// the input gradient checks before it comes here; skipping them leaves every sum's other terms in the same order
// (only the sign of a sum that is exactly zero may differ). The order itself differs from the (c, ki, kj) one, so
// input gradients round differently in the last bits than before this ordering.
struct TapRange {
  index_t begin, end;  // taps [begin, end) in kernel-rows-first order
};

// The taps a tile of output rows [oh0, oh1] needs: every kernel row that reaches a real input row from one of them
// (a superset with dilation, whose end rows may reach none; one zero row when none does).
TapRange live_taps(const ConvGeometry& g, index_t oh0, index_t oh1) {
  const index_t dh = g.dilation_h, first_real = g.pad_top, last_real = g.pad_top + g.in_height - 1;
  // padded row oh + ki * dh is real for some oh in [oh0, oh1]
  index_t lo = first_real > oh1 ? ceil_div(first_real - oh1, dh) : 0;
  index_t hi = last_real >= oh0 ? std::min(g.kernel_height - 1, (last_real - oh0) / dh) : -1;
  if (hi < lo) {  // no real row at all: one kernel row of zero products keeps the GEMM non-empty
    lo = std::min(lo, g.kernel_height - 1);
    hi = lo;
  }
  const index_t per_row = g.in_channels_per_group() * g.kernel_width;
  return TapRange{lo * per_row, (hi + 1) * per_row};
}

// Offsets of the taps in kernel-rows-first order (see above), or in the weights' own (c, ki, kj) order.
std::vector<index_t> tap_offsets(const ConvGeometry& g, const PaddedInput& pad, bool rows_first) {
  const index_t cin_g = g.in_channels_per_group(), kh = g.kernel_height, kw = g.kernel_width;
  std::vector<index_t> offsets(static_cast<std::size_t>(g.patch_size()));
  for (index_t k = 0; k < g.patch_size(); ++k) {
    const index_t ki = rows_first ? k / (cin_g * kw) : (k % g.kernel_area()) / kw;
    const index_t c = rows_first ? (k / kw) % cin_g : k / g.kernel_area(), kj = k % kw;
    offsets[k] = (c * pad.height + ki * g.dilation_h) * pad.width + kj * g.dilation_w;
  }
  return offsets;
}

// One group's weights (M x patch, OIHW rows) with taps in kernel-rows-first order, packed panel by panel: panel i0
// (a multiple of MR) at i0 * K holds [k][rows] for its min(MR, M - i0) rows, so that any panel is itself a matrix
// of at most MR rows in multiply_implicit's layout and can be multiplied on its own over a range of taps. With a
// short last panel the whole is not gemm.h's layout (that pads it to MR rows): multiply it only through
// multiply_tap_range.
void pack_rows_first(const ConvGeometry& g, index_t M, const float* src, index_t mr, float* packed) {
  const index_t patch = g.patch_size(), cin_g = g.in_channels_per_group(), kw = g.kernel_width;
  for (index_t i0 = 0; i0 < M; i0 += mr) {
    const index_t rows = std::min(mr, M - i0);
    float* panel = packed + i0 * patch;
    for (index_t k = 0; k < patch; ++k) {
      const index_t ki = k / (cin_g * kw), c = (k / kw) % cin_g, kj = k % kw;
      const index_t source = c * g.kernel_area() + ki * kw + kj;
      for (index_t i = 0; i < rows; ++i) panel[k * rows + i] = src[(i0 + i) * patch + source];
    }
  }
}

// C (M x N) = bias + A * B over the taps of `range` only, for weights packed by pack_rows_first.
void multiply_tap_range(const GemmKernel& gemm, index_t M, index_t N, index_t K, TapRange range, const float* packed,
                        const float* base, const index_t* offsets, const float* bias, float* C, index_t ldc,
                        bool stream) {
  for (index_t i0 = 0; i0 < M; i0 += gemm.mr) {
    const index_t rows = std::min<index_t>(gemm.mr, M - i0);
    gemm.multiply_implicit(rows, N, range.end - range.begin, packed + i0 * K + range.begin * rows, base,
                           offsets + range.begin, bias == nullptr ? nullptr : bias + i0, C + i0 * ldc, ldc, stream);
  }
}

// Columns [q0, q1) of a unit's wrapped-column GEMM (q0 a multiple of NR) into `tile` (row stride ld), each run of
// NR-wide micro-tiles that need the same taps multiplied over those taps only.
void multiply_live_taps(const GemmKernel& gemm, const ConvGeometry& g, const PaddedInput& pad, index_t M, index_t q0,
                        index_t q1, const float* packed, const float* padded, const index_t* offsets, float* tile,
                        index_t ld) {
  auto taps_of_tile = [&](index_t j0) {  // output rows the tile's columns fall in (wrapped ones count too)
    const index_t last = std::min(q1, j0 + gemm.nr) - 1;
    return live_taps(g, j0 / pad.width, std::min(g.out_height - 1, last / pad.width));
  };
  for (index_t j0 = q0; j0 < q1;) {
    const TapRange range = taps_of_tile(j0);
    index_t j1 = std::min(q1, j0 + gemm.nr);
    for (; j1 < q1; j1 = std::min(q1, j1 + gemm.nr)) {
      const TapRange next = taps_of_tile(j1);
      if (next.begin != range.begin || next.end != range.end) break;
    }
    multiply_tap_range(gemm, M, j1 - j0, g.patch_size(), range, packed, padded + j0, offsets, nullptr,
                       tile + (j0 - q0), ld, false);
    j0 = j1;
  }
}

constexpr index_t kWeightSampleChunks = 16;  // at most this many partial weight gradients
constexpr double kTapsMargin = 0.05;           // the taps kernel must clearly waste less to be chosen
constexpr index_t kWeightSumFloats = 1024;   // products per horizontal sum: amortises it, keeps A in L1
constexpr index_t kTapAlignment = 4;         // taps split between threads in multiples of 4 (whole dot tiles)
constexpr index_t kItemsPerThread = 3;       // enough items to balance uneven ones
constexpr index_t kWeightBlockFloats = 65536;  // laid-out samples per thread (256 KiB), beyond what long sums need

struct WeightPlan {
  PaddedInput pad;
  // Along pixels: inner products over grad_output rows laid out on the padded width (wrapped columns wasted, a
  // horizontal sum per block). Along channels: taps x channels tiles summed over exactly the output pixels.
  Vectors vectors;
  index_t row_length;  // along pixels: grad_output rows on the padded width, H_out * Wp rounded up to a vector
  // along pixels, when W_out is a whole number of vectors: grad_output read in place, row by row, with no wrapped
  // columns to lay out or to waste
  bool in_place;
  index_t channel_panels;  // along channels: output channels per group in NR-wide panels
  index_t sample_chunks, row_chunks, items;
  index_t block_samples;  // samples an item lays out at a time (its thread's buffer holds that many)
  int threads;
  index_t per_thread_floats, partial_floats;
};

WeightPlan plan_weight(const ConvGeometry& g, int threads) {
  const GemmKernel& gemm = gemm_kernel();
  WeightPlan plan{};
  plan.pad = padded_input(g, gemm.nr);
  plan.row_length = ceil_div(checked_mul(g.out_height, plan.pad.width, "conv2d"), gemm.vector_floats) * gemm.vector_floats;
  const index_t cout_g = g.out_channels_per_group(), vl = gemm.vector_floats;
  const double along_pixels = static_cast<double>(g.out_width) / plan.pad.width;
  const index_t taps = g.patch_size(), mr = gemm.mr;  // a short last tile of taps runs below the FMA peak
  const double along_channels = static_cast<double>(cout_g) / (ceil_div(cout_g, vl) * vl) *
                                static_cast<double>(taps) / (ceil_div(taps, mr) * mr);
  plan.vectors = along_channels > along_pixels + kTapsMargin ? Vectors::along_channels : Vectors::along_pixels;
  plan.channel_panels = ceil_div(cout_g, gemm.nr);
  plan.in_place = plan.vectors == Vectors::along_pixels && g.out_width % vl == 0;
  // The batch is summed in chunks fixed by the geometry alone, partials added in chunk order. A chunk holds
  // enough samples for long sums (along pixels, each tile ends with a horizontal sum per element), and there
  // are at most kWeightSampleChunks of them (each has a partial gradient).
  const index_t long_sums = plan.vectors == Vectors::along_pixels ? ceil_div(kWeightSumFloats, plan.row_length) : 1;
  // (in place, a sample's sum is H_out * W_out long: shorter than row_length, but only by the wrapped columns)
  const index_t samples = std::max(long_sums, ceil_div(g.batch, kWeightSampleChunks));
  plan.sample_chunks = ceil_div(g.batch, std::min(samples, g.batch));
  // Threads share the work by (chunk, group), and split the kernel taps when there are too few of those.
  const index_t chunk_groups = plan.sample_chunks * g.groups;
  plan.row_chunks = std::min(ceil_div(g.patch_size(), kTapAlignment), ceil_div(kItemsPerThread * threads, chunk_groups));
  plan.items = chunk_groups * plan.row_chunks;
  plan.threads = static_cast<int>(std::min<index_t>(threads, plan.items));
  // Each item lays out its samples' padded inputs and grad_output rows in its thread's buffer, a block of at most
  // kMaxImplicitSegments samples at a time: the workspace does not grow with the batch.
  const index_t grad_floats = plan.vectors == Vectors::along_channels
                                  ? checked_mul(plan.channel_panels * gemm.nr, g.out_plane(), "conv2d")
                                  : plan.in_place ? 0 : checked_mul(cout_g, plan.row_length, "conv2d");
  const index_t per_sample = checked_add(plan.pad.floats, grad_floats, "conv2d");
  const index_t wanted = std::max(long_sums, kWeightBlockFloats / per_sample);
  plan.block_samples = std::clamp<index_t>(wanted, 1, std::min(kMaxImplicitSegments, ceil_div(g.batch, plan.sample_chunks)));
  plan.per_thread_floats = checked_mul(plan.block_samples, per_sample, "conv2d");
  const index_t weight_floats = checked_mul(g.out_channels, g.patch_size(), "conv2d");
  // Along channels, partial gradients are laid out [group][tap][channel] so that tiles store whole vectors (a
  // store transposed into dW's [channel][tap], element by element, cost a fifth of the 8x8 layer): the chunks'
  // partials, and their sum before one transposition into dW.
  if (plan.vectors == Vectors::along_channels) {
    plan.partial_floats = checked_mul(plan.sample_chunks + (plan.sample_chunks > 1 ? 1 : 0), weight_floats, "conv2d");
  } else {
    plan.partial_floats = plan.sample_chunks > 1 ? checked_mul(plan.sample_chunks, weight_floats, "conv2d") : 0;
  }
  return plan;
}

}  // namespace

bool implicit_conv_applies(const ConvGeometry& g) {
  if (g.stride_h != 1 || g.stride_w != 1) return false;
  const index_t padded_width = g.in_width + g.pad_left + g.pad_right;
  return padded_width <= kMaxWasteRatio * g.out_width;
}

index_t implicit_forward_workspace_bytes(const ConvGeometry& g, int threads) {
  return plan_bytes(plan_implicit(g, threads), g.patch_size());
}

void implicit_forward(const ConvGeometry& g, int threads, const float* x, const float* w, const float* b, float* y,
                      bool weights_finite) {
  const GemmKernel& gemm = gemm_kernel();
  const ImplicitPlan plan = plan_implicit(g, threads);
  const PaddedInput& pad = plan.pad;
  const index_t patch = g.patch_size(), cin_g = g.in_channels_per_group(), cout_g = g.out_channels_per_group();
  // Taps on padding rows are skipped only along pixels, where a tile covers a few whole output rows.
  const bool rows_first =
      weights_finite && plan.vectors == Vectors::along_pixels && (g.pad_top > 0 || g.pad_bottom > 0);

  const std::vector<index_t> offsets = tap_offsets(g, pad, rows_first);
  FloatBuffer packed_weights = allocate_floats(plan.weight_floats);
  const index_t weight_stride = plan.weight_floats / g.groups;
  for (index_t group = 0; group < g.groups; ++group) {
    const float* rows = w + group * cout_g * patch;
    float* packed = packed_weights.get() + group * weight_stride;
    if (rows_first) {
      pack_rows_first(g, cout_g, rows, gemm.mr, packed);
    } else if (plan.vectors == Vectors::along_pixels) {
      pack_whole(cout_g, patch, rows, gemm.implicit_panel_rows(cout_g), packed);
    } else {
      pack_transposed_whole(cout_g, patch, rows, gemm.nr, packed);
    }
  }
  auto unit_input = [&](index_t unit) {
    const index_t n = unit / g.groups, group = unit % g.groups;
    return x + (n * g.in_channels + group * cin_g) * g.in_plane();
  };
  FloatBuffer shared_inputs = allocate_floats(plan.shared_input_floats);
  if (!plan.pad_per_item) {
    parallel_for(plan.units, threads, [&](index_t unit, int) {
      (void)pad_unit(g, pad, unit_input(unit), shared_inputs.get() + unit * pad.floats, false);
    });
  }
  FloatBuffer workspace = allocate_floats(checked_mul(plan.threads, plan.per_thread_floats, "conv2d"));
  const index_t tile_floats = plan.per_thread_floats - (plan.pad_per_item ? pad.floats : 0);

  parallel_for(plan.items, plan.threads, [&](index_t item, int thread) {
    const index_t unit = item / (plan.chunks / plan.chunks_per_item);
    const index_t first_chunk = plan.pad_per_item ? 0 : item % plan.chunks;
    const index_t n = unit / g.groups, group = unit % g.groups;
    float* tile = workspace.get() + thread * plan.per_thread_floats;
    const float* padded = shared_inputs.get() + unit * pad.floats;
    if (plan.pad_per_item) {
      float* own = tile + tile_floats;
      (void)pad_unit(g, pad, unit_input(unit), own, false);
      padded = own;
    }
    const float* weights = packed_weights.get() + group * weight_stride;
    const float* bias = b == nullptr ? nullptr : b + group * cout_g;
    float* y_planes = y + (n * g.out_channels + group * cout_g) * g.out_plane();
    for (index_t chunk = first_chunk; chunk < first_chunk + plan.chunks_per_item; ++chunk) {
      if (plan.vectors == Vectors::along_pixels && plan.row_tiles) {
        const index_t oh1 = std::min(g.out_height, (chunk + 1) * plan.chunk_rows);
        for (index_t oh = chunk * plan.chunk_rows; oh < oh1; ++oh) {
          float* row = y_planes + oh * g.out_width;
          if (rows_first) {
            multiply_tap_range(gemm, cout_g, g.out_width, patch, live_taps(g, oh, oh), weights, padded + oh * pad.width,
                               offsets.data(), bias, row, g.out_plane(), plan.stream_output);
          } else {
            gemm.multiply_implicit(cout_g, g.out_width, patch, weights, padded + oh * pad.width, offsets.data(), bias,
                                   row, g.out_plane(), plan.stream_output);
          }
        }
        continue;
      }
      if (plan.vectors == Vectors::along_pixels) {
        const index_t q0 = chunk * plan.chunk_columns, q1 = std::min(pad.columns, q0 + plan.chunk_columns);
        if (rows_first) {
          multiply_live_taps(gemm, g, pad, cout_g, q0, q1, weights, padded, offsets.data(), tile, plan.chunk_columns);
        } else {
          gemm.multiply_implicit(cout_g, q1 - q0, patch, weights, padded + q0, offsets.data(), nullptr, tile,
                                 plan.chunk_columns, false);
        }
        store_pixels(g, pad, tile, plan.chunk_columns, q0, q1, cout_g, bias, y_planes);
        continue;
      }
      const index_t p1 = std::min(g.out_plane(), (chunk + 1) * plan.chunk_pixels);
      index_t pixels[kMaxTileRows];
      for (index_t p0 = chunk * plan.chunk_pixels; p0 < p1; p0 += gemm.mr) {
        const index_t count = std::min<index_t>(gemm.mr, p1 - p0);
        for (index_t i = 0; i < count; ++i)  // where output pixel p0 + i's window starts in the padded input
          pixels[i] = (p0 + i) / g.out_width * pad.width + (p0 + i) % g.out_width;
        gemm.multiply_pixels(count, cout_g, patch, padded, offsets.data(), pixels, weights, bias, y_planes + p0,
                             g.out_plane());
      }
    }
  });
}

bool implicit_backward_input_applies(const ConvGeometry& g) {
  // Its GEMM has one row per input channel; fewer than a micro-tile of them (LeNet's first layer has one) make
  // one exact panel, which measured faster than the explicit path even for a single channel.
  return g.stride_h == 1 && g.stride_w == 1 && paddings_fit_kernel(g) && implicit_conv_applies(transposed_geometry(g));
}

index_t implicit_backward_input_workspace_bytes(const ConvGeometry& g, int threads) {
  const index_t flipped = checked_mul(checked_mul(g.out_channels, g.patch_size(), "conv2d"), 4, "conv2d");
  const ConvGeometry t = transposed_geometry(g);
  index_t forward = implicit_forward_workspace_bytes(t, threads);
  // Winograd falls back to the implicit GEMM for non-finite values: room for either
  if (winograd_applies(t)) forward = std::max(forward, winograd_forward_workspace_bytes(t, threads));
  return checked_add(forward, flipped, "conv2d");
}

bool implicit_backward_input(const ConvGeometry& g, int threads, const float* dy, const float* w, float* dx) {
  // dx[c][h][w] = sum over (o, ki, kj) of dy[o][h + pad_top - ki*d][w + pad_left - kj*d] * w[o][c][ki][kj]: a
  // stride-1 convolution of dy, padded by (kernel reach - padding), with each group's weights transposed to
  // [c][o] and flipped in both spatial directions.
  const ConvGeometry t = transposed_geometry(g);
  const index_t cin_g = g.in_channels_per_group(), cout_g = g.out_channels_per_group();
  const index_t kh = g.kernel_height, kw = g.kernel_width, area = g.kernel_area();
  // The padding of dy multiplies weights by zero: 0 * inf is NaN where the gradient (which has no such term) is
  // infinite. Leave non-finite weights to the explicit path, which forms only the real products.
  const index_t weight_floats = g.out_channels * g.patch_size();
  if (!all_finite(w, weight_floats)) return false;
  FloatBuffer flipped = allocate_floats(weight_floats);
  for (index_t group = 0; group < g.groups; ++group)
    for (index_t c = 0; c < cin_g; ++c)
      for (index_t o = 0; o < cout_g; ++o)
        for (index_t ki = 0; ki < kh; ++ki)
          for (index_t kj = 0; kj < kw; ++kj)
            flipped[(((group * cin_g + c) * cout_g + o) * kh + ki) * kw + kj] =
                w[(((group * cout_g + o) * cin_g + c) * area) + (kh - 1 - ki) * kw + (kw - 1 - kj)];
  if (!(winograd_applies(t) && winograd_forward(t, threads, dy, flipped.get(), nullptr, dx)))
    implicit_forward(t, threads, dy, flipped.get(), nullptr, dx, /*weights_finite=*/true);
  return true;
}

index_t implicit_backward_weight_workspace_bytes(const ConvGeometry& g, int threads) {
  const WeightPlan plan = plan_weight(g, threads);
  index_t floats = checked_add(checked_mul(plan.threads, plan.per_thread_floats, "conv2d"), plan.partial_floats, "conv2d");
  floats = checked_add(floats, checked_mul(g.patch_size(), 2, "conv2d"), "conv2d");
  return checked_mul(floats, static_cast<index_t>(sizeof(float)), "conv2d");
}

bool implicit_backward_weight(const ConvGeometry& g, int threads, const float* dy, const float* x, float* dw) {
  // dw[o][k] = sum over samples and pixels q of dy[o][q] * padded_x[offset(k) + q], with dy laid out on the padded
  // width (Wp) so that both operands are contiguous along q; its wrapped columns are zero, so they add nothing.
  const GemmKernel& gemm = gemm_kernel();
  const WeightPlan plan = plan_weight(g, threads);
  const PaddedInput& pad = plan.pad;
  const index_t patch = g.patch_size(), cin_g = g.in_channels_per_group(), cout_g = g.out_channels_per_group();
  const index_t length = plan.row_length;
  std::vector<index_t> offsets(static_cast<std::size_t>(patch));
  for (index_t k = 0; k < patch; ++k) {
    const index_t c = k / g.kernel_area(), ki = (k % g.kernel_area()) / g.kernel_width, kj = k % g.kernel_width;
    offsets[k] = (c * pad.height + ki * g.dilation_h) * pad.width + kj * g.dilation_w;
  }
  FloatBuffer workspace = allocate_floats(checked_mul(plan.threads, plan.per_thread_floats, "conv2d"));
  FloatBuffer partials = allocate_floats(plan.partial_floats);
  const index_t weight_floats = g.out_channels * patch;
  std::vector<char> finite(static_cast<std::size_t>(plan.items), 1);

  parallel_for(plan.items, plan.threads, [&](index_t item, int thread) {
    const index_t row_chunk = item % plan.row_chunks, chunk_group = item / plan.row_chunks;
    const index_t group = chunk_group % g.groups, chunk = chunk_group / g.groups;
    auto tap = [&](index_t part) {
      return std::min(patch, ceil_div(patch, kTapAlignment) * part / plan.row_chunks * kTapAlignment);
    };
    const index_t r0 = tap(row_chunk), r1 = tap(row_chunk + 1);
    if (r0 == r1) return;
    const index_t n0 = g.batch * chunk / plan.sample_chunks, n1 = g.batch * (chunk + 1) / plan.sample_chunks;
    float* target = (plan.sample_chunks > 1 ? partials.get() + chunk * weight_floats : dw) + group * cout_g * patch + r0;
    // along channels: [group][tap][channel] partials, always (see plan_weight)
    float* target_by_tap = partials.get() + chunk * weight_floats + (group * patch + r0) * cout_g;
    float* inputs = workspace.get() + thread * plan.per_thread_floats;
    float* rows = inputs + plan.block_samples * pad.floats;
    const float* a[kMaxImplicitSegments];
    const float* b[kMaxImplicitSegments];
    if (plan.vectors == Vectors::along_channels) {
      const index_t nr = gemm.nr, panel_floats = g.out_plane() * nr;
      for (index_t first = n0; first < n1; first += plan.block_samples) {
        const index_t count = std::min(plan.block_samples, n1 - first);
        for (index_t s = 0; s < count; ++s) {
          const index_t n = first + s;
          float* padded = inputs + s * pad.floats;
          float* transposed = rows + s * plan.channel_panels * panel_floats;
          (void)pad_unit(g, pad, x + (n * g.in_channels + group * cin_g) * g.in_plane(), padded, false);
          transpose_channels(dy + (n * g.out_channels + group * cout_g) * g.out_plane(), cout_g, g.out_plane(), nr,
                             transposed);
          b[s] = padded;
        }
        for (index_t panel = 0; panel < plan.channel_panels; ++panel) {
          for (index_t s = 0; s < count; ++s) a[s] = rows + (s * plan.channel_panels + panel) * panel_floats;
          const index_t channels = std::min(nr, cout_g - panel * nr);
          for (index_t k0 = r0; k0 < r1; k0 += gemm.mr) {
            gemm.multiply_taps(std::min<index_t>(gemm.mr, r1 - k0), channels, count, b, a, offsets.data() + k0,
                               g.out_height, g.out_width, pad.width, target_by_tap + (k0 - r0) * cout_g + panel * nr,
                               cout_g, 1, first > n0);
          }
        }
      }
      return;
    }
    for (index_t first = n0; first < n1; first += plan.block_samples) {
      const index_t count = std::min(plan.block_samples, n1 - first);
      for (index_t s = 0; s < count; ++s) {
        const index_t n = first + s;
        float* padded = inputs + s * pad.floats;
        const float* grads = dy + (n * g.out_channels + group * cout_g) * g.out_plane();
        // in place there are no wrapped columns, so non-finite inputs meet only the products they belong to
        if (!pad_unit(g, pad, x + (n * g.in_channels + group * cin_g) * g.in_plane(), padded, !plan.in_place))
          finite[item] = 0;
        if (!plan.in_place) {
          float* spread = rows + s * cout_g * length;
          spread_rows(g, pad, grads, cout_g, length, spread);
          grads = spread;
        }
        a[s] = grads;
        b[s] = padded;
      }
      const DotRows pieces = plan.in_place ? DotRows{g.out_height, g.out_width, g.out_width, pad.width}
                                           : DotRows{1, length, 0, 0};
      gemm.multiply_abt_implicit(cout_g, r1 - r0, count, pieces, a, plan.in_place ? g.out_plane() : length, b,
                                 offsets.data() + r0, target, patch, first > n0);
    }
  });
  // The wrapped columns multiply real inputs by zero: exact for finite inputs, but 0 * inf is NaN where PyTorch
  // (which never forms those products) gives a number. Non-finite inputs are redone by the explicit path.
  if (std::find(finite.begin(), finite.end(), 0) != finite.end()) return false;

  if (plan.vectors == Vectors::along_channels) {
    const float* by_tap = partials.get();
    if (plan.sample_chunks > 1) {
      float* sum = partials.get() + plan.sample_chunks * weight_floats;
      sum_partial_gradients(partials.get(), plan.sample_chunks, weight_floats, threads, sum);
      by_tap = sum;
    }
    parallel_for(g.out_channels, threads, [&](index_t channel, int) {  // [group][tap][channel] -> [channel][tap]
      const index_t group = channel / cout_g, c = channel % cout_g;
      const float* src = by_tap + group * patch * cout_g + c;
      float* dst = dw + channel * patch;
      for (index_t k = 0; k < patch; ++k) dst[k] = src[k * cout_g];
    });
    return true;
  }
  if (plan.sample_chunks > 1) sum_partial_gradients(partials.get(), plan.sample_chunks, weight_floats, threads, dw);
  return true;
}

void sum_partial_gradients(const float* partials, index_t parts, index_t floats, int threads, float* out) {
  constexpr index_t kSpan = 4096;
  parallel_for(ceil_div(floats, kSpan), threads, [&](index_t item, int) {
    const index_t e0 = item * kSpan, e1 = std::min(floats, e0 + kSpan);
    std::copy(partials + e0, partials + e1, out + e0);
    for (index_t part = 1; part < parts; ++part) {
      const float* partial = partials + part * floats;
      for (index_t e = e0; e < e1; ++e) out[e] += partial[e];
    }
  });
}

}  // namespace fastcnn

// The implicit GEMM's data layouts; see implicit_layout.h.
#include "implicit_layout.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace fastcnn {
namespace {

// A plain loop, not memcpy: rows here are 8-60 floats, where the call costs more than the copy (memmove was 17% of
// a 32x32 weight gradient).
inline void copy_row(float* dst, const float* src, index_t count) {
  for (index_t i = 0; i < count; ++i) dst[i] = src[i];
}

}  // namespace

PaddedInput padded_input(const ConvGeometry& g, index_t nr) {
  PaddedInput pad{};
  pad.height = g.in_height + g.pad_top + g.pad_bottom;
  pad.width = g.in_width + g.pad_left + g.pad_right;
  pad.columns = (g.out_height - 1) * pad.width + g.out_width;
  // The forward's furthest read is offset(K - 1) + columns rounded up to NR: the planes' end plus less than NR.
  // The weight gradient reads H_out * Wp columns rounded up to a vector: less than Wp + NR past the end.
  pad.floats = checked_add(checked_mul(g.in_channels_per_group(), checked_mul(pad.height, pad.width, "conv2d"), "conv2d"),
                           nr + pad.width, "conv2d");
  return pad;
}

bool all_finite(const float* values, index_t count) {
  std::uint32_t special = 0;
  for (index_t i = 0; i < count; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, values + i, sizeof(bits));
    special |= (bits & 0x7f800000u) == 0x7f800000u;
  }
  return special == 0;
}

bool all_finite(const float* values, index_t count, int threads) {
  constexpr index_t kSpan = 65536;  // floats per work item
  const index_t spans = ceil_div(count, kSpan);
  if (threads <= 1 || spans <= 1) return all_finite(values, count);
  std::vector<char> finite(static_cast<std::size_t>(spans));
  parallel_for(spans, threads, [&](index_t span, int) {
    const index_t begin = span * kSpan;
    finite[span] = all_finite(values + begin, std::min(kSpan, count - begin));
  });
  return std::all_of(finite.begin(), finite.end(), [](char ok) { return ok != 0; });
}

bool pad_unit(const ConvGeometry& g, const PaddedInput& pad, const float* src, float* dst, bool check_finite) {
  const index_t cin_g = g.in_channels_per_group();
  std::fill(dst, dst + pad.floats, 0.0f);
  bool finite = true;
  for (index_t c = 0; c < cin_g; ++c) {
    const float* plane = src + c * g.in_plane();
    float* out = dst + c * pad.height * pad.width + g.pad_top * pad.width + g.pad_left;
    for (index_t h = 0; h < g.in_height; ++h) copy_row(out + h * pad.width, plane + h * g.in_width, g.in_width);
    if (check_finite) finite = finite && all_finite(plane, g.in_plane());
  }
  return finite;
}

void spread_rows(const ConvGeometry& g, const PaddedInput& pad, const float* dy_planes, index_t channels,
                 index_t length, float* dst) {
  for (index_t o = 0; o < channels; ++o) {
    const float* src = dy_planes + o * g.out_plane();
    float* row = dst + o * length;
    for (index_t oh = 0; oh < g.out_height; ++oh, row += pad.width) {  // each value written once
      copy_row(row, src + oh * g.out_width, g.out_width);
      for (index_t w = g.out_width; w < pad.width; ++w) row[w] = 0.0f;
    }
    std::fill(row, dst + (o + 1) * length, 0.0f);
  }
}

void transpose_channels(const float* dy_planes, index_t channels, index_t plane, index_t nr, float* dst) {
  const index_t panels = ceil_div(channels, nr);
  for (index_t panel = 0; panel < panels; ++panel) {
    float* out = dst + panel * plane * nr;
    for (index_t j = 0; j < nr; ++j) {
      const index_t c = panel * nr + j;
      if (c < channels) {
        const float* src = dy_planes + c * plane;
        for (index_t p = 0; p < plane; ++p) out[p * nr + j] = src[p];
      } else {
        for (index_t p = 0; p < plane; ++p) out[p * nr + j] = 0.0f;
      }
    }
  }
}

void pack_whole(index_t M, index_t K, const float* src, index_t mr, float* packed) {
  const index_t padded_m = ceil_div(M, mr) * mr;
  for (index_t i0 = 0; i0 < padded_m; i0 += mr) {
    float* panel = packed + i0 * K;
    for (index_t i = 0; i < mr; ++i) {
      const index_t row = i0 + i;
      for (index_t k = 0; k < K; ++k) panel[k * mr + i] = row < M ? src[row * K + k] : 0.0f;
    }
  }
}

void pack_transposed_whole(index_t M, index_t K, const float* src, index_t nr, float* packed) {
  for (index_t j0 = 0; j0 < M; j0 += nr) {
    float* panel = packed + j0 * K;
    for (index_t k = 0; k < K; ++k)
      for (index_t j = 0; j < nr; ++j) panel[k * nr + j] = j0 + j < M ? src[(j0 + j) * K + k] : 0.0f;
  }
}

void store_pixels(const ConvGeometry& g, const PaddedInput& pad, const float* tile, index_t ld, index_t q0,
                  index_t q1, index_t rows, const float* bias, float* y_planes) {
  // Channel by channel, so that both the tile and y are read and written as streams: going row by row across
  // the channels instead touched planes a multiple of 4 KiB apart, which share L1 sets (measured 40% of a layer).
  const index_t plane = g.out_plane();
  for (index_t r = 0; r < rows; ++r) {
    const float b = bias != nullptr ? bias[r] : 0.0f;
    for (index_t oh = q0 / pad.width; oh * pad.width < q1; ++oh) {
      const index_t begin = std::max(q0, oh * pad.width), end = std::min(q1, oh * pad.width + g.out_width);
      if (begin >= end) continue;
      const float* src = tile + r * ld + (begin - q0);
      float* dst = y_planes + r * plane + oh * g.out_width + (begin - oh * pad.width);
      if (bias != nullptr) {
        for (index_t t = 0; t < end - begin; ++t) dst[t] = src[t] + b;
      } else {
        for (index_t t = 0; t < end - begin; ++t) dst[t] = src[t];
      }
    }
  }
}

}  // namespace fastcnn

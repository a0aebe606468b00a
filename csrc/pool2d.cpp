// Pooling works plane by plane: one (sample, channel) plane is a work item, so threads write disjoint planes and
// every sum runs in the same order whatever the thread count.
#include "pool2d.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

namespace fastcnn {
namespace {

// PyTorch's pooling_output_shape: with ceil_mode the last window must start inside the input or left padding.
index_t pooled_size(index_t size, index_t kernel, index_t stride, index_t pad, bool ceil_mode) {
  const index_t numerator = size + 2 * pad - (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  index_t out = (numerator >= 0 ? numerator / stride : -((-numerator + stride - 1) / stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= size + pad) --out;
  return out;
}

// A window's clipped extent along one axis, with the size PyTorch divides by when counting padding.
struct Window {
  index_t begin, end, padded_size;
};

Window window(index_t o, index_t stride, index_t pad, index_t kernel, index_t size) {
  index_t begin = o * stride - pad;
  index_t end = std::min(begin + kernel, size + pad);
  const index_t padded_size = end - begin;
  begin = std::max<index_t>(begin, 0);
  end = std::min(end, size);
  return Window{begin, end, padded_size};
}

// What PyTorch divides an average by: the window including padding (but not a ceil_mode overhang past it), or
// only the real pixels when count_include_pad is false.
inline index_t average_divisor(const Window& wh, const Window& ww, bool count_include_pad) {
  return count_include_pad ? wh.padded_size * ww.padded_size : (wh.end - wh.begin) * (ww.end - ww.begin);
}

}  // namespace

PoolGeometry make_pool_geometry(PoolGeometry g, const char* op) {
  const std::string name(op);
  if (g.planes < 1 || g.in_height < 1 || g.in_width < 1)
    throw std::invalid_argument(name + ": input must have positive sizes");
  if (g.kernel_height < 1 || g.kernel_width < 1) throw std::invalid_argument(name + ": kernel_size must be >= 1");
  if (g.stride_h < 1 || g.stride_w < 1) throw std::invalid_argument(name + ": stride must be >= 1");
  if (g.pad_h < 0 || g.pad_w < 0 || 2 * g.pad_h > g.kernel_height || 2 * g.pad_w > g.kernel_width)
    throw std::invalid_argument(name + ": padding must be between 0 and half of kernel_size");
  checked_add(g.in_height, checked_mul(2, g.pad_h, op), op);
  checked_add(g.in_width, checked_mul(2, g.pad_w, op), op);
  g.out_height = pooled_size(g.in_height, g.kernel_height, g.stride_h, g.pad_h, g.ceil_mode);
  g.out_width = pooled_size(g.in_width, g.kernel_width, g.stride_w, g.pad_w, g.ceil_mode);
  if (g.out_height < 1 || g.out_width < 1)
    throw std::invalid_argument(name + ": the pooling window is larger than the padded input");
  checked_mul(g.planes, checked_mul(g.in_height, g.in_width, op), op);
  checked_mul(g.planes, checked_mul(g.out_height, g.out_width, op), op);
  return g;
}

namespace {

// One output of max pooling, for any geometry. As PyTorch: start from -inf at the first real pixel; take a
// value if it is larger or NaN, so NaN propagates (the last NaN's index wins) and ties keep the first maximum.
inline void max_pool_one(const PoolGeometry& g, const float* plane, index_t oh, index_t ow, float* out,
                         std::int64_t* out_index) {
  const Window wh = window(oh, g.stride_h, g.pad_h, g.kernel_height, g.in_height);
  const Window ww = window(ow, g.stride_w, g.pad_w, g.kernel_width, g.in_width);
  index_t best = wh.begin * g.in_width + ww.begin;
  float best_value = -std::numeric_limits<float>::infinity();
  for (index_t ih = wh.begin; ih < wh.end; ++ih) {
    const float* row = plane + ih * g.in_width;
    for (index_t iw = ww.begin; iw < ww.end; ++iw) {
      const float v = row[iw];
      const bool take = (v > best_value) | (v != v);
      best_value = take ? v : best_value;
      best = take ? ih * g.in_width + iw : best;
    }
  }
  out[oh * g.out_width + ow] = best_value;
  if (out_index) out_index[oh * g.out_width + ow] = best;
}

typedef float float4 __attribute__((vector_size(16)));
typedef std::int32_t int4 __attribute__((vector_size(16)));

// Four consecutive 2x2 windows (rows `top` and `bottom`, 8 floats each) as their pixels in PyTorch's order:
// lane i of pixels[k] is pixel k (top-left, top-right, bottom-left, bottom-right) of window i.
inline void load_windows(const float* top, const float* bottom, float4 pixels[4]) {
  float4 t0, t1, b0, b1;
  std::memcpy(&t0, top, 16);
  std::memcpy(&t1, top + 4, 16);
  std::memcpy(&b0, bottom, 16);
  std::memcpy(&b1, bottom + 4, 16);
  pixels[0] = __builtin_shufflevector(t0, t1, 0, 2, 4, 6);
  pixels[1] = __builtin_shufflevector(t0, t1, 1, 3, 5, 7);
  pixels[2] = __builtin_shufflevector(b0, b1, 0, 2, 4, 6);
  pixels[3] = __builtin_shufflevector(b0, b1, 1, 3, 5, 7);
}

// dst[0..8) = a0 b0 a1 b1 a2 b2 a3 b3, as two 4-float halves (an 8-float vector went through the stack on SSE2).
inline void store_interleaved(float* dst, float4 a, float4 b) {
  const float4 low = __builtin_shufflevector(a, b, 0, 4, 1, 5), high = __builtin_shufflevector(a, b, 2, 6, 3, 7);
  std::memcpy(dst, &low, sizeof(low));
  std::memcpy(dst + 4, &high, sizeof(high));
}

// 2x2 stride-2 windows without padding whose outputs match the input's 2x2 blocks one to one (no ceil_mode
// overhang): every pixel lies in at most one window, so gradients can be written instead of accumulated into a
// zeroed plane.
bool tiles_by_2x2(const PoolGeometry& g) {
  return g.kernel_height == 2 && g.kernel_width == 2 && g.stride_h == 2 && g.stride_w == 2 && g.pad_h == 0 &&
         g.pad_w == 0 && g.out_height == g.in_height / 2 && g.out_width == g.in_width / 2;
}

// Zero the pixels no 2x2 window covers: the last column and row of odd-sized planes.
void zero_uncovered(const PoolGeometry& g, float* plane) {
  if (g.in_width % 2 != 0)
    for (index_t ih = 0; ih < 2 * g.out_height; ++ih) plane[ih * g.in_width + g.in_width - 1] = 0.0f;
  if (g.in_height % 2 != 0) std::fill(plane + (g.in_height - 1) * g.in_width, plane + g.in_plane(), 0.0f);
}

// 2x2 windows with stride 2, four outputs at a time: the commonest pooling in CNNs. The window's four pixels
// are compared in PyTorch's order with vector selects; the generic loop's data-dependent branches cost more
// than the arithmetic on real data.
inline index_t max_pool_2x2_row(const PoolGeometry& g, const float* plane, index_t oh, index_t full_width, float* out,
                                std::int64_t* out_index) {
  const float* top = plane + 2 * oh * g.in_width;
  const float* bottom = top + g.in_width;
  index_t ow = 0;
  for (; ow + 4 <= full_width; ow += 4) {
    float4 candidates[4];
    load_windows(top + 2 * ow, bottom + 2 * ow, candidates);
    float4 best = candidates[0];  // the first pixel is always taken: it beats -inf, or it is NaN, or it is -inf
    int4 which = int4{0, 0, 0, 0};
    for (int k = 1; k < 4; ++k) {
      const int4 take = (candidates[k] > best) | (candidates[k] != candidates[k]);
      best = take ? candidates[k] : best;
      which = take ? int4{k, k, k, k} : which;
    }
    std::memcpy(out + oh * g.out_width + ow, &best, 16);
    if (out_index) {  // pixel (2 oh + k / 2, 2 (ow + lane) + k % 2), in int32 (planes here are smaller than 2^31)
      const std::int32_t width = static_cast<std::int32_t>(g.in_width);
      const int4 origin = static_cast<std::int32_t>(2 * oh * g.in_width + 2 * ow) + int4{0, 2, 4, 6};
      const int4 index = origin + (which >> 1) * width + (which & 1);
      std::int64_t* dst = out_index + oh * g.out_width + ow;
      for (int lane = 0; lane < 4; ++lane) dst[lane] = index[lane];
    }
  }
  return ow;
}

}  // namespace

void max_pool2d_forward(const PoolGeometry& g, int threads, const float* x, float* y, std::int64_t* indices) {
  const bool two_by_two = g.kernel_height == 2 && g.kernel_width == 2 && g.stride_h == 2 && g.stride_w == 2 &&
                          g.pad_h == 0 && g.pad_w == 0 && g.in_plane() <= INT32_MAX;
  // outputs whose window lies wholly inside the input (ceil_mode can add a last, overhanging one)
  const index_t full_height = std::min(g.out_height, g.in_height / 2);
  const index_t full_width = std::min(g.out_width, g.in_width / 2);
  parallel_for(g.planes, threads, [&](index_t plane_index, int) {
    const float* plane = x + plane_index * g.in_plane();
    float* out = y + plane_index * g.out_plane();
    std::int64_t* out_index = indices ? indices + plane_index * g.out_plane() : nullptr;
    for (index_t oh = 0; oh < g.out_height; ++oh) {
      index_t ow = 0;
      if (two_by_two && oh < full_height) ow = max_pool_2x2_row(g, plane, oh, full_width, out, out_index);
      for (; ow < g.out_width; ++ow) max_pool_one(g, plane, oh, ow, out, out_index);
    }
  });
}

index_t max_pool2d_backward(index_t planes, index_t in_plane, index_t out_plane, int threads, const float* dy,
                            const std::int64_t* indices, float* dx) {
  // A plane is small enough to stay in cache between the fill and the scatter; writing window by window instead
  // (for 2x2 tilings) measured slower. Indices are checked as they are used: a separate pass over them first read
  // as much memory again as the scatter (int64 indices are twice the size of dy).
  const index_t count = checked_mul(planes, out_plane, "max_pool2d_backward");
  std::atomic<index_t> first_invalid{count};
  parallel_for(planes, threads, [&](index_t plane_index, int) {
    float* plane = dx + plane_index * in_plane;
    const float* grad = dy + plane_index * out_plane;
    const std::int64_t* where = indices + plane_index * out_plane;
    std::fill(plane, plane + in_plane, 0.0f);
    for (index_t o = 0; o < out_plane; ++o) {
      const std::int64_t target = where[o];
      if (target < 0 || target >= in_plane) {  // the smallest flat position over all planes is reported
        const index_t position = plane_index * out_plane + o;
        index_t seen = first_invalid.load();
        while (position < seen && !first_invalid.compare_exchange_weak(seen, position)) {
        }
        return;
      }
      plane[target] += grad[o];
    }
  });
  const index_t found = first_invalid.load();
  return found < count ? found : -1;
}

namespace {

// 2x2 stride-2 averages of whole windows, four outputs at a time, summed in the generic loop's order (row by row,
// left to right) and divided by 4, so both give the same bits.
index_t avg_pool_2x2_row(const PoolGeometry& g, const float* plane, index_t oh, index_t full_width, float* out) {
  const float* top = plane + 2 * oh * g.in_width;
  const float* bottom = top + g.in_width;
  index_t ow = 0;
  for (; ow + 4 <= full_width; ow += 4) {
    float4 pixel[4];
    load_windows(top + 2 * ow, bottom + 2 * ow, pixel);
    // from +0 as the general loop starts, so that a window of -0 averages to +0 there too
    const float4 sum = float4{} + pixel[0] + pixel[1] + pixel[2] + pixel[3];
    const float4 average = sum / 4.0f;
    std::memcpy(out + oh * g.out_width + ow, &average, 16);
  }
  return ow;
}

}  // namespace

void avg_pool2d_forward(const PoolGeometry& g, bool count_include_pad, int threads, const float* x, float* y) {
  const bool two_by_two = g.kernel_height == 2 && g.kernel_width == 2 && g.stride_h == 2 && g.stride_w == 2 &&
                          g.pad_h == 0 && g.pad_w == 0;
  const index_t full_height = std::min(g.out_height, g.in_height / 2);
  const index_t full_width = std::min(g.out_width, g.in_width / 2);
  parallel_for(g.planes, threads, [&](index_t plane_index, int) {
    const float* plane = x + plane_index * g.in_plane();
    float* out = y + plane_index * g.out_plane();
    for (index_t oh = 0; oh < g.out_height; ++oh) {
      const index_t first = two_by_two && oh < full_height ? avg_pool_2x2_row(g, plane, oh, full_width, out) : 0;
      const Window wh = window(oh, g.stride_h, g.pad_h, g.kernel_height, g.in_height);
      for (index_t ow = first; ow < g.out_width; ++ow) {
        const Window ww = window(ow, g.stride_w, g.pad_w, g.kernel_width, g.in_width);
        const index_t divisor = average_divisor(wh, ww, count_include_pad);
        float sum = 0.0f;
        for (index_t ih = wh.begin; ih < wh.end; ++ih)
          for (index_t iw = ww.begin; iw < ww.end; ++iw) sum += plane[ih * g.in_width + iw];
        out[oh * g.out_width + ow] = sum / static_cast<float>(divisor);
      }
    }
  });
}

void avg_pool2d_backward(const PoolGeometry& g, bool count_include_pad, int threads, const float* dy, float* dx) {
  if (tiles_by_2x2(g)) {  // each pixel gets its window's share (0 + share in the generic loop: the same bits)
    parallel_for(g.planes, threads, [&](index_t plane_index, int) {
      float* plane = dx + plane_index * g.in_plane();
      const float* grad = dy + plane_index * g.out_plane();
      for (index_t oh = 0; oh < g.out_height; ++oh) {
        float* top = plane + 2 * oh * g.in_width;
        float* bottom = top + g.in_width;
        const float* row = grad + oh * g.out_width;
        index_t ow = 0;
        for (; ow + 4 <= g.out_width; ow += 4) {
          float4 share;
          std::memcpy(&share, row + ow, 16);
          share = share / 4.0f + float4{};  // + 0, as the general loop adds into zeros: -0 becomes +0
          store_interleaved(top + 2 * ow, share, share);
          store_interleaved(bottom + 2 * ow, share, share);
        }
        for (; ow < g.out_width; ++ow) {
          const float share = row[ow] / 4.0f + 0.0f;
          top[2 * ow] = top[2 * ow + 1] = bottom[2 * ow] = bottom[2 * ow + 1] = share;
        }
      }
      zero_uncovered(g, plane);
    });
    return;
  }
  parallel_for(g.planes, threads, [&](index_t plane_index, int) {
    float* plane = dx + plane_index * g.in_plane();
    const float* grad = dy + plane_index * g.out_plane();
    std::fill(plane, plane + g.in_plane(), 0.0f);
    for (index_t oh = 0; oh < g.out_height; ++oh) {
      const Window wh = window(oh, g.stride_h, g.pad_h, g.kernel_height, g.in_height);
      for (index_t ow = 0; ow < g.out_width; ++ow) {
        const Window ww = window(ow, g.stride_w, g.pad_w, g.kernel_width, g.in_width);
        const index_t divisor = average_divisor(wh, ww, count_include_pad);
        const float share = grad[oh * g.out_width + ow] / static_cast<float>(divisor);
        for (index_t ih = wh.begin; ih < wh.end; ++ih)
          for (index_t iw = ww.begin; iw < ww.end; ++iw) plane[ih * g.in_width + iw] += share;
      }
    }
  });
}

}  // namespace fastcnn

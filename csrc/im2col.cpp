// im2col, col2im and the packed-layout writers; see im2col.h.
#include "im2col.h"

#include <algorithm>
#include <cstring>

namespace fastcnn {

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
        // plain loops, not memcpy: segments are one output row (often 10-30 floats), where a call costs more
        // than the copy (profiled: memmove was a third of LeNet's second convolution)
        for (index_t t = 0; t < lo; ++t) seg[t] = 0.0f;
        for (index_t t = lo; t < hi; ++t) seg[t] = src[iw0 + t];
        for (index_t t = hi; t < segment; ++t) seg[t] = 0.0f;
      } else {
        for (index_t t = 0; t < segment; ++t) {
          const index_t iw = iw0 + t * g.stride_w;
          seg[t] = (iw >= 0 && iw < g.in_width) ? src[iw] : 0.0f;
        }
      }
    }
  }
}

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

void copy_into_packed_b(const GemmKernel& gemm, const float* src, index_t ld, index_t rows, index_t cols,
                        float* packed, index_t K, index_t N, index_t row0, index_t column0) {
  const index_t nr = gemm.nr;
  for (index_t r = 0; r < rows; ++r) {
    const float* row = src + r * ld;
    for (index_t j = 0; j < cols;) {
      const index_t column = column0 + j;
      const index_t run = std::min(cols - j, nr - column % nr);  // up to the end of this panel
      float* dst = gemm.packed_b_at(packed, K, N, row0 + r, column);
      for (index_t t = 0; t < run; ++t) dst[t] = row[j + t];  // at most NR floats: a loop beats a memcpy call
      j += run;
    }
  }
}

void zero_packed_b_tail(const GemmKernel& gemm, float* packed, index_t K, index_t N) {
  const index_t nr = gemm.nr, used = N % nr;
  if (used == 0) return;
  for (index_t k = 0; k < K; ++k) {
    float* lane = gemm.packed_b_at(packed, K, N, k, N);
    std::fill(lane, lane + (nr - used), 0.0f);
  }
}

void copy_into_packed_a(const GemmKernel& gemm, const float* src, index_t ld, index_t M, index_t cols, float* packed,
                        index_t K, index_t k0) {
  const index_t mr = gemm.mr, kc = gemm.kc;
  const index_t padded_m = ceil_div(M, mr) * mr;
  for (index_t k = k0; k < k0 + cols;) {
    // one K block at a time: inside it, A(i, k) sits at panel(i) + (k - block start) * MR + i % MR
    const index_t block = k / kc, block_start = block * kc, block_size = std::min(kc, K - block_start);
    const index_t end = std::min(k0 + cols, block_start + block_size);
    float* base = packed + block_start * padded_m;
    // panel by panel, k by k: each step writes MR consecutive floats (the MR source rows stay in L1)
    for (index_t i0 = 0; i0 < padded_m; i0 += mr) {
      const index_t panel_rows = std::max<index_t>(0, std::min(mr, M - i0));
      float* dst = base + i0 * block_size + (k - block_start) * mr;
      const float* rows = src + i0 * ld + (k - k0);
      for (index_t t = 0; t < end - k; ++t, dst += mr) {
        for (index_t i = 0; i < panel_rows; ++i) dst[i] = rows[i * ld + t];
        for (index_t i = panel_rows; i < mr; ++i) dst[i] = 0.0f;
      }
    }
    k = end;
  }
}

namespace {

// Writes `count` values of one output row into consecutive destination floats: the input row `src` (nullptr
// when the row lies in the padding) sampled at iw0, iw0 + stride, ..., zero outside [0, width).
inline void sample_row(float* dst, const float* src, index_t iw0, index_t stride, index_t count, index_t width) {
  if (src == nullptr) {
    for (index_t t = 0; t < count; ++t) dst[t] = 0.0f;
    return;
  }
  if (stride == 1) {
    const index_t lo = std::clamp<index_t>(-iw0, 0, count);
    const index_t hi = std::clamp<index_t>(width - iw0, lo, count);
    for (index_t t = 0; t < lo; ++t) dst[t] = 0.0f;
    for (index_t t = lo; t < hi; ++t) dst[t] = src[iw0 + t];
    for (index_t t = hi; t < count; ++t) dst[t] = 0.0f;
    return;
  }
  for (index_t t = 0; t < count; ++t) {
    const index_t iw = iw0 + t * stride;
    dst[t] = (iw >= 0 && iw < width) ? src[iw] : 0.0f;
  }
}

}  // namespace

void im2col_packed(const GemmKernel& gemm, const ConvGeometry& g, const float* x, index_t group, index_t n0,
                   index_t samples, index_t p0, index_t cols, float* packed) {
  // The packed buffer is written in its memory order (K block, then panel, then k): every panel row is NR
  // consecutive floats, gathered from the few output-row segments that make up the panel's columns. Writing in
  // row order instead scattered short runs 16 KiB apart and was bound by cache misses.
  const index_t nr = gemm.nr, kc = gemm.kc, K = g.patch_size(), N = samples * cols;
  const index_t padded_n = ceil_div(N, nr) * nr, area = g.kernel_area();
  const index_t sample_stride = g.in_channels * g.in_plane();
  const float* first = x + (n0 * g.in_channels + group * g.in_channels_per_group()) * g.in_plane();

  struct Segment {
    const float* sample;  // the group's first input plane of this segment's sample
    index_t oh, iw0, count, offset;  // output row, its first input column (before kj), length, lane offset
  };
  Segment segments[256];  // a panel has at most NR (<= 256) columns, so at most NR segments

  for (index_t b0 = 0; b0 < K; b0 += kc) {
    const index_t block_size = std::min(kc, K - b0);
    for (index_t j0 = 0; j0 < padded_n; j0 += nr) {
      // The panel's columns as runs along output rows.
      index_t used = 0;
      for (index_t j = j0; j < std::min(j0 + nr, N);) {
        const index_t s = j / cols, p = p0 + j % cols;
        const index_t oh = p / g.out_width, ow = p % g.out_width;
        const index_t count = std::min({g.out_width - ow, cols - j % cols, j0 + nr - j});
        segments[used++] = Segment{first + s * sample_stride, oh, ow * g.stride_w - g.pad_left, count, j - j0};
        j += count;
      }
      float* dst = packed + b0 * padded_n + j0 * block_size;
      index_t channel = b0 / area, ki = (b0 % area) / g.kernel_width, kj = b0 % g.kernel_width;
      for (index_t k = 0; k < block_size; ++k, dst += nr) {
        index_t filled = 0;
        for (index_t i = 0; i < used; ++i) {
          const Segment& seg = segments[i];
          const index_t ih = seg.oh * g.stride_h - g.pad_top + ki * g.dilation_h;
          const float* src = (ih >= 0 && ih < g.in_height) ? seg.sample + channel * g.in_plane() + ih * g.in_width : nullptr;
          sample_row(dst + seg.offset, src, seg.iw0 + kj * g.dilation_w, g.stride_w, seg.count, g.in_width);
          filled = seg.offset + seg.count;
        }
        for (index_t t = filled; t < nr; ++t) dst[t] = 0.0f;  // columns past N
        if (++kj == g.kernel_width) {
          kj = 0;
          if (++ki == g.kernel_height) {
            ki = 0;
            ++channel;
          }
        }
      }
    }
  }
}

void transpose_panel_into_packed_b(const GemmKernel& gemm, const float* src, index_t ld, index_t panel_rows,
                                   index_t cols, float* packed, index_t K, index_t N, index_t r0, index_t k0) {
  const index_t nr = gemm.nr, kc = gemm.kc;
  for (index_t t = 0; t < cols;) {
    // inside one K block consecutive k are NR floats apart: find the block once, then step
    const index_t k = k0 + t, block_start = k / kc * kc;
    const index_t end = std::min(cols, block_start + std::min(kc, K - block_start) - k0);
    float* lane = gemm.packed_b_at(packed, K, N, k, r0);
    for (; t < end; ++t, lane += nr) {
      const float* column = src + t;
      for (index_t j = 0; j < panel_rows; ++j) lane[j] = column[j * ld];
      for (index_t j = panel_rows; j < nr; ++j) lane[j] = 0.0f;  // lanes past N are zero
    }
  }
}

void im2col_packed_transposed(const GemmKernel& gemm, const ConvGeometry& g, const float* planes, index_t row0,
                              index_t rows, index_t p0, index_t cols, float* packed, index_t K,
                              index_t k0) {
  // Gathered straight into the panels: for each output pixel, the NR rows of a panel are NR input pixels at
  // fixed offsets from the pixel's window corner, so a panel row is NR loads from a table of offsets (the
  // sample's planes stay in cache) and one run of NR stores. Pixels whose window touches the padding take the
  // bounds-checked path. (Building rows with im2col and transposing them cost twice as much on small planes.)
  const index_t nr = gemm.nr, kc = gemm.kc, area = g.kernel_area();
  index_t offset[256], dh[256], dw[256];  // per panel row: planes offset, and the tap's displacement
  for (index_t r0 = 0; r0 < rows; r0 += nr) {
    const index_t panel_rows = std::min(nr, rows - r0);
    for (index_t j = 0; j < panel_rows; ++j) {
      const index_t r = row0 + r0 + j, channel = r / area, ki = (r % area) / g.kernel_width, kj = r % g.kernel_width;
      dh[j] = ki * g.dilation_h - g.pad_top;
      dw[j] = kj * g.dilation_w - g.pad_left;
      offset[j] = channel * g.in_plane() + dh[j] * g.in_width + dw[j];
    }
    // the window's extent, to tell interior pixels from ones that touch the padding
    const index_t reach_h = (g.kernel_height - 1) * g.dilation_h, reach_w = (g.kernel_width - 1) * g.dilation_w;
    for (index_t t = 0; t < cols;) {
      const index_t k = k0 + t, block_start = k / kc * kc;
      const index_t end = std::min(cols, block_start + std::min(kc, K - block_start) - k0);
      float* lane = gemm.packed_b_at(packed, K, rows, k, r0);
      for (; t < end; ++t, lane += nr) {
        const index_t p = p0 + t, oh = p / g.out_width, ow = p % g.out_width;
        const index_t ih0 = oh * g.stride_h, iw0 = ow * g.stride_w;  // window corner, before the padding shift
        const bool interior = ih0 - g.pad_top >= 0 && ih0 - g.pad_top + reach_h < g.in_height &&
                              iw0 - g.pad_left >= 0 && iw0 - g.pad_left + reach_w < g.in_width;
        const float* corner = planes + ih0 * g.in_width + iw0;
        if (interior) {
          for (index_t j = 0; j < panel_rows; ++j) lane[j] = corner[offset[j]];
        } else {
          for (index_t j = 0; j < panel_rows; ++j) {
            const index_t ih = ih0 + dh[j], iw = iw0 + dw[j];
            lane[j] = (ih >= 0 && ih < g.in_height && iw >= 0 && iw < g.in_width) ? corner[offset[j]] : 0.0f;
          }
        }
        for (index_t j = panel_rows; j < nr; ++j) lane[j] = 0.0f;  // lanes past N are zero
      }
    }
  }
}

}  // namespace fastcnn

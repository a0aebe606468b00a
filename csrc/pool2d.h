// Max and average pooling over NCHW planes, forward and backward, with PyTorch's semantics (output size and
// ceil_mode rule, -inf padding for max, count_include_pad for average).
#pragma once

#include "runtime.h"

namespace fastcnn {

struct PoolGeometry {
  index_t planes;  // N * C: pooling treats every channel of every sample alike
  index_t in_height, in_width;
  index_t kernel_height, kernel_width;
  index_t stride_h, stride_w;
  index_t pad_h, pad_w;
  bool ceil_mode;
  index_t out_height, out_width;  // filled in by make_pool_geometry

  index_t in_plane() const { return in_height * in_width; }
  index_t out_plane() const { return out_height * out_width; }
};

// Checks the rules (positive sizes, padding at most half the kernel, a non-empty output, no overflow) and
// computes the output size; throws std::invalid_argument naming `op` and the rule.
PoolGeometry make_pool_geometry(PoolGeometry g, const char* op);

void max_pool2d_forward(const PoolGeometry& g, int threads,
                        const float* x,          // [planes, H, W]
                        float* y,                // [planes, H_out, W_out]
                        std::int64_t* indices);  // [planes, H_out, W_out] flat h * W + w, or nullptr

// Scatters dy into dx at the indices. Returns the position (flat, over all of `indices`) of the first index outside
// [0, in_plane), or -1 when all are valid; nothing is ever written outside dx, but with an invalid index dx is
// left incomplete (the caller throws it away).
index_t max_pool2d_backward(index_t planes, index_t in_plane, index_t out_plane, int threads,
                            const float* dy,               // [planes, out_plane]
                            const std::int64_t* indices,   // [planes, out_plane]
                            float* dx);                    // [planes, in_plane]

void avg_pool2d_forward(const PoolGeometry& g, bool count_include_pad, int threads,
                        const float* x,  // [planes, H, W]
                        float* y);       // [planes, H_out, W_out]

void avg_pool2d_backward(const PoolGeometry& g, bool count_include_pad, int threads,
                         const float* dy,  // [planes, H_out, W_out]
                         float* dx);       // [planes, H, W]

}  // namespace fastcnn

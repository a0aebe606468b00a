// Batch normalization over the channels of (N, C, S) data (S = H*W for BatchNorm2d, 1 for BatchNorm1d).
// Per-channel sums run in double, in a fixed order, one channel per work item: deterministic for any thread count.
#pragma once

#include "runtime.h"

namespace fastcnn {

struct BatchNormGeometry {
  index_t batch, channels, spatial;  // x is [batch, channels, spatial]
};

// mean[c] and the biased variance var[c] of each channel (two passes, in double).
void batch_norm_statistics(const BatchNormGeometry& g, int threads,
                           const float* x,  // [N, C, S]
                           double* mean,    // [C]
                           double* var);    // [C]

// y = x * scale[c] + shift[c]: normalisation and the affine map folded together, as PyTorch's CPU kernel does.
void batch_norm_apply(const BatchNormGeometry& g, int threads, const float* x, const float* scale, const float* shift,
                      float* y);

// Gradients given the statistics used in the forward pass. With batch statistics the mean and variance depend on
// x too (the full formula); with running statistics the map is affine.
void batch_norm_backward(const BatchNormGeometry& g, int threads, bool batch_statistics,
                         const float* dy,        // [N, C, S]
                         const float* x,         // [N, C, S]
                         const float* mean,      // [C]
                         const float* inv_std,   // [C]
                         const float* weight,    // [C] (ones when not affine)
                         float* dx,              // [N, C, S] or nullptr
                         float* dweight,         // [C]: sum of dy * x_hat
                         float* dbias);          // [C]: sum of dy

}  // namespace fastcnn

// Stride-1 convolution as an implicit GEMM over zero-padded input planes (no im2col); see conv2d_implicit.cpp.
// conv2d.cpp dispatches here when `implicit_conv_applies` says so.
#pragma once

#include "conv2d.h"

namespace fastcnn {

// Stride 1 in both directions, and few enough wasted columns (see conv2d_implicit.cpp).
bool implicit_conv_applies(const ConvGeometry& g);
index_t implicit_forward_workspace_bytes(const ConvGeometry& g, int threads);
// `weights_finite`: the caller has checked w, so products with padding rows are exact zeros and may be skipped.
void implicit_forward(const ConvGeometry& g, int threads, const float* x, const float* w, const float* b, float* y,
                      bool weights_finite = false);

// The input gradient of a stride-1 convolution is itself a stride-1 convolution of grad_output (the transposed
// geometry); it applies when that one does. Returns false, having written nothing, for non-finite weights.
bool implicit_backward_input_applies(const ConvGeometry& g);
index_t implicit_backward_input_workspace_bytes(const ConvGeometry& g, int threads);
bool implicit_backward_input(const ConvGeometry& g, int threads, const float* dy, const float* w, float* dx);

// The weight gradient applies where the forward does. Returns false when x holds NaN or infinities, with dw
// not yet valid: the explicit path must then run (see the .cpp).
index_t implicit_backward_weight_workspace_bytes(const ConvGeometry& g, int threads);
bool implicit_backward_weight(const ConvGeometry& g, int threads, const float* dy, const float* x, float* dw);

// out = the sum of `parts` partial weight gradients of `floats` each, added in part order (both weight-gradient
// paths sum the batch in chunks fixed by the shapes, so the result does not depend on the thread count).
void sum_partial_gradients(const float* partials, index_t parts, index_t floats, int threads, float* out);

}  // namespace fastcnn

// 3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3): 16 multiplications per 2x2 output tile
// and channel pair instead of 36; see conv2d_winograd.cpp. conv2d.cpp (forward, weight gradient) and
// conv2d_implicit.cpp (the input gradient, a convolution of grad_output) try it first where it applies.
#pragma once

#include "conv2d.h"

namespace fastcnn {

// 3x3, stride 1, no dilation, one group, and enough channels both ways for the transforms to pay.
bool winograd_applies(const ConvGeometry& g);
index_t winograd_forward_workspace_bytes(const ConvGeometry& g, int threads);
// Returns false when x or w holds an infinity or NaN (having written nothing: the transforms mix a tile's inputs,
// so one non-finite input would reach outputs whose windows do not contain it), or when finite values overflowed
// inside a transform (y then holds that attempt): either way the direct paths must then run.
bool winograd_forward(const ConvGeometry& g, int threads, const float* x, const float* w, const float* b, float* y);

// The weight gradient the same way (with AVX-512, where the output is at most 2 * KC pixels wide); returns false,
// as the forward, for non-finite values in x or dy or an overflow inside a transform.
bool winograd_backward_weight_applies(const ConvGeometry& g);
index_t winograd_backward_weight_workspace_bytes(const ConvGeometry& g, int threads);
bool winograd_backward_weight(const ConvGeometry& g, int threads, const float* dy, const float* x, float* dw);

}  // namespace fastcnn

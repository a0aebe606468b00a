// 2-D convolution (cross-correlation, as PyTorch's conv2d) in NCHW / OIHW layout: forward and both gradients.
#pragma once

#include "runtime.h"

namespace fastcnn {

struct ConvGeometry {
  index_t batch, in_channels, in_height, in_width;
  index_t out_channels, kernel_height, kernel_width;
  index_t stride_h, stride_w;
  index_t pad_top, pad_bottom, pad_left, pad_right;  // 'same' padding may be asymmetric
  index_t dilation_h, dilation_w;
  index_t groups;
  index_t out_height, out_width;  // filled in by make_conv_geometry

  index_t in_channels_per_group() const { return in_channels / groups; }
  index_t out_channels_per_group() const { return out_channels / groups; }
  index_t kernel_area() const { return kernel_height * kernel_width; }
  index_t patch_size() const { return in_channels_per_group() * kernel_area(); }  // rows of im2col
  index_t in_plane() const { return in_height * in_width; }
  index_t out_plane() const { return out_height * out_width; }
  bool is_pointwise() const;  // 1x1, stride 1, no padding: im2col is the input itself
};

// Checks every field (positive sizes, divisibility, kernel fits the padded input, no overflow) and computes the
// output size; throws std::invalid_argument naming the rule that failed.
ConvGeometry make_conv_geometry(ConvGeometry g);

// Bytes of workspace each operator needs at `threads` threads (for the memory-limit check before allocating).
index_t conv2d_forward_workspace_bytes(const ConvGeometry& g, int threads);
index_t conv2d_backward_input_workspace_bytes(const ConvGeometry& g, int threads);
index_t conv2d_backward_weight_workspace_bytes(const ConvGeometry& g, int threads);

// Every operator takes the thread count it was planned (and memory-checked) for.
void conv2d_forward(const ConvGeometry& g, int threads,
                    const float* x,  // [N, C_in, H, W]
                    const float* w,  // [C_out, C_in/groups, kH, kW]
                    const float* b,  // [C_out] or nullptr
                    float* y);       // [N, C_out, H_out, W_out]

void conv2d_backward_input(const ConvGeometry& g, int threads,
                           const float* dy,  // [N, C_out, H_out, W_out]
                           const float* w,   // [C_out, C_in/groups, kH, kW]
                           float* dx);       // [N, C_in, H, W]

void conv2d_backward_weight(const ConvGeometry& g, int threads,
                            const float* dy,  // [N, C_out, H_out, W_out]
                            const float* x,   // [N, C_in, H, W]
                            float* dw);       // [C_out, C_in/groups, kH, kW]

void conv2d_backward_bias(const ConvGeometry& g, int threads,
                          const float* dy,  // [N, C_out, H_out, W_out]
                          float* db);       // [C_out]

}  // namespace fastcnn

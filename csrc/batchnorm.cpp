#include "batchnorm.h"

#include <cmath>

namespace fastcnn {

void batch_norm_statistics(const BatchNormGeometry& g, int threads, const float* x, double* mean, double* var) {
  const index_t count = g.batch * g.spatial;
  parallel_for(g.channels, threads, [&](index_t c, int) {
    double sum = 0.0;
    for (index_t n = 0; n < g.batch; ++n) {
      const float* row = x + (n * g.channels + c) * g.spatial;
      for (index_t s = 0; s < g.spatial; ++s) sum += row[s];
    }
    const double m = sum / static_cast<double>(count);
    double squares = 0.0;  // second pass around the mean: no cancellation when |mean| >> std
    for (index_t n = 0; n < g.batch; ++n) {
      const float* row = x + (n * g.channels + c) * g.spatial;
      for (index_t s = 0; s < g.spatial; ++s) {
        const double d = row[s] - m;
        squares += d * d;
      }
    }
    mean[c] = m;
    var[c] = squares / static_cast<double>(count);
  });
}

void batch_norm_apply(const BatchNormGeometry& g, int threads, const float* x, const float* scale, const float* shift,
                      float* y) {
  parallel_for(g.batch * g.channels, threads, [&](index_t row_index, int) {
    const index_t c = row_index % g.channels;
    const float a = scale[c], b = shift[c];
    const float* in = x + row_index * g.spatial;
    float* out = y + row_index * g.spatial;
    for (index_t s = 0; s < g.spatial; ++s) out[s] = in[s] * a + b;
  });
}

void batch_norm_backward(const BatchNormGeometry& g, int threads, bool batch_statistics, const float* dy,
                         const float* x, const float* mean, const float* inv_std, const float* weight, float* dx,
                         float* dweight, float* dbias) {
  const index_t count = g.batch * g.spatial;
  parallel_for(g.channels, threads, [&](index_t c, int) {
    const float m = mean[c], r = inv_std[c];
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for (index_t n = 0; n < g.batch; ++n) {
      const index_t offset = (n * g.channels + c) * g.spatial;
      for (index_t s = 0; s < g.spatial; ++s) {
        sum_dy += dy[offset + s];
        sum_dy_xhat += static_cast<double>(dy[offset + s]) * ((x[offset + s] - m) * r);
      }
    }
    dweight[c] = static_cast<float>(sum_dy_xhat);
    dbias[c] = static_cast<float>(sum_dy);
    if (dx == nullptr) return;
    const float k = weight[c] * r;
    const float mean_dy = batch_statistics ? static_cast<float>(sum_dy / count) : 0.0f;
    const float mean_dy_xhat = batch_statistics ? static_cast<float>(sum_dy_xhat / count) : 0.0f;
    for (index_t n = 0; n < g.batch; ++n) {
      const index_t offset = (n * g.channels + c) * g.spatial;
      for (index_t s = 0; s < g.spatial; ++s) {
        const float x_hat = (x[offset + s] - m) * r;
        dx[offset + s] = k * (dy[offset + s] - mean_dy - x_hat * mean_dy_xhat);
      }
    }
  });
}

}  // namespace fastcnn

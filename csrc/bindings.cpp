// The only file that includes pybind11. Each binding checks shapes again (so that even a direct call into the
// private module cannot crash the process), checks the memory budget, allocates outputs while holding the GIL,
// then releases the GIL around the kernel so other Python threads keep running.
//
// The public, documented argument checking happens in python/fastcnn/_args.py; these checks are the last line.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "activation.h"
#include "batchnorm.h"
#include "conv2d.h"
#include "gemm.h"
#include "matmul.h"
#include "pool2d.h"
#include "runtime.h"

namespace py = pybind11;
using fastcnn::index_t;

namespace {

// No forcecast: the Python layer converts to contiguous float32 first; anything else is converted safely or
// refused by pybind11 with a TypeError.
using FloatArray = py::array_t<float, py::array::c_style>;
using IndexArray = py::array_t<std::int64_t, py::array::c_style>;
using Pair = std::pair<index_t, index_t>;

bool g_debug_nan_fill = false;  // tests turn this on so that an element a kernel forgot to write shows as NaN
bool g_debug_all_threads = false;  // tests turn this on so that even tiny calls run on every thread

// Threads worth waking for `work` units (multiply-adds, or elements for memory-bound ops) when each should get at
// least `grain` of them: a small call (batch-1 inference) runs on the caller's thread, where waking the team
// would cost more than the work. Results do not depend on the thread count, so this changes only the speed.
int threads_for(index_t work, index_t grain) {
  const int threads = fastcnn::num_threads();
  if (g_debug_all_threads) return threads;
  return static_cast<int>(std::clamp<index_t>(work / grain, 1, threads));
}
constexpr index_t kFlopGrain = 1 << 20;       // multiply-adds: about 10 microseconds of one core
constexpr index_t kElementGrain = 1 << 16;    // elements of memory-bound ops (pooling, activations, BatchNorm)

// Multiply-adds of one convolution pass (the forward and each gradient do as many), saturating instead of
// overflowing: only compared with a grain.
index_t conv_multiply_adds(const fastcnn::ConvGeometry& g) {
  const double count = static_cast<double>(g.batch) * static_cast<double>(g.out_channels) *
                       static_cast<double>(g.out_plane()) * static_cast<double>(g.patch_size());
  return count > 4e18 ? static_cast<index_t>(4e18) : static_cast<index_t>(count);
}

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

void require_ndim(const py::array& a, int ndim, const char* op, const char* name) {
  if (a.ndim() != ndim)
    throw std::invalid_argument(std::string(op) + ": expected " + name + " with " + std::to_string(ndim) +
                                " dimensions; got shape " + shape_of(a));
}

// An uninitialised float32 array whose data starts on a 64-byte boundary, so that the kernels' vector stores never
// straddle two cache lines (NumPy's own allocation is only 16-byte aligned: a 3-channel convolution ran 20%
// slower on it) and may bypass the caches. It is a view of a slightly larger NumPy array, which owns the memory.
FloatArray aligned_output(const std::vector<py::ssize_t>& shape) {
  constexpr index_t kAlignFloats = 64 / sizeof(float);
  index_t count = 1;
  for (py::ssize_t d : shape) count = fastcnn::checked_mul(count, d, "size");
  FloatArray buffer(fastcnn::checked_add(count, kAlignFloats, "size"));
  const auto misalignment = reinterpret_cast<std::uintptr_t>(buffer.data()) % 64;
  float* data = buffer.mutable_data() + (misalignment == 0 ? 0 : (64 - misalignment) / sizeof(float));
  return FloatArray(shape, data, buffer);
}

FloatArray new_output(std::initializer_list<index_t> shape) {
  FloatArray out = aligned_output(std::vector<py::ssize_t>(shape.begin(), shape.end()));
  if (g_debug_nan_fill) std::fill(out.mutable_data(), out.mutable_data() + out.size(), std::numeric_limits<float>::quiet_NaN());
  return out;
}

// An uninitialised float32 array of a's shape (elementwise kernels write every element).
py::array_t<float> empty_like(const py::array& a) {
  return aligned_output(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
}

index_t float_bytes(index_t a, index_t b, index_t c, index_t d) {
  using fastcnn::checked_mul;
  return checked_mul(checked_mul(checked_mul(a, b, "size"), checked_mul(c, d, "size"), "size"), 4, "size");
}

fastcnn::ConvGeometry conv_geometry(const FloatArray& x, const FloatArray& w, Pair stride,
                                    std::tuple<index_t, index_t, index_t, index_t> pads, Pair dilation,
                                    index_t groups) {
  require_ndim(x, 4, "conv2d", "input");
  require_ndim(w, 4, "conv2d", "weight");
  if (groups < 1 || w.shape(1) * groups != x.shape(1))
    throw std::invalid_argument("conv2d: input " + shape_of(x) + " has the wrong number of channels for weight " +
                                shape_of(w) + " and groups=" + std::to_string(groups));
  fastcnn::ConvGeometry g{};
  g.batch = x.shape(0);
  g.in_channels = x.shape(1);
  g.in_height = x.shape(2);
  g.in_width = x.shape(3);
  g.out_channels = w.shape(0);
  g.kernel_height = w.shape(2);
  g.kernel_width = w.shape(3);
  g.stride_h = stride.first;
  g.stride_w = stride.second;
  std::tie(g.pad_top, g.pad_bottom, g.pad_left, g.pad_right) = pads;
  g.dilation_h = dilation.first;
  g.dilation_w = dilation.second;
  g.groups = groups;
  return fastcnn::make_conv_geometry(g);
}

FloatArray conv2d_forward(const FloatArray& x, const FloatArray& w, std::optional<FloatArray> bias, Pair stride,
                          std::tuple<index_t, index_t, index_t, index_t> pads, Pair dilation, index_t groups) {
  const fastcnn::ConvGeometry g = conv_geometry(x, w, stride, pads, dilation, groups);
  if (bias && (bias->ndim() != 1 || bias->shape(0) != g.out_channels))
    throw std::invalid_argument("conv2d: expected bias of shape (" + std::to_string(g.out_channels) + ",); got " +
                                shape_of(*bias));
  const int threads = threads_for(conv_multiply_adds(g), kFlopGrain);
  fastcnn::check_memory("conv2d", fastcnn::checked_add(float_bytes(g.batch, g.out_channels, g.out_height, g.out_width),
                                                       fastcnn::conv2d_forward_workspace_bytes(g, threads), "conv2d"));
  FloatArray y = new_output({g.batch, g.out_channels, g.out_height, g.out_width});
  const float* xp = x.data();
  const float* wp = w.data();
  const float* bp = bias ? bias->data() : nullptr;
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    fastcnn::conv2d_forward(g, threads, xp, wp, bp, yp);
  }
  return y;
}

py::tuple conv2d_backward(const FloatArray& dy, const FloatArray& x, const FloatArray& w, Pair stride,
                          std::tuple<index_t, index_t, index_t, index_t> pads, Pair dilation, index_t groups,
                          bool need_input, bool need_weight, bool need_bias) {
  const fastcnn::ConvGeometry g = conv_geometry(x, w, stride, pads, dilation, groups);
  require_ndim(dy, 4, "conv2d_backward", "grad_output");
  if (dy.shape(0) != g.batch || dy.shape(1) != g.out_channels || dy.shape(2) != g.out_height ||
      dy.shape(3) != g.out_width)
    throw std::invalid_argument("conv2d_backward: expected grad_output of shape (" + std::to_string(g.batch) + ", " +
                                std::to_string(g.out_channels) + ", " + std::to_string(g.out_height) + ", " +
                                std::to_string(g.out_width) + "); got " + shape_of(dy));
  const int threads = threads_for(conv_multiply_adds(g), kFlopGrain);
  using fastcnn::checked_add;
  index_t bytes = 0;
  if (need_input)
    bytes = checked_add(float_bytes(g.batch, g.in_channels, g.in_height, g.in_width),
                        fastcnn::conv2d_backward_input_workspace_bytes(g, threads), "conv2d_backward");
  if (need_weight)
    bytes = checked_add(bytes,
                        checked_add(float_bytes(g.out_channels, g.in_channels_per_group(), g.kernel_height, g.kernel_width),
                                    fastcnn::conv2d_backward_weight_workspace_bytes(g, threads), "conv2d_backward"),
                        "conv2d_backward");
  fastcnn::check_memory("conv2d_backward", bytes);

  py::object dx = py::none(), dw = py::none(), db = py::none();
  float *dxp = nullptr, *dwp = nullptr, *dbp = nullptr;
  if (need_input) {
    FloatArray a = new_output({g.batch, g.in_channels, g.in_height, g.in_width});
    dxp = a.mutable_data();
    dx = std::move(a);
  }
  if (need_weight) {
    FloatArray a = new_output({g.out_channels, g.in_channels_per_group(), g.kernel_height, g.kernel_width});
    dwp = a.mutable_data();
    dw = std::move(a);
  }
  if (need_bias) {
    FloatArray a = new_output({g.out_channels});
    dbp = a.mutable_data();
    db = std::move(a);
  }
  const float* dyp = dy.data();
  const float* xp = x.data();
  const float* wp = w.data();
  {
    py::gil_scoped_release release;
    if (dxp) fastcnn::conv2d_backward_input(g, threads, dyp, wp, dxp);
    if (dwp) fastcnn::conv2d_backward_weight(g, threads, dyp, xp, dwp);
    if (dbp) fastcnn::conv2d_backward_bias(g, threads, dyp, dbp);
  }
  return py::make_tuple(dx, dw, db);
}

fastcnn::PoolGeometry pool_geometry(const FloatArray& x, Pair kernel, Pair stride, Pair padding, bool ceil_mode,
                                    const char* op, const char* name) {
  require_ndim(x, 4, op, name);
  fastcnn::PoolGeometry g{};
  g.planes = fastcnn::checked_mul(x.shape(0), x.shape(1), op);
  g.in_height = x.shape(2);
  g.in_width = x.shape(3);
  g.kernel_height = kernel.first;
  g.kernel_width = kernel.second;
  g.stride_h = stride.first;
  g.stride_w = stride.second;
  g.pad_h = padding.first;
  g.pad_w = padding.second;
  g.ceil_mode = ceil_mode;
  return fastcnn::make_pool_geometry(g, op);
}

py::tuple max_pool2d_forward(const FloatArray& x, Pair kernel, Pair stride, Pair padding, bool ceil_mode,
                             bool with_indices) {
  const fastcnn::PoolGeometry g = pool_geometry(x, kernel, stride, padding, ceil_mode, "max_pool2d", "input");
  const index_t n = x.shape(0), c = x.shape(1);
  const index_t out_bytes = float_bytes(n, c, g.out_height, g.out_width);
  fastcnn::check_memory("max_pool2d", with_indices ? 3 * out_bytes : out_bytes);
  FloatArray y = new_output({n, c, g.out_height, g.out_width});
  py::object indices = py::none();
  std::int64_t* ip = nullptr;
  if (with_indices) {
    IndexArray a(std::vector<py::ssize_t>{n, c, g.out_height, g.out_width});
    ip = a.mutable_data();
    indices = std::move(a);
  }
  const float* xp = x.data();
  float* yp = y.mutable_data();
  const int threads = threads_for(static_cast<index_t>(x.size()), kElementGrain);
  {
    py::gil_scoped_release release;
    fastcnn::max_pool2d_forward(g, threads, xp, yp, ip);
  }
  return py::make_tuple(y, indices);
}

FloatArray max_pool2d_backward(const FloatArray& dy, const IndexArray& indices, index_t height, index_t width) {
  require_ndim(dy, 4, "max_pool2d_backward", "grad_output");
  if (indices.ndim() != 4 || !std::equal(dy.shape(), dy.shape() + 4, indices.shape()))
    throw std::invalid_argument("max_pool2d_backward: expected indices of the same shape as grad_output " +
                                shape_of(dy) + "; got " + shape_of(indices));
  if (height < 1 || width < 1) throw std::invalid_argument("max_pool2d_backward: input_shape must be positive");
  const index_t n = dy.shape(0), c = dy.shape(1);
  const index_t planes = fastcnn::checked_mul(n, c, "max_pool2d_backward");
  const index_t in_plane = fastcnn::checked_mul(height, width, "max_pool2d_backward");
  const index_t out_plane = dy.shape(2) * dy.shape(3);
  fastcnn::check_memory("max_pool2d_backward", float_bytes(n, c, height, width));
  const int threads = threads_for(fastcnn::checked_mul(planes, in_plane, "max_pool2d_backward"), kElementGrain);
  const std::int64_t* ip = indices.data();
  FloatArray dx = new_output({n, c, height, width});
  const float* dyp = dy.data();
  float* dxp = dx.mutable_data();
  index_t bad;
  {
    py::gil_scoped_release release;
    bad = fastcnn::max_pool2d_backward(planes, in_plane, out_plane, threads, dyp, ip, dxp);
  }
  if (bad >= 0)  // dx, left incomplete, is dropped with the exception
    throw std::invalid_argument("max_pool2d_backward: indices must lie in [0, H*W) = [0, " + std::to_string(in_plane) +
                                ") for input planes of " + std::to_string(height) + "x" + std::to_string(width) +
                                "; got " + std::to_string(ip[bad]) + " at flat position " + std::to_string(bad));
  return dx;
}

FloatArray avg_pool2d_forward(const FloatArray& x, Pair kernel, Pair stride, Pair padding, bool ceil_mode,
                              bool count_include_pad) {
  const fastcnn::PoolGeometry g = pool_geometry(x, kernel, stride, padding, ceil_mode, "avg_pool2d", "input");
  const index_t n = x.shape(0), c = x.shape(1);
  fastcnn::check_memory("avg_pool2d", float_bytes(n, c, g.out_height, g.out_width));
  FloatArray y = new_output({n, c, g.out_height, g.out_width});
  const float* xp = x.data();
  float* yp = y.mutable_data();
  const int threads = threads_for(static_cast<index_t>(x.size()), kElementGrain);
  {
    py::gil_scoped_release release;
    fastcnn::avg_pool2d_forward(g, count_include_pad, threads, xp, yp);
  }
  return y;
}

FloatArray avg_pool2d_backward(const FloatArray& dy, index_t height, index_t width, Pair kernel, Pair stride,
                               Pair padding, bool ceil_mode, bool count_include_pad) {
  require_ndim(dy, 4, "avg_pool2d_backward", "grad_output");
  fastcnn::PoolGeometry g{};
  g.planes = fastcnn::checked_mul(dy.shape(0), dy.shape(1), "avg_pool2d_backward");
  g.in_height = height;
  g.in_width = width;
  g.kernel_height = kernel.first;
  g.kernel_width = kernel.second;
  g.stride_h = stride.first;
  g.stride_w = stride.second;
  g.pad_h = padding.first;
  g.pad_w = padding.second;
  g.ceil_mode = ceil_mode;
  g = fastcnn::make_pool_geometry(g, "avg_pool2d_backward");
  if (dy.shape(2) != g.out_height || dy.shape(3) != g.out_width)
    throw std::invalid_argument("avg_pool2d_backward: expected grad_output with spatial size " +
                                std::to_string(g.out_height) + "x" + std::to_string(g.out_width) + "; got " +
                                shape_of(dy));
  const index_t n = dy.shape(0), c = dy.shape(1);
  fastcnn::check_memory("avg_pool2d_backward", float_bytes(n, c, height, width));
  FloatArray dx = new_output({n, c, height, width});
  const float* dyp = dy.data();
  float* dxp = dx.mutable_data();
  const int threads = threads_for(static_cast<index_t>(dx.size()), kElementGrain);
  {
    py::gil_scoped_release release;
    fastcnn::avg_pool2d_backward(g, count_include_pad, threads, dyp, dxp);
  }
  return dx;
}

FloatArray matmul(const FloatArray& a, const FloatArray& b, bool transpose_a, bool transpose_b) {
  require_ndim(a, 2, "matmul", "a");
  require_ndim(b, 2, "matmul", "b");
  fastcnn::MatmulGeometry g{};
  g.m = transpose_a ? a.shape(1) : a.shape(0);
  g.k = transpose_a ? a.shape(0) : a.shape(1);
  const index_t k_of_b = transpose_b ? b.shape(1) : b.shape(0);
  g.n = transpose_b ? b.shape(0) : b.shape(1);
  g.transpose_a = transpose_a;
  g.transpose_b = transpose_b;
  if (k_of_b != g.k)
    throw std::invalid_argument("matmul: inner dimensions differ: a " + shape_of(a) + (transpose_a ? "^T" : "") +
                                " and b " + shape_of(b) + (transpose_b ? "^T" : ""));
  if (g.m < 1 || g.n < 1 || g.k < 1) throw std::invalid_argument("matmul: operands must not be empty");
  const int threads = threads_for(fastcnn::checked_mul(fastcnn::checked_mul(g.m, g.n, "matmul"), g.k, "matmul"), kFlopGrain);
  fastcnn::check_memory("matmul", fastcnn::checked_add(float_bytes(g.m, g.n, 1, 1),
                                                       fastcnn::matmul_workspace_bytes(g, threads), "matmul"));
  FloatArray c(std::vector<py::ssize_t>{g.m, g.n});
  const float* ap = a.data();
  const float* bp = b.data();
  float* cp = c.mutable_data();
  {
    py::gil_scoped_release release;
    fastcnn::matmul(g, threads, ap, bp, cp);
  }
  return c;
}

py::array_t<float> relu_forward(const FloatArray& x) {
  fastcnn::check_memory("relu", fastcnn::checked_mul(static_cast<index_t>(x.size()), 4, "relu"));
  py::array_t<float> y = empty_like(x);
  const float* xp = x.data();
  float* yp = y.mutable_data();
  const index_t count = x.size();
  const int threads = threads_for(count, kElementGrain);
  {
    py::gil_scoped_release release;
    fastcnn::relu_forward(count, threads, xp, yp);
  }
  return y;
}

py::array_t<float> relu_backward(const FloatArray& dy, const FloatArray& y) {
  if (dy.ndim() != y.ndim() || !std::equal(dy.shape(), dy.shape() + dy.ndim(), y.shape()))
    throw std::invalid_argument("relu_backward: grad_output " + shape_of(dy) + " and output " + shape_of(y) +
                                " must have the same shape");
  fastcnn::check_memory("relu_backward", fastcnn::checked_mul(static_cast<index_t>(dy.size()), 4, "relu"));
  py::array_t<float> dx = empty_like(dy);
  const float* dyp = dy.data();
  const float* yp = y.data();
  float* dxp = dx.mutable_data();
  const index_t count = dy.size();
  const int threads = threads_for(count, kElementGrain);
  {
    py::gil_scoped_release release;
    fastcnn::relu_backward(count, threads, dyp, yp, dxp);
  }
  return dx;
}

fastcnn::BatchNormGeometry batch_norm_geometry(const FloatArray& x, const char* op) {
  if (x.ndim() < 2) throw std::invalid_argument(std::string(op) + ": expected input (N, C, ...); got " + shape_of(x));
  fastcnn::BatchNormGeometry g{x.shape(0), x.shape(1), 1};
  for (py::ssize_t d = 2; d < x.ndim(); ++d) g.spatial = fastcnn::checked_mul(g.spatial, x.shape(d), op);
  return g;
}

void require_channels(const py::array& a, index_t channels, const char* op, const char* name) {
  if (a.ndim() != 1 || a.shape(0) != channels)
    throw std::invalid_argument(std::string(op) + ": expected " + name + " of shape (" + std::to_string(channels) +
                                ",); got " + shape_of(a));
}

py::tuple batch_norm_statistics(const FloatArray& x) {
  const fastcnn::BatchNormGeometry g = batch_norm_geometry(x, "batch_norm");
  py::array_t<double> mean(g.channels), var(g.channels);
  const float* xp = x.data();
  double* mp = mean.mutable_data();
  double* vp = var.mutable_data();
  const int threads = threads_for(static_cast<index_t>(x.size()), kElementGrain);
  {
    py::gil_scoped_release release;
    fastcnn::batch_norm_statistics(g, threads, xp, mp, vp);
  }
  return py::make_tuple(mean, var);
}

py::array_t<float> batch_norm_apply(const FloatArray& x, const FloatArray& scale, const FloatArray& shift) {
  const fastcnn::BatchNormGeometry g = batch_norm_geometry(x, "batch_norm");
  require_channels(scale, g.channels, "batch_norm", "scale");
  require_channels(shift, g.channels, "batch_norm", "shift");
  fastcnn::check_memory("batch_norm", fastcnn::checked_mul(static_cast<index_t>(x.size()), 4, "batch_norm"));
  py::array_t<float> y = empty_like(x);
  const float* xp = x.data();
  const float* ap = scale.data();
  const float* bp = shift.data();
  float* yp = y.mutable_data();
  const int threads = threads_for(static_cast<index_t>(x.size()), kElementGrain);
  {
    py::gil_scoped_release release;
    fastcnn::batch_norm_apply(g, threads, xp, ap, bp, yp);
  }
  return y;
}

py::tuple batch_norm_backward(const FloatArray& dy, const FloatArray& x, const FloatArray& mean,
                              const FloatArray& inv_std, const FloatArray& weight, bool batch_statistics,
                              bool need_input) {
  const fastcnn::BatchNormGeometry g = batch_norm_geometry(x, "batch_norm_backward");
  if (dy.ndim() != x.ndim() || !std::equal(dy.shape(), dy.shape() + dy.ndim(), x.shape()))
    throw std::invalid_argument("batch_norm_backward: grad_output " + shape_of(dy) + " must have the input's shape " +
                                shape_of(x));
  require_channels(mean, g.channels, "batch_norm_backward", "mean");
  require_channels(inv_std, g.channels, "batch_norm_backward", "inv_std");
  require_channels(weight, g.channels, "batch_norm_backward", "weight");
  fastcnn::check_memory("batch_norm_backward", fastcnn::checked_mul(static_cast<index_t>(x.size()), 4, "batch_norm"));
  py::object dx = py::none();
  float* dxp = nullptr;
  if (need_input) {
    py::array_t<float> a = empty_like(x);
    dxp = a.mutable_data();
    dx = std::move(a);
  }
  py::array_t<float> dweight(g.channels), dbias(g.channels);
  const float *dyp = dy.data(), *xp = x.data(), *mp = mean.data(), *rp = inv_std.data(), *wp = weight.data();
  float* dwp = dweight.mutable_data();
  float* dbp = dbias.mutable_data();
  const int threads = threads_for(static_cast<index_t>(x.size()), kElementGrain);
  {
    py::gil_scoped_release release;
    fastcnn::batch_norm_backward(g, threads, batch_statistics, dyp, xp, mp, rp, wp, dxp, dwp, dbp);
  }
  return py::make_tuple(dx, dweight, dbias);
}

bool built_with_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastcnn's private compiled kernels; use fastcnn.functional instead.";
  m.attr("__version__") = FASTCNN_VERSION;

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fastcnn::MemoryLimitError& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });

  m.def("conv2d_forward", &conv2d_forward, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"));
  m.def("conv2d_backward", &conv2d_backward, py::arg("grad_output"), py::arg("x"), py::arg("weight"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("need_input"),
        py::arg("need_weight"), py::arg("need_bias"));
  m.def("max_pool2d_forward", &max_pool2d_forward, py::arg("x"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("padding"), py::arg("ceil_mode"), py::arg("with_indices"));
  m.def("max_pool2d_backward", &max_pool2d_backward, py::arg("grad_output"), py::arg("indices"), py::arg("height"),
        py::arg("width"));
  m.def("avg_pool2d_forward", &avg_pool2d_forward, py::arg("x"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("padding"), py::arg("ceil_mode"), py::arg("count_include_pad"));
  m.def("avg_pool2d_backward", &avg_pool2d_backward, py::arg("grad_output"), py::arg("height"), py::arg("width"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("padding"), py::arg("ceil_mode"),
        py::arg("count_include_pad"));

  m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("transpose_a") = false,
        py::arg("transpose_b") = false);

  m.def("relu_forward", &relu_forward, py::arg("x"));
  m.def("relu_backward", &relu_backward, py::arg("grad_output"), py::arg("output"));

  m.def("batch_norm_statistics", &batch_norm_statistics, py::arg("x"));
  m.def("batch_norm_apply", &batch_norm_apply, py::arg("x"), py::arg("scale"), py::arg("shift"));
  m.def("batch_norm_backward", &batch_norm_backward, py::arg("grad_output"), py::arg("x"), py::arg("mean"),
        py::arg("inv_std"), py::arg("weight"), py::arg("batch_statistics"), py::arg("need_input"));

  m.def("get_num_threads", &fastcnn::num_threads);
  m.def("set_num_threads", &fastcnn::set_num_threads, py::arg("n"));
  m.def("max_threads", &fastcnn::max_settable_threads);
  m.def("get_memory_limit", &fastcnn::memory_limit);
  m.def("set_memory_limit", &fastcnn::set_memory_limit, py::arg("bytes"));
  m.def("default_memory_limit", &fastcnn::default_memory_limit);
  m.def("simd_level", []() { return std::string(fastcnn::gemm_kernel().name); });
  m.def("built_with_openmp", &built_with_openmp);
  m.def("set_debug_nan_fill", [](bool on) { g_debug_nan_fill = on; }, py::arg("on"));
  m.def("set_debug_all_threads", [](bool on) { g_debug_all_threads = on; }, py::arg("on"));
}

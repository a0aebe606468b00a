"""What `fastcnn.bench` measures: its settings (repeats, tolerances, the speedup target), the convolution and
pooling shapes, and the cases, each the same op on the same data for fastcnn, its NumPy reference and PyTorch.
`fastcnn.bench` re-exports every name here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import functional, reference

DEFAULT_REPEATS = 7
QUICK_REPEATS = 2
WARM_UP_SECONDS = 0.2  # of untimed calls before each implementation's timed ones; see bench.timed_samples_ms
SGEMM_SIZE = 2048  # large enough that BLAS runs near its peak, small enough to take well under a second
RTOL = 1e-3
ATOL_OF_SCALE = 1e-3  # absolute tolerance, as a fraction of the largest reference value
TARGET_SPEEDUP = 3.0  # the current goal: fastcnn at least this many times faster than the reference ...
TARGET_THREADS = 2  # ... at this thread count
IMPLEMENTATIONS = ("fastcnn", "reference", "torch")
NUMPY_APIS = {"fastcnn": functional, "reference": reference}  # the same functions, NumPy in and out
GRAD_INPUT_ONLY = (True, False, False)  # output_mask picking grad_input only
GRAD_WEIGHT_ONLY = (False, True, False)  # output_mask picking grad_weight only


@dataclass(frozen=True)
class ConvShape:
    """A stride-1 convolution layer: input (N, C_in, H, W), C_out filters of k x k, `padding` zeros on each side."""

    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    k: int
    padding: int

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.h + 2 * self.padding - self.k + 1, self.w + 2 * self.padding - self.k + 1

    @property
    def flops(self) -> int:
        """Forward, backward-input and backward-weight each do this many: one multiply-add counts as two."""
        h_out, w_out = self.out_hw
        return 2 * self.n * self.c_out * self.c_in * self.k * self.k * h_out * w_out

    def label(self) -> str:
        return f"{self.n}x{self.c_in}x{self.h}x{self.w} -> {self.c_out}, k{self.k} p{self.padding}"


# LeNet-5's two convolutions, then CIFAR-, VGG- and ResNet-like layers.
CONV_SHAPES = (
    ConvShape(64, 1, 28, 28, 6, 5, 2),
    ConvShape(64, 6, 14, 14, 16, 5, 0),
    ConvShape(64, 3, 32, 32, 32, 3, 1),
    ConvShape(64, 32, 16, 16, 64, 3, 1),
    ConvShape(64, 128, 8, 8, 128, 3, 1),
    ConvShape(1, 64, 56, 56, 64, 3, 1),
)
QUICK_CONV_SHAPES = (CONV_SHAPES[0], CONV_SHAPES[3])  # a tiny layer and a GEMM-heavy one
# The 3x target covers the LeNet- and CIFAR-sized layers. On the two largest the reference is one big BLAS matmul
# running near the machine's peak, so 3x would need more than 100% of it; their goal is the performance issue's.
TARGET_SHAPE_LABELS = frozenset(shape.label() for shape in CONV_SHAPES[:4])
POOL_SHAPE = (64, 32, 32, 32)  # pooled 2x2, stride 2


@dataclass
class Case:
    """One op on one shape, as a call per implementation; each call returns its output (arrays or tensors)."""

    op: str
    shape: str
    flops: int | None  # per call, for GFLOP/s; None for pooling, which is memory-bound
    calls: dict[str, Callable[[], object]]


# ----------------------------------------------------------------------------------------------------------------
# Cases: the same op, on the same data, for each implementation
# ----------------------------------------------------------------------------------------------------------------
def conv_cases(shape: ConvShape, rng: np.random.Generator, torch) -> list[Case]:
    x = rng.standard_normal((shape.n, shape.c_in, shape.h, shape.w), dtype=np.float32)
    weight = rng.standard_normal((shape.c_out, shape.c_in, shape.k, shape.k), dtype=np.float32)
    bias = rng.standard_normal(shape.c_out, dtype=np.float32)
    grad_output = rng.standard_normal((shape.n, shape.c_out, *shape.out_hw), dtype=np.float32)
    p = shape.padding

    def forward(module):
        return lambda: module.conv2d(x, weight, bias, padding=p)

    def backward(module, mask, part):
        return lambda: module.conv2d_backward(grad_output, x, weight, padding=p, output_mask=mask)[part]

    forwards, input_grads, weight_grads = {}, {}, {}
    for name, module in NUMPY_APIS.items():
        forwards[name] = forward(module)
        input_grads[name] = backward(module, GRAD_INPUT_ONLY, 0)
        weight_grads[name] = backward(module, GRAD_WEIGHT_ONLY, 1)
    if torch is not None:
        forwards["torch"], input_grads["torch"], weight_grads["torch"] = torch_conv_calls(
            torch, x, weight, bias, grad_output, p
        )
    label = shape.label()
    return [
        Case("conv2d forward", label, shape.flops, forwards),
        Case("conv2d backward-input", label, shape.flops, input_grads),
        Case("conv2d backward-weight", label, shape.flops, weight_grads),
    ]


def torch_conv_calls(torch, x, weight, bias, grad_output, padding):
    """PyTorch's forward, backward-input and backward-weight calls, without autograd's bookkeeping."""
    tx, tweight, tbias, tgrad = (torch.from_numpy(a) for a in (x, weight, bias, grad_output))

    def backward(mask, part):
        # convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
        #                      output_padding, groups, output_mask)
        arguments = (tgrad, tx, tweight, None, [1, 1], [padding, padding], [1, 1], False, [0, 0], 1, list(mask))
        return lambda: torch.ops.aten.convolution_backward(*arguments)[part]

    forward = lambda: torch.nn.functional.conv2d(tx, tweight, tbias, padding=padding)  # noqa: E731
    return forward, backward(GRAD_INPUT_ONLY, 0), backward(GRAD_WEIGHT_ONLY, 1)


def pool_cases(shape: tuple[int, int, int, int], rng: np.random.Generator, torch) -> list[Case]:
    n, c, h, w = shape
    x = rng.standard_normal(shape, dtype=np.float32)
    grad_output = rng.standard_normal((n, c, h // 2, w // 2), dtype=np.float32)
    # Every backward gets the same indices, so all three scatter to the same places.
    _, indices = reference.max_pool2d(x, 2, return_indices=True)

    def numpy_api_calls(module):
        return (
            lambda: module.max_pool2d(x, 2, return_indices=True),
            lambda: module.max_pool2d_backward(grad_output, indices, shape),
            lambda: module.avg_pool2d(x, 2),
            lambda: module.avg_pool2d_backward(grad_output, shape, 2),
        )

    per_op = [{} for _ in range(4)]  # max forward, max backward, avg forward, avg backward
    implementations = {name: numpy_api_calls(module) for name, module in NUMPY_APIS.items()}
    if torch is not None:
        implementations["torch"] = torch_pool_calls(torch, x, grad_output, indices)
    for name, calls in implementations.items():
        for op_calls, call in zip(per_op, calls):
            op_calls[name] = call
    label = "x".join(map(str, shape)) + ", 2x2 s2"
    ops = ("max_pool2d forward (+indices)", "max_pool2d backward", "avg_pool2d forward", "avg_pool2d backward")
    return [Case(op, label, None, calls) for op, calls in zip(ops, per_op)]


def torch_pool_calls(torch, x, grad_output, indices):
    """PyTorch's 2x2 stride-2 pooling calls: max forward with indices, max backward, avg forward, avg backward."""
    tx, tgrad, tindices = torch.from_numpy(x), torch.from_numpy(grad_output), torch.from_numpy(indices)
    aten, two, zero, one = torch.ops.aten, [2, 2], [0, 0], [1, 1]
    return (
        lambda: aten.max_pool2d_with_indices(tx, two, two),
        lambda: aten.max_pool2d_with_indices_backward(tgrad, tx, two, two, zero, one, False, tindices),
        lambda: torch.nn.functional.avg_pool2d(tx, 2),
        lambda: aten.avg_pool2d_backward(tgrad, tx, two, two, zero, False, True, None),
    )

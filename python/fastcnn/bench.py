"""Side-by-side timing of fastcnn's kernels, its NumPy reference and PyTorch, at one or more thread counts.

Run it from an installed fastcnn (PyTorch and threadpoolctl are used when installed, never required):

    python -m fastcnn.bench --quick                          # smoke run: 2 repeats, fewer shapes
    python -m fastcnn.bench --threads 1,2 --markdown core.md --json core.json

Each figure is the median of --repeats timed calls, made after untimed warm-up calls. The output of each
implementation's first call is compared with the reference's before anything is timed, and a row whose fastcnn
output differs is marked WRONG instead of showing a speedup: a fast wrong kernel must not look good. Benchmarks only
report; nothing here asserts.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import functional, reference
from ._core import __version__ as fastcnn_version
from ._runtime import get_num_threads, set_num_threads, simd_level

__all__ = ["main", "ConvShape", "CONV_SHAPES", "POOL_SHAPE"]

DEFAULT_REPEATS = 7
QUICK_REPEATS = 2
WARM_UP_SECONDS = 0.2  # of untimed calls before each implementation's timed ones; see timed_samples_ms
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
# Optional dependencies, imported only here so that fastcnn itself needs nothing but NumPy
# ----------------------------------------------------------------------------------------------------------------
def import_torch_or_none():
    try:
        import torch
    except (ImportError, OSError):  # OSError: a torch install whose shared libraries do not load
        return None
    return torch


def import_threadpoolctl_or_none():
    try:
        import threadpoolctl
    except ImportError:
        return None
    return threadpoolctl


@contextmanager
def numpy_blas_threads(threadpoolctl, n: int):
    """Limit NumPy's BLAS to n threads while inside, when threadpoolctl can; otherwise leave its default."""
    if threadpoolctl is None:
        yield
        return
    with threadpoolctl.threadpool_limits(limits=n, user_api="blas"):
        yield


def loaded_openblas_threads() -> int | None:
    """The thread count of the OpenBLAS that NumPy loaded, asked through ctypes (Linux), or None if not found.

    Only used without threadpoolctl, so the report can still say how many threads NumPy's BLAS really used.
    """
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1].lower()}
    except OSError:
        return None
    names = ("openblas_get_num_threads", "openblas_get_num_threads64_", "scipy_openblas_get_num_threads64_",
             "scipy_openblas_get_num_threads")
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)  # already loaded by NumPy: this only returns a handle to it
        except OSError:
            continue
        for name in names:
            if hasattr(library, name):
                return int(getattr(library, name)())
    return None


# ----------------------------------------------------------------------------------------------------------------
# The machine and the libraries
# ----------------------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def numpy_blas_name() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception:  # show_config's layout differs across NumPy versions; the name is only informative
        return "unknown BLAS"


def describe_environment(torch, threadpoolctl, threads, repeats) -> dict:
    if threadpoolctl is not None:
        blas_threads = f"set to each thread count with threadpoolctl {threadpoolctl.__version__}"
    else:
        count = loaded_openblas_threads()
        blas_threads = (
            f"threadpoolctl not installed, so NumPy's BLAS used its default of {count if count else 'unknown'} "
            "thread(s) at every thread count (the reference and the sgemm peak)"
        )
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": {"logical": os.cpu_count(), "usable": usable_cores()},
        # Other work on the machine slows the timed calls; a reader of the results should know there was some.
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "fastcnn": fastcnn_version,
        "simd_level": simd_level(),
        "numpy": np.__version__,
        "numpy_blas": numpy_blas_name(),
        "torch": torch.__version__ if torch is not None else "not installed",
        "threads": list(threads),
        "numpy_blas_threads": blas_threads,
        "repeats": repeats,
    }


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


# ----------------------------------------------------------------------------------------------------------------
# Checking and timing
# ----------------------------------------------------------------------------------------------------------------
def as_arrays(output) -> tuple[np.ndarray, ...]:
    """An output (an array, a tensor, or a tuple of them) as a tuple of NumPy arrays."""
    parts = output if isinstance(output, tuple) else (output,)
    return tuple(np.asarray(part) for part in parts)


def matches_reference(output, expected) -> bool:
    """Floating outputs within RTOL and ATOL_OF_SCALE x max|expected| (NaN fails); integer outputs exactly."""
    actual, wanted = as_arrays(output), as_arrays(expected)
    if len(actual) != len(wanted):
        return False
    for a, e in zip(actual, wanted):
        if a.shape != e.shape:
            return False
        if e.dtype.kind == "f":
            scale = float(np.max(np.abs(e))) if e.size else 0.0
            if not np.allclose(a, e, rtol=RTOL, atol=ATOL_OF_SCALE * scale):
                return False
        elif not np.array_equal(a, e):
            return False
    return True


def timed_samples_ms(call: Callable[[], object], repeats: int) -> list[float]:
    """Milliseconds of `repeats` calls, made after calling for at least WARM_UP_SECONDS.

    Fastcnn, PyTorch and NumPy's BLAS each keep their own thread pool, whose idle threads spin for a while after
    a call (OpenBLAS's for about 0.1 s); on a machine with few cores the calls made meanwhile by another library
    fight those spinners for the cores, and on 2 cores measured 8 ms instead of 0.02 ms. Calling for longer than
    that spin lets the timed calls start on quiet cores; it also absorbs first-touch page faults and lazy set-up.
    """
    deadline = time.perf_counter() + WARM_UP_SECONDS
    call()
    while time.perf_counter() < deadline:
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def first_calls(case: Case) -> tuple[dict, dict]:
    """One call of each implementation, whose output is checked before anything is timed.

    Returns (outputs, errors) keyed by implementation; an implementation that raised has an error instead.
    """
    outputs, errors = {}, {}
    for name, call in case.calls.items():
        try:
            outputs[name] = call()
        except Exception as error:  # a broken implementation is reported in its row, not fatal to the run
            errors[name] = f"{type(error).__name__}: {error}"
    return outputs, errors


def verdict(name: str, outputs: dict, errors: dict) -> str:
    """'ok', 'WRONG', 'ERROR: ...', 'unchecked' (the reference failed) or 'not run' for one implementation."""
    if name in errors:
        return f"ERROR: {errors[name]}"
    if name not in outputs:
        return "not run"
    if "reference" not in outputs:
        return "unchecked"
    return "ok" if matches_reference(outputs[name], outputs["reference"]) else "WRONG"


def sgemm_peak_gflops(rng: np.random.Generator, repeats: int) -> float:
    """NumPy float32 matmul throughput: what a well-tuned GEMM reaches on this machine at the current BLAS threads."""
    a, b = (rng.standard_normal((SGEMM_SIZE, SGEMM_SIZE), dtype=np.float32) for _ in range(2))
    c = np.empty_like(a)  # a preallocated output keeps page faults out of the timing
    milliseconds = statistics.median(timed_samples_ms(lambda: np.matmul(a, b, out=c), repeats))
    return 2 * SGEMM_SIZE**3 / (milliseconds * 1e6)


def run_case(case: Case, threads: int, repeats: int, peak_gflops: float) -> dict:
    outputs, errors = first_calls(case)
    for name, error in errors.items():
        log(f"[{threads} thread(s)] {case.op}, {case.shape}: {name} failed: {error}")
    checks = {name: verdict(name, outputs, errors) for name in IMPLEMENTATIONS if name != "reference"}
    if "reference" in errors:
        checks["reference"] = f"ERROR: {errors['reference']}"
    samples = {name: timed_samples_ms(case.calls[name], repeats) for name in IMPLEMENTATIONS if name in outputs}
    ms = {name: statistics.median(samples[name]) if name in samples else None for name in IMPLEMENTATIONS}
    row = {"op": case.op, "shape": case.shape, "threads": threads, "ms": ms, "samples_ms": samples,
           "check": checks}
    if case.flops is not None:
        row["gflops"] = {name: case.flops / (t * 1e6) if t else None for name, t in ms.items()}
        row["percent_of_sgemm_peak"] = {
            name: 100 * g / peak_gflops if g else None for name, g in row["gflops"].items()
        }
    row["speedup_vs_reference"] = ratio(ms["reference"], ms["fastcnn"])
    row["speedup_vs_torch"] = ratio(ms["torch"], ms["fastcnn"])
    row["meets_target"] = meets_target(case, threads, checks["fastcnn"], row["speedup_vs_reference"])
    return row


def ratio(other_ms, fastcnn_ms):
    """How many times faster fastcnn is (> 1: fastcnn is faster), or None when either time is missing."""
    return other_ms / fastcnn_ms if other_ms and fastcnn_ms else None


def meets_target(case: Case, threads: int, check: str, speedup) -> bool | None:
    """The target applies to the LeNet/CIFAR convolutions at TARGET_THREADS; a wrong result never meets it."""
    if case.flops is None or threads != TARGET_THREADS or case.shape not in TARGET_SHAPE_LABELS:
        return None
    return check == "ok" and speedup is not None and speedup >= TARGET_SPEEDUP


def run_benchmark(args, torch, threadpoolctl) -> dict:
    rng = np.random.default_rng(args.seed)
    shapes = QUICK_CONV_SHAPES if args.quick else CONV_SHAPES
    cases = [case for shape in shapes for case in conv_cases(shape, rng, torch)]
    cases += pool_cases(POOL_SHAPE, rng, torch)
    report = {"environment": describe_environment(torch, threadpoolctl, args.threads, args.repeats),
              "sgemm_peak_gflops": {}, "results": []}
    for threads in args.threads:
        set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        with numpy_blas_threads(threadpoolctl, threads):
            peak = sgemm_peak_gflops(rng, args.repeats)
            report["sgemm_peak_gflops"][str(threads)] = peak
            log(f"[{threads} thread(s)] sgemm peak {peak:.1f} GFLOP/s")
            for case in cases:
                row = run_case(case, threads, args.repeats, peak)
                report["results"].append(row)
                log(f"[{threads} thread(s)] {case.op}, {case.shape}: " + ", ".join(
                    f"{name} {format_ms(t)} ms" for name, t in row["ms"].items() if t is not None))
    return report


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------------
def format_ms(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def format_number(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def fastcnn_figure_cell(row: dict, value, pattern: str) -> str:
    """A figure of merit of fastcnn's, or WRONG / ERROR in its place: a wrong kernel never gets a flattering number."""
    if row["check"]["fastcnn"] != "ok":
        return row["check"]["fastcnn"].split(":")[0]
    return format_number(value, pattern)


def speedup_cells(row: dict) -> list[str]:
    return [fastcnn_figure_cell(row, row[key], "{:.2f}x") for key in ("speedup_vs_reference", "speedup_vs_torch")]


def check_cell(row: dict) -> str:
    notes = [row["check"]["fastcnn"].split(":")[0]]
    notes += [f"{name} {status.split(':')[0]}" for name, status in row["check"].items()
              if name != "fastcnn" and status not in ("ok", "not run")]
    return ", ".join(notes)


def target_cell(value) -> str:
    return {True: "yes", False: "no", None: "-"}[value]


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def conv_table(rows: list[dict]) -> str:
    headers = ["op", "shape", "threads", "fastcnn ms", "reference ms", "torch ms", "fastcnn GFLOP/s",
               "fastcnn % peak", "torch GFLOP/s", "vs reference", "vs torch", "check", "target 3x ref"]
    cells = [[
        row["op"], row["shape"], str(row["threads"]),
        *(format_ms(row["ms"][name]) for name in IMPLEMENTATIONS),
        fastcnn_figure_cell(row, row["gflops"]["fastcnn"], "{:.1f}"),
        fastcnn_figure_cell(row, row["percent_of_sgemm_peak"]["fastcnn"], "{:.0f}%"),
        format_number(row["gflops"]["torch"], "{:.1f}"),
        *speedup_cells(row), check_cell(row), target_cell(row["meets_target"]),
    ] for row in rows]
    return markdown_table(headers, cells)


def pool_table(rows: list[dict]) -> str:
    headers = ["op", "shape", "threads", "fastcnn ms", "reference ms", "torch ms", "vs reference", "vs torch",
               "check"]
    cells = [[
        row["op"], row["shape"], str(row["threads"]),
        *(format_ms(row["ms"][name]) for name in IMPLEMENTATIONS),
        *speedup_cells(row), check_cell(row),
    ] for row in rows]
    return markdown_table(headers, cells)


def render_markdown(report: dict) -> str:
    env = report["environment"]
    peaks = "; ".join(f"{threads} thread(s): {gflops:.1f} GFLOP/s"
                      for threads, gflops in report["sgemm_peak_gflops"].items())
    conv_rows = [row for row in report["results"] if "gflops" in row]
    pool_rows = [row for row in report["results"] if "gflops" not in row]
    return "\n".join([
        "# fastcnn benchmark",
        "",
        f"- date: {env['date']}",
        f"- machine: {env['cpu']}, {env['cores']['logical']} logical cores ({env['cores']['usable']} usable); "
        f"{env['platform']}; load average at start {format_number(env['load_average_at_start'], '{:.2f}')}",
        f"- versions: fastcnn {env['fastcnn']} (SIMD {env['simd_level']}), numpy {env['numpy']} "
        f"({env['numpy_blas']}), torch {env['torch']}, python {env['python']}",
        f"- threads: {', '.join(map(str, env['threads']))} (fastcnn.set_num_threads"
        f"{'' if env['torch'] == 'not installed' else ' and torch.set_num_threads'}); "
        f"NumPy BLAS threads: {env['numpy_blas_threads']}",
        f"- sgemm peak (NumPy float32 {SGEMM_SIZE}x{SGEMM_SIZE} matmul): {peaks}",
        f"- each time: median of {env['repeats']} calls after {WARM_UP_SECONDS:g} s of warm-up calls; conv2d is "
        "float32 NCHW, stride 1, forward with bias; GFLOP/s counts 2*N*C_out*C_in*k*k*H_out*W_out per pass",
        "- vs reference / vs torch: the other's time divided by fastcnn's (above 1: fastcnn is faster); "
        f"check: fastcnn's first output against the reference (rtol {RTOL:g}, atol {ATOL_OF_SCALE:g} x "
        "max|reference|), a WRONG row shows no speedup",
        f"- target 3x ref: on the LeNet- and CIFAR-sized layers (the first four shapes) at {TARGET_THREADS} "
        f"threads, fastcnn at least {TARGET_SPEEDUP:g}x faster than the reference and correct",
        "",
        "## Convolution",
        "",
        conv_table(conv_rows),
        "",
        "## Pooling",
        "",
        pool_table(pool_rows),
        "",
    ])


def write_atomically(path: str, text: str) -> None:
    """Write to a temporary file in the same folder, then rename it over `path`: readers never see half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it owner-only; results are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int; got {value}")
    return value


def thread_counts(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints such as 1,2; got {text!r}")
    return tuple(positive_int(part) for part in parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time fastcnn against its NumPy reference and PyTorch (when installed), side by side."
    )
    parser.add_argument("--threads", type=thread_counts, default=(1, 2), metavar="N[,N...]",
                        help="thread counts to measure at (default: 1,2)")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help=f"timed calls per figure, after a warm-up; the median is reported "
                             f"(default: {DEFAULT_REPEATS}, or {QUICK_REPEATS} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_REPEATS} repeats and {len(QUICK_CONV_SHAPES)} of the "
                             f"{len(CONV_SHAPES)} convolution shapes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the report as markdown")
    return parser


def check_thread_counts(threads) -> None:
    """Fail before a long run, not in the middle of it, on a count fastcnn refuses (ValueError)."""
    for n in threads:
        set_num_threads(n)
        if n > usable_cores():
            log(f"warning: {n} threads on {usable_cores()} usable cores: threads wait for each other at every "
                "barrier, so these times say little about the kernels")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark with command-line arguments `argv` (default: sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    torch, threadpoolctl = import_torch_or_none(), import_threadpoolctl_or_none()
    fastcnn_threads = get_num_threads()
    torch_threads = torch.get_num_threads() if torch is not None else None
    try:
        try:
            check_thread_counts(args.threads)
        except ValueError as error:
            parser.error(str(error))  # exits with status 2 and the usage line
        report = run_benchmark(args, torch, threadpoolctl)
    finally:  # main may run inside a longer-lived process: leave its thread settings as they were
        set_num_threads(fastcnn_threads)
        if torch is not None:
            torch.set_num_threads(torch_threads)
    text = render_markdown(report)
    print(text)
    if args.markdown:
        write_atomically(args.markdown, text)
    if args.json:
        write_atomically(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

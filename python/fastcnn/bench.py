"""Side-by-side timing of fastcnn's kernels, its NumPy reference and PyTorch, at one or more thread counts.

Run it from an installed fastcnn (PyTorch and threadpoolctl are used when installed, never required):

    python -m fastcnn.bench --quick                          # smoke run: 2 repeats, fewer shapes
    python -m fastcnn.bench --threads 1,2 --markdown core.md --json core.json

Each figure is the median of --repeats timed calls, made after untimed warm-up calls. The output of each
implementation's first call is compared with the reference's before anything is timed, and a row whose fastcnn
output differs is marked WRONG instead of showing a speedup: a fast wrong kernel must not look good. Benchmarks only
report; nothing here asserts.

This module describes the machine, checks and times the cases, and runs the command line; the settings, shapes and
cases are in `_bench_cases`, the report's tables and files in `_bench_report`.
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
import time
from contextlib import contextmanager
from typing import Callable

import numpy as np

from ._bench_cases import (
    ATOL_OF_SCALE,
    CONV_SHAPES,
    DEFAULT_REPEATS,
    IMPLEMENTATIONS,
    POOL_SHAPE,
    QUICK_CONV_SHAPES,
    QUICK_REPEATS,
    RTOL,
    SGEMM_SIZE,
    TARGET_SHAPE_LABELS,
    TARGET_SPEEDUP,
    TARGET_THREADS,
    WARM_UP_SECONDS,
    Case,
    ConvShape,
    conv_cases,
    pool_cases,
)
from ._bench_report import format_ms, render_markdown, write_atomically
from ._core import __version__ as fastcnn_version
from ._runtime import get_num_threads, set_num_threads, simd_level

# Not used here; still importable from fastcnn.bench, where they were defined before the split.
from ._bench_cases import (  # noqa: F401
    GRAD_INPUT_ONLY,
    GRAD_WEIGHT_ONLY,
    NUMPY_APIS,
    torch_conv_calls,
    torch_pool_calls,
)
from ._bench_report import (  # noqa: F401
    check_cell,
    conv_table,
    fastcnn_figure_cell,
    format_number,
    markdown_table,
    pool_table,
    speedup_cells,
    target_cell,
)

__all__ = ["main", "ConvShape", "CONV_SHAPES", "POOL_SHAPE"]


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

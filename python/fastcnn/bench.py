"""Side-by-side timing of fastcnn against its NumPy reference and PyTorch, at one or more thread counts: the
kernels (conv2d and pooling passes) and the whole library (training throughput, inference, training memory).

Run it from an installed fastcnn (PyTorch, threadpoolctl and matplotlib are used when installed, never required):

    python -m fastcnn.bench --quick                          # smoke run, well under a minute
    python -m fastcnn.bench --threads 1,2 --markdown core.md --json core.json --plot core.png
    python -m fastcnn.bench --only train,infer               # some sections: conv, pool, train, infer, memory
    python -m fastcnn.bench --system-malloc                  # leave glibc's malloc as it is (see keep_freed_memory)

Each kernel figure is the median of --repeats timed calls, made after untimed warm-up calls. The output of each
implementation's first call is compared with the reference's before anything is timed, and a row whose fastcnn
output differs is marked WRONG instead of showing a speedup: a fast wrong kernel must not look good (the training
and inference sections compare fastcnn's model with PyTorch's copy of it the same way). Benchmarks only report;
nothing here asserts.

This module describes the machine, times the kernel cases, runs the sections and the command line. The shapes and
cases are in `_bench_cases`, timing and checks in `_bench_measure`, the performance issue's targets in
`_bench_targets`, training and inference in `_bench_training`, memory in `_bench_memory`, the report in
`_bench_report` and its picture in `_bench_plot`.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import statistics
from contextlib import contextmanager

import numpy as np

from . import _bench_memory, _bench_training
from ._bench_cases import (
    CONV_SHAPES,
    DEFAULT_REPEATS,
    IMPLEMENTATIONS,
    POOL_SHAPE,
    QUICK_CONV_SHAPES,
    QUICK_REPEATS,
    SGEMM_SIZE,
    TARGET_SHAPE_LABELS,
    TARGET_SPEEDUP,
    TARGET_THREADS,
    Case,
    ConvShape,
    conv_cases,
    pool_cases,
)
from ._bench_measure import log, matches_reference, ratio, timed_samples_ms
from ._bench_plot import save_ratio_chart
from ._bench_report import format_ms, render_markdown, write_atomically
from ._bench_targets import judge_conv_row, judge_memory, pool_forward_backward, two_thread_speedups
from ._core import __version__ as fastcnn_version
from ._runtime import get_num_threads, set_num_threads, simd_level

# Not used here; still importable from fastcnn.bench, where they were defined before the split.
from ._bench_cases import (  # noqa: F401
    ATOL_OF_SCALE,
    RTOL,
    WARM_UP_SECONDS,
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

from ._bench_measure import as_arrays  # noqa: F401

__all__ = ["main", "ConvShape", "CONV_SHAPES", "POOL_SHAPE", "SECTIONS"]

SECTIONS = ("conv", "pool", "train", "infer", "memory")


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


# glibc's malloc hands large freed blocks back to the system and maps fresh ones for the next allocation, whose
# pages then fault on first touch (a couple of microseconds each in this VM). A call that returns a fresh 8 MB
# array then times page faults, not its kernel: PyTorch's 64x3x32x32 -> 32 convolution took 6.7 ms in a plain
# process here and 0.95 ms with freed memory kept. So, unless --system-malloc is given, the benchmark keeps freed
# memory in the process for both libraries (what PyTorch's performance guide gets from jemalloc or tcmalloc), for
# the rest of the process, and the report says which it did.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's largest: only blocks above 32 MiB still get their own mapping
TRIM_THRESHOLD_BYTES = 2**30


def keep_freed_memory() -> str:
    """Ask glibc's malloc to keep freed memory (see above); returns what the allocator does now, for the report."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no C library to open this way (Windows), or no mallopt in it
        return "the system's, as is (no glibc mallopt to keep freed memory)"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mmap_kept = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    trim_kept = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    children = "; the memory section's fresh processes keep the default"
    if not (mmap_kept or trim_kept):
        return "glibc malloc, as is (mallopt refused to keep freed memory)"
    if not (mmap_kept and trim_kept):
        return (f"glibc malloc with only its {'mmap' if mmap_kept else 'trim'} threshold raised (mallopt refused the "
                f"other), so some fresh outputs may still time page faults{children}")
    return ("glibc malloc keeping freed memory for both libraries (mallopt: mmap threshold 32 MiB, trim threshold "
            f"1 GiB), so that fresh outputs reuse mapped pages instead of timing page faults{children}")


def describe_environment(torch, threadpoolctl, threads, repeats, allocator: str) -> dict:
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
        "allocator": allocator,
    }


# ----------------------------------------------------------------------------------------------------------------
# Checking and timing
# ----------------------------------------------------------------------------------------------------------------
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


def run_case(case: Case, threads: int, repeats: int, peak_gflops: float | None) -> dict:
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
    if case.flops is not None:
        judge_conv_row(row)
    return row


def meets_target(case: Case, threads: int, check: str, speedup) -> bool | None:
    """The target applies to the LeNet/CIFAR convolutions at TARGET_THREADS; a wrong result never meets it."""
    if case.flops is None or threads != TARGET_THREADS or case.shape not in TARGET_SHAPE_LABELS:
        return None
    return check == "ok" and speedup is not None and speedup >= TARGET_SPEEDUP


def kernel_cases(args, rng, torch) -> list[Case]:
    shapes = QUICK_CONV_SHAPES if args.quick else CONV_SHAPES
    cases = []
    if "conv" in args.only:
        cases += [case for shape in shapes for case in conv_cases(shape, rng, torch)]
    if "pool" in args.only:
        cases += pool_cases(POOL_SHAPE, rng, torch)
    return cases


@contextmanager
def thread_count(threads: int, torch, threadpoolctl):
    """fastcnn, PyTorch and NumPy's BLAS all at `threads` threads while inside."""
    set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    with numpy_blas_threads(threadpoolctl, threads):
        yield


def run_kernels(cases: list[Case], args, rng, torch, threadpoolctl, report: dict) -> None:
    """Every case at each thread count in turn, back to back, so that a case's 2-thread speedup divides two times
    taken seconds apart: measured all 1-thread cases first, minutes apart, this VM's drift (10-30% over minutes,
    and moments when its second core runs slow for everyone) went into the speedup. Rows are reported by thread
    count, as before."""
    if "conv" in args.only:
        for threads in args.threads:
            with thread_count(threads, torch, threadpoolctl):
                peak = sgemm_peak_gflops(rng, args.repeats)
            report["sgemm_peak_gflops"][str(threads)] = peak
            log(f"[{threads} thread(s)] sgemm peak {peak:.1f} GFLOP/s")
    rows: dict[int, list] = {threads: [] for threads in args.threads}
    for case in cases:
        for threads in args.threads:
            with thread_count(threads, torch, threadpoolctl):
                row = run_case(case, threads, args.repeats, report["sgemm_peak_gflops"].get(str(threads)))
            rows[threads].append(row)
            log(f"[{threads} thread(s)] {case.op}, {case.shape}: " + ", ".join(
                f"{name} {format_ms(t)} ms" for name, t in row["ms"].items() if t is not None))
    for threads in args.threads:
        report["results"] += rows[threads]


def run_library_sections(threads: int, args, torch, report: dict) -> None:
    """Training throughput of both workloads and LeNet-5's inference, at the current thread count."""
    quick = args.quick
    if "train" in args.only:
        epochs = _bench_training.QUICK_TIMED_EPOCHS if quick else _bench_training.TIMED_EPOCHS
        for workload in _bench_training.WORKLOADS.values():
            images = args.train_images or (_bench_training.QUICK_TRAIN_IMAGES if quick else workload.images)
            report["training"].append(
                _bench_training.measure_training(workload, threads, images, epochs, args.seed, torch))
    if "infer" in args.only:
        calls = _bench_training.QUICK_INFERENCE_CALLS if quick else _bench_training.INFERENCE_CALLS
        for batch_size in _bench_training.INFERENCE_BATCH_SIZES:
            report["inference"].append(_bench_training.measure_inference(
                _bench_training.WORKLOADS["lenet5"], batch_size, threads, calls[batch_size], args.seed, torch))


def run_memory(args, torch) -> list[dict]:
    """Each library's training memory in fresh processes, at the largest thread count asked for.

    --quick measures LeNet-5 only: every PyTorch child spends seconds importing torch.
    """
    steps = _bench_memory.QUICK_STEPS if args.quick else _bench_memory.STEPS
    models = ("lenet5",) if args.quick else tuple(_bench_training.WORKLOADS)
    libraries = ("fastcnn",) if torch is None else ("fastcnn", "torch")
    return [_bench_memory.measure_memory(library, model, _bench_training.BATCH_SIZE, steps, max(args.threads),
                                         args.seed)
            for model in models for library in libraries]


def run_benchmark(args, torch, threadpoolctl) -> dict:
    allocator = "the system's, as is (--system-malloc)" if args.system_malloc else keep_freed_memory()
    rng = np.random.default_rng(args.seed)
    cases = kernel_cases(args, rng, torch)
    report = {"environment": describe_environment(torch, threadpoolctl, args.threads, args.repeats, allocator),
              "sections": list(args.only), "sgemm_peak_gflops": {}, "results": [], "training": [],
              "inference": []}
    # The kernels at every thread count first, then the whole-library sections: after the 1-thread inference
    # section, fastcnn's 2-thread kernels measured 20-40% slower in some states of this VM (with builds that
    # measured normally otherwise), which the 2-thread speedups then reported as the kernels' own.
    run_kernels(cases, args, rng, torch, threadpoolctl, report)
    for threads in args.threads:
        with thread_count(threads, torch, threadpoolctl):
            run_library_sections(threads, args, torch, report)
    report["two_thread_speedup"] = two_thread_speedups(report["results"])
    report["pool_forward_backward"] = pool_forward_backward(report["results"])
    if "memory" in args.only:
        report["memory"] = run_memory(args, torch)
        report["memory_verdicts"] = judge_memory(report["memory"])
    return report


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


def section_names(text: str) -> tuple[str, ...]:
    """Comma-separated names from SECTIONS, returned in SECTIONS' order (the order they run in)."""
    names = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(names - set(SECTIONS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated sections from {','.join(SECTIONS)}; got "
                                         f"{text!r}" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return tuple(name for name in SECTIONS if name in names)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr, as every fastcnn command reports one, with status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(prog: str = "fastcnn bench") -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=prog,
        description="Time fastcnn against its NumPy reference and PyTorch (when installed), side by side: the "
                    "conv2d and pooling kernels, training throughput, inference latency and training memory.",
    )
    parser.add_argument("--threads", type=thread_counts, default=(1, 2), metavar="N[,N...]",
                        help="thread counts to measure at (default: 1,2)")
    parser.add_argument("--only", type=section_names, default=SECTIONS, metavar="SECTION[,SECTION...]",
                        help=f"run only these sections, from {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help=f"timed calls per kernel figure, after a warm-up; the median is reported "
                             f"(default: {DEFAULT_REPEATS}, or {QUICK_REPEATS} with --quick)")
    parser.add_argument("--train-images", type=positive_int, default=None, metavar="N",
                        help="images per timed training epoch (default: "
                             + ", ".join(f"{w.images} for {w.name}" for w in _bench_training.WORKLOADS.values())
                             + f"; {_bench_training.QUICK_TRAIN_IMAGES} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_REPEATS} repeats, {len(QUICK_CONV_SHAPES)} of the "
                             f"{len(CONV_SHAPES)} convolution shapes, one short training epoch, fewer inference "
                             "calls, LeNet-5's memory only")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc's malloc as it is; by default the benchmark has it keep freed memory, so "
                             "that neither library's times include page faults on fresh outputs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the report as markdown")
    parser.add_argument("--plot", metavar="PATH",
                        help="also draw fastcnn/PyTorch speed ratios as a PNG (needs matplotlib: fastcnn[viz])")
    return parser


def check_thread_counts(threads) -> None:
    """Fail before a long run, not in the middle of it, on a count fastcnn refuses (ValueError)."""
    for n in threads:
        set_num_threads(n)
        if n > usable_cores():
            log(f"warning: {n} threads on {usable_cores()} usable cores: threads wait for each other at every "
                "barrier, so these times say little about the kernels")


def main(argv: list[str] | None = None, prog: str = "fastcnn bench") -> int:
    """Run the benchmark with command-line arguments `argv` (default: sys.argv[1:]); returns the exit status."""
    parser = build_parser(prog)
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
            parser.error(str(error))  # exits with status 2 and one line
        report = run_benchmark(args, torch, threadpoolctl)
    finally:  # main may run inside a longer-lived process: leave its thread settings as they were
        set_num_threads(fastcnn_threads)
        if torch is not None:
            torch.set_num_threads(torch_threads)
    if args.plot:
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        report["plot"] = save_ratio_chart(report, args.plot)
        log(report["plot"])
    text = render_markdown(report)
    print(text)
    if args.markdown:
        write_atomically(args.markdown, text)
    if args.json:
        write_atomically(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

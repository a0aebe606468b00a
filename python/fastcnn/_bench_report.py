"""The report of `fastcnn.bench`: markdown tables in which a wrong or failing fastcnn row shows no speedup, the
page around them, and files written atomically. `fastcnn.bench` re-exports every name here.
"""
from __future__ import annotations

import os

from ._bench_cases import (
    ATOL_OF_SCALE,
    IMPLEMENTATIONS,
    RTOL,
    SGEMM_SIZE,
    TARGET_SPEEDUP,
    TARGET_THREADS,
    WARM_UP_SECONDS,
)
from ._atomic import write_text


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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text(path, text)

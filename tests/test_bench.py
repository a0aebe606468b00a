"""`fastcnn bench` end to end, as a user runs it: the quick benchmark writes a report whose every section has the
expected structure and positive, finite figures; a wrong fastcnn result is marked WRONG and never shows a ratio or
meets a target; bad arguments exit 2 with one line. Correctness only: nothing here asserts a speed.
"""
import contextlib
import importlib.util
import io
import json
import math
import platform
import subprocess
import sys

import numpy as np
import pytest

import fastcnn
from fastcnn import _bench_measure, _bench_memory, _bench_plot, _bench_report, _bench_targets, _bench_training, bench, cli

TORCH = importlib.util.find_spec("torch") is not None
MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
IMPLEMENTATIONS = ("fastcnn", "reference", "torch") if TORCH else ("fastcnn", "reference")
LIBRARIES = ("fastcnn", "torch") if TORCH else ("fastcnn",)


def positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run of every section at 1 thread through `python -m fastcnn.bench`, with every output file."""
    folder = tmp_path_factory.mktemp("bench")
    paths = {name: folder / f"bench.{name}" for name in ("json", "md", "png")}
    run = subprocess.run(
        [sys.executable, "-m", "fastcnn.bench", "--quick", "--threads", "1", "--train-images", "128",
         "--json", str(paths["json"]), "--markdown", str(paths["md"]), "--plot", str(paths["png"])],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(paths["json"].read_text()), paths["md"].read_text(), paths["png"], run.stdout


def test_quick_run_describes_the_machine_and_versions(quick_run):
    report, markdown, _, stdout = quick_run
    env = report["environment"]
    assert env["threads"] == [1] and env["fastcnn"] == fastcnn.__version__ and env["cores"]["usable"] >= 1
    assert report["sections"] == list(bench.SECTIONS)
    for fragment in ("- date: ", "- machine: ", "- versions: fastcnn", "- threads: 1",
                     f"- memory allocator: {env['allocator']}"):
        assert fragment in markdown
    if platform.libc_ver()[0] == "glibc":  # both libraries' fresh outputs reuse freed pages, not page faults
        assert env["allocator"].startswith("glibc malloc keeping freed memory"), env["allocator"]
    assert stdout.strip() == markdown.strip()  # the report on stdout is the one written to the file


def test_quick_run_kernel_rows_are_checked_timed_and_judged(quick_run):
    report, markdown, _, _ = quick_run
    assert positive_finite(report["sgemm_peak_gflops"]["1"])
    conv = [row for row in report["results"] if "gflops" in row]
    pool = [row for row in report["results"] if "gflops" not in row]
    assert len(conv) == 3 * len(bench.QUICK_CONV_SHAPES) and len(pool) == 4
    for row in report["results"]:
        assert row["check"]["fastcnn"] == "ok", row
        assert all(positive_finite(row["ms"][name]) for name in IMPLEMENTATIONS), row
        assert positive_finite(row["speedup_vs_reference"])
    for row in conv:
        assert positive_finite(row["percent_of_sgemm_peak"]["fastcnn"])
        # Both issues state their targets at 2 threads: a 1-thread row gets neither target nor verdict.
        assert row["issue_target"] is None and row["meets_issue_target"] is None
        assert row["meets_target"] is None
    for cells in markdown_rows(markdown, "conv2d forward", "## Convolution"):
        assert cells[2] == "1" and cells[-3:] == ["-", "-", "-"]  # target 3x ref met, issue 6 target, issue 6 met
    summaries = report["pool_forward_backward"]
    assert [summary["kind"] for summary in summaries] == ["max_pool2d", "avg_pool2d"]
    assert all(positive_finite(summary["ms"]["fastcnn"]) for summary in summaries)
    assert all(summary["target"] is None and summary["meets_target"] is None for summary in summaries)
    assert "issue 6 targets are stated at 2 threads, so only rows measured at 2 threads are judged" in markdown
    assert report["two_thread_speedup"] == []  # one thread count measured: nothing to divide
    for heading in ("## Convolution", "issue 6 target", "target 3x ref", "### 2-thread speedup", "(not measured",
                    "## Pooling", "### Forward + backward"):
        assert heading in markdown


def test_quick_run_trains_and_infers_in_both_libraries(quick_run):
    report, markdown, _, _ = quick_run
    assert [row["model"] for row in report["training"]] == list(_bench_training.WORKLOADS)
    for row in report["training"]:
        assert row["images"] == 128 and row["batch_size"] == 64 and row["check"] == ("ok" if TORCH else "unchecked")
        for library in LIBRARIES:
            assert positive_finite(row["images_per_second"][library])
            assert all(positive_finite(seconds) for seconds in row["epoch_seconds"][library])
            assert positive_finite(row["final_loss"][library])
        assert row["target"] is None and row["meets_target"] is None  # judged at 2 threads only
    assert [row["batch_size"] for row in report["inference"]] == list(_bench_training.INFERENCE_BATCH_SIZES)
    for row in report["inference"]:
        assert len(row["paths"]) == (3 if TORCH else 2)
        for path in row["paths"].values():
            assert positive_finite(path["median_us"]) and positive_finite(path["images_per_second"])
            assert path["check"] == ("ok" if TORCH else "unchecked")
        assert row["fastest_fastcnn_path"] in row["paths"]
    assert all(row["target_us"] is None and row["meets_target"] is None for row in report["inference"])
    assert "## Training throughput" in markdown and "## Inference" in markdown


def test_quick_run_measures_memory_in_fresh_processes(quick_run):
    report, markdown, _, _ = quick_run
    assert [(row["model"], row["library"]) for row in report["memory"]] == [("lenet5", lib) for lib in LIBRARIES]
    for row in report["memory"]:
        assert "error" not in row, row
        assert positive_finite(row["baseline_mib"]) and positive_finite(row["peak_mib"])
        # the peak is reset to the current size after the baseline, so it cannot fall below it
        assert row["training_mib"] >= 0 and row["peak_mib"] >= row["baseline_mib"]
    verdict = report["memory_verdicts"][0]
    assert verdict["model"] == "lenet5" and verdict["meets_target"] in ((True, False) if TORCH else (None,))
    assert "## Training peak memory" in markdown


def test_quick_run_draws_the_ratio_plot_or_says_why_not(quick_run):
    report, markdown, png, _ = quick_run
    if MATPLOTLIB and TORCH:
        assert report["plot"] == f"plot: {png}" and png.read_bytes().startswith(b"\x89PNG")
    else:
        assert report["plot"].startswith("plot skipped") and not png.exists()
    assert report["plot"] in markdown


# ------------------------------------------------------------------------------------------------ WRONG results

def run_bench(argv):
    """(exit status, stdout, stderr) of `fastcnn bench --system-malloc ...` in this process (whose allocator the
    other tests expect as it is)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["bench", "--system-malloc", *argv])
    return status, out.getvalue(), err.getvalue()


def markdown_rows(markdown: str, first_cell: str, section: str = "") -> list[list[str]]:
    """The cells of the table rows starting with `first_cell`, in the part of the page under heading `section`."""
    if section:
        markdown = markdown.split(f"\n{section}\n", 1)[1].split("\n## ", 1)[0]
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in markdown.splitlines() if line.startswith(f"| {first_cell} |")]


def test_a_wrong_convolution_is_marked_wrong_and_never_meets_a_target(monkeypatch, tmp_path):
    correct = fastcnn.functional.conv2d
    monkeypatch.setattr(fastcnn.functional, "conv2d", lambda *args, **kwargs: correct(*args, **kwargs) + 1.0)
    # At 2 threads, where the targets are judged.
    status, markdown, _ = run_bench(["--quick", "--threads", "2", "--only", "conv", "--json", str(tmp_path / "r.json")])
    assert status == 0
    assert "- memory allocator: the system's, as is (--system-malloc)" in markdown
    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    forward = [row for row in rows if row["op"] == "conv2d forward"]
    assert forward and all(row["check"]["fastcnn"] == "WRONG" and row["meets_issue_target"] is False
                           for row in forward)
    assert all(row["check"]["fastcnn"] == "ok" for row in rows if row["op"] != "conv2d forward")
    for cells in markdown_rows(markdown, "conv2d forward"):
        # GFLOP/s, % peak, vs reference and vs torch all give way to WRONG; the verdict is "no"
        assert cells[6] == cells[7] == cells[9] == cells[10] == cells[11] == "WRONG" and cells[-1] == "no"


def test_a_model_that_computes_something_else_gets_no_training_or_inference_ratio(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    correct = fastcnn.nn.Linear.forward
    monkeypatch.setattr(fastcnn.nn.Linear, "forward", lambda self, x: correct(self, x) + 1.0)
    status, markdown, _ = run_bench(["--quick", "--threads", "2", "--only", "train,infer", "--train-images", "64",
                                     "--json", str(tmp_path / "r.json")])
    assert status == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["results"] == [] and "memory" not in report and "## Convolution" not in markdown
    assert all(row["check"] == "WRONG" and row["meets_target"] is False for row in report["training"])
    for row in report["inference"]:
        assert all(path["check"] == "WRONG" for name, path in row["paths"].items() if name.startswith("fastcnn"))
        assert row["fastest_fastcnn_path"] is None and row["speedup_vs_torch"] is None
    assert report["inference"][0]["meets_target"] is False
    training_rows = markdown_rows(markdown, "lenet5", "## Training throughput")
    assert training_rows and all(cells[5] == "WRONG" and cells[-1] == "no" for cells in training_rows)


# ------------------------------------------------------------------------------------------ arguments and logic

@pytest.mark.parametrize("argv, fragment", [
    (["--only", "conv,nope"], "argument --only: expected comma-separated sections from conv,pool,train,infer,"
                              "memory; got 'conv,nope' (unknown: nope)"),
    (["--only", ","], "argument --only"),
    (["--threads", "0"], "argument --threads: expected a positive int; got 0"),
    (["--train-images", "0"], "argument --train-images: expected a positive int; got 0"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_arguments_exit_2_with_one_line(argv, fragment):
    status, out, err = run_bench(argv)
    assert status == 2 and out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastcnn bench: error: ") and fragment in lines[0], err


def conv_row(check="ok", torch=None, reference=None, peak=None, shape=None, threads=2, op="conv2d forward", ms=None):
    return {"op": op, "shape": shape or bench.CONV_SHAPES[5].label(), "threads": threads, "check": {"fastcnn": check},
            "speedup_vs_torch": torch, "speedup_vs_reference": reference, "gflops": {},
            "percent_of_sgemm_peak": {"fastcnn": peak}, "ms": ms or {"fastcnn": 1.0, "torch": 1.0}}


def test_conv_targets_need_every_figure_and_a_correct_result():
    judged = [conv_row(torch=0.7, reference=2.5, peak=80), conv_row(torch=0.7, reference=2.5, peak=70),
              conv_row(torch=None, reference=2.5, peak=80), conv_row(torch=None, reference=1.0, peak=80),
              conv_row("WRONG", torch=9.0, reference=9.0, peak=99)]
    for each in judged:
        _bench_targets.judge_conv_row(each)
    assert [each["meets_issue_target"] for each in judged] == [True, False, None, False, False]
    first = conv_row(torch=1.0, reference=5.0, shape=bench.CONV_SHAPES[0].label())
    _bench_targets.judge_conv_row(first)  # no peak target on the small shapes
    assert first["meets_issue_target"] is True and first["issue_target"] == ">=1.0x torch, >=5x ref"
    assert set(_bench_targets.LARGEST_SHAPE_LABELS) == {shape.label() for shape in bench.CONV_SHAPES[3:]}


@pytest.mark.parametrize("threads", [1, 3])
def test_issue_targets_are_judged_at_2_threads_only(threads):
    # The issue: "Targets (2 threads, this machine, measured against PyTorch in the same run)".
    for row in (conv_row(torch=9.0, reference=9.0, peak=99, threads=threads),
                conv_row("WRONG", torch=0.1, reference=0.1, peak=1, threads=threads)):
        _bench_targets.judge_conv_row(row)
        assert row["issue_target"] is None and row["meets_issue_target"] is None
        timed = {**row, "ms": {name: 1.0 for name in bench.IMPLEMENTATIONS}, "gflops": {"fastcnn": 1.0, "torch": 1.0},
                 "meets_target": None}
        assert _bench_report.conv_table([timed]).splitlines()[-1].endswith("| - | - | - |")
    pool = [{"op": op, "shape": "s", "threads": threads, "check": {"fastcnn": "ok"},
             "ms": {"fastcnn": 1.0, "torch": 9.0}} for op in ("max_pool2d forward (+indices)", "max_pool2d backward")]
    (summary,) = _bench_targets.pool_forward_backward(pool)
    assert summary["speedup_vs_torch"] == 9.0 and summary["target"] is None and summary["meets_target"] is None
    fast = {"fastcnn model(x), no_grad": {"median_us": 1.0, "check": "ok"}}
    row = {"batch_size": 1, "threads": threads, "paths": fast}
    _bench_training.add_inference_verdicts(row)
    assert row["target_us"] is None and row["meets_target"] is None


@pytest.mark.parametrize("check, met, cell", [("ok", True, "yes"), ("WRONG", False, "no"), ("unchecked", None, "?")])
def test_batch_1_inference_verdict_at_2_threads_needs_a_checked_path(check, met, cell):
    # Unchecked (no PyTorch to compare with) can tell nothing, as an unchecked training row.
    row = {"model": "lenet5", "batch_size": 1, "threads": 2,
           "paths": {"fastcnn model(x), no_grad": {"median_us": 1.0, "images_per_second": 1e6, "check": check}}}
    _bench_training.add_inference_verdicts(row)
    assert row["target_us"] == _bench_targets.BATCH1_LATENCY_TARGET_US and row["meets_target"] is met
    assert _bench_report.inference_table([row]).splitlines()[-1].endswith(f"| <=60 us | {cell} |")


@pytest.mark.parametrize("printed", ["", "not json\n", "[1, 2]\n"])
def test_a_memory_child_that_exits_0_without_a_json_row_gives_an_error_row(monkeypatch, tmp_path, printed):
    # A real child process standing in for the Python interpreter: it exits 0 after printing `printed`.
    child = tmp_path / "child.sh"
    child.write_text(f"#!/bin/sh\nprintf '{printed}'\nexit 0\n")
    child.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(child))
    row = _bench_memory.measure_memory("fastcnn", "lenet5", 64, 3, 1, 0)
    assert row["error"].startswith("exit status 0 but printed "), row
    assert row["model"] == "lenet5" and "training_mib" not in row
    assert "ERROR: exit status 0 but printed" in _bench_report.memory_table([row], _bench_targets.judge_memory([row]))


def test_two_thread_speedup_and_pooling_sums_are_derived_from_the_rows():
    big = bench.CONV_SHAPES[4].label()
    small = bench.CONV_SHAPES[0].label()
    rows = [conv_row(shape=big, threads=1, ms={"fastcnn": 4.0, "torch": 3.0}),
            conv_row(shape=big, threads=2, ms={"fastcnn": 2.0, "torch": 2.0}),
            conv_row(shape=small, threads=1), conv_row(shape=small, threads=2)]
    (speedup,) = _bench_targets.two_thread_speedups(rows)
    assert (speedup["fastcnn"], speedup["torch"], speedup["meets_target"]) == (2.0, 1.5, True)
    pool = []
    for op, fastcnn_ms, check in (("max_pool2d forward (+indices)", 1.0, "ok"), ("max_pool2d backward", 1.0, "ok"),
                                  ("avg_pool2d forward", 1.0, "ok"), ("avg_pool2d backward", 1.0, "WRONG")):
        pool.append({"op": op, "shape": "s", "threads": 2, "check": {"fastcnn": check},
                     "ms": {"fastcnn": fastcnn_ms, "torch": 4.0}})
    max_pool, avg_pool = _bench_targets.pool_forward_backward(pool)
    assert (max_pool["ms"]["fastcnn"], max_pool["speedup_vs_torch"], max_pool["meets_target"]) == (2.0, 4.0, True)
    assert avg_pool["check"] == "WRONG" and avg_pool["meets_target"] is False
    memory = [{"model": "m", "library": "fastcnn", "training_mib": 5.0}, {"model": "m", "library": "torch",
                                                                          "training_mib": 4.0}]
    assert _bench_targets.judge_memory(memory)[0]["meets_target"] is False


def test_the_plot_leaves_out_wrong_results():
    report = {"results": [conv_row(torch=2.0), conv_row("WRONG", torch=9.0)], "training": [
        {"model": "lenet5", "threads": 1, "check": "WRONG", "speedup_vs_torch": 3.0}]}
    assert [ratio for _, ratio in _bench_plot.ratio_bars(report)] == [2.0]


def test_the_torch_copy_of_each_workload_computes_the_same_logits():
    torch = pytest.importorskip("torch")
    for workload in _bench_training.WORKLOADS.values():
        model = workload.build(0)
        images, _ = _bench_training.synthetic_data(workload.image_shape, 4, 0)
        assert _bench_training.forward_check(model, _bench_training.torch_model_like(model, torch), torch,
                                             images) == "ok"
        assert sum(p.numel() for p in _bench_training.torch_model_like(model, torch).parameters()) \
            == model.num_parameters()
    with pytest.raises(ValueError, match="no PyTorch equivalent for layer 0"):
        _bench_training.torch_model_like(fastcnn.nn.Sequential(fastcnn.nn.Tanh()), torch)
    assert np.isfinite(_bench_training.synthetic_data((1, 2, 2), 3, 0)[0]).all()


def test_each_kernel_case_is_measured_at_every_thread_count_back_to_back(monkeypatch):
    """A case's 1-thread and 2-thread times are taken one right after the other (this VM drifts over minutes), and the
    report still lists the rows by thread count. The calls record the thread count each ran at."""
    ran = []

    def case(name):
        def call():
            ran.append((name, fastcnn.get_num_threads()))
            return np.zeros(3, np.float32)
        return bench.Case(op=name, shape="s", flops=None, calls={"fastcnn": call, "reference": call})

    monkeypatch.setattr(_bench_measure, "WARM_UP_SECONDS", 0.0)  # one untimed call, then the timed one
    args = bench.build_parser().parse_args(["--threads", "1,2", "--only", "pool", "--repeats", "1"])
    report = {"sgemm_peak_gflops": {}, "results": []}
    before = fastcnn.get_num_threads()
    try:
        bench.run_kernels([case("a"), case("b")], args, np.random.default_rng(0), None, None, report)
    finally:
        fastcnn.set_num_threads(before)
    order = [key for i, key in enumerate(ran) if i == 0 or ran[i - 1] != key]  # runs of calls, in order
    assert order == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert [(row["op"], row["threads"]) for row in report["results"]] == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]

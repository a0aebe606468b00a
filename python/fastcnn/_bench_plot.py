"""The benchmark's picture: one bar per measured figure, fastcnn's speed over PyTorch's (right of 1: fastcnn faster).

matplotlib is optional (the `viz` extra); without it the report says the plot was skipped and why.
"""
from __future__ import annotations

from ._atomic import atomic_file

SKIPPED_WITHOUT_MATPLOTLIB = "plot skipped: matplotlib is not installed (pip install 'fastcnn[viz]')"
SKIPPED_WITHOUT_RATIOS = "plot skipped: no fastcnn/PyTorch ratios to draw (is PyTorch installed?)"


def ratio_bars(report: dict) -> list[tuple[str, float]]:
    """(label, fastcnn speed / PyTorch speed) for every figure that has both and whose fastcnn result is correct."""
    bars = []
    for row in report.get("results", []):
        if row["check"]["fastcnn"] == "ok" and row["speedup_vs_torch"] is not None:
            short_op = row["op"].replace("conv2d ", "").replace(" (+indices)", "")
            bars.append((f"{short_op}, {row['shape']}, {row['threads']}t", row["speedup_vs_torch"]))
    for row in report.get("pool_forward_backward", []):
        if row["check"] == "ok" and row["speedup_vs_torch"] is not None:
            bars.append((f"{row['kind']} fwd+bwd, {row['threads']}t", row["speedup_vs_torch"]))
    for row in report.get("training", []):
        if row["check"] != "WRONG" and row["speedup_vs_torch"] is not None:
            bars.append((f"training {row['model']}, {row['threads']}t", row["speedup_vs_torch"]))
    for row in report.get("inference", []):
        if row["speedup_vs_torch"] is not None:
            bars.append((f"inference {row['model']} batch {row['batch_size']}, {row['threads']}t",
                         row["speedup_vs_torch"]))
    return bars


def save_ratio_chart(report: dict, path: str) -> str:
    """Draw `ratio_bars(report)` as a PNG at `path` (written atomically); returns a line for the report."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend needed
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        return SKIPPED_WITHOUT_MATPLOTLIB
    bars = ratio_bars(report)
    if not bars:
        return SKIPPED_WITHOUT_RATIOS
    labels, ratios = zip(*bars)
    figure = Figure(figsize=(9, 1.2 + 0.22 * len(bars)), layout="constrained")
    axes = figure.subplots()
    positions = range(len(bars))
    axes.barh(positions, ratios, color=["tab:green" if r >= 1 else "tab:red" for r in ratios])
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_yticks(list(positions), labels, fontsize=7)
    axes.invert_yaxis()  # the report's order, top to bottom
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("fastcnn speed / PyTorch speed (log scale; > 1: fastcnn faster)")
    axes.set_title(f"fastcnn vs PyTorch {report['environment']['torch']}, {report['environment']['cpu']}",
                   fontsize=9)
    with atomic_file(path, suffix=".png") as file:
        figure.savefig(file, format="png", dpi=120)
    return f"plot: {path}"

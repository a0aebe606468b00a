"""Peak memory of training, each library in a fresh process of its own: `python -m fastcnn._bench_memory ...`.

A fresh process per (library, model) keeps one library's allocator caches, thread pools and imported modules out of
the other's figure. The child imports what it needs (PyTorch only for PyTorch), builds the data, and only then
reads its resident memory (the baseline); then it builds the model and optimizer and trains `steps` batches, with
`fastcnn.fit` or PyTorch's plain loop as the training section does, and reads the peak resident memory. The figure
is peak minus baseline: what training itself added, parameters, gradients, optimizer state, activations, kernel
workspaces and the libraries' lazily built state included.

On Linux the peak (VmHWM) is reset to the current size right after the baseline by writing 5 to
/proc/self/clear_refs, so memory that importing briefly used is not counted; where that is not possible the peak is
ru_maxrss, which may include it (the row says which).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

from ._bench_measure import log

STEPS = 10
QUICK_STEPS = 3
CHILD_TIMEOUT_SECONDS = 600


# ----------------------------------------------------------------------------------------------------------------
# In the parent: one child per (library, model)
# ----------------------------------------------------------------------------------------------------------------
def measure_memory(library: str, model: str, batch_size: int, steps: int, threads: int, seed: int) -> dict:
    """The child's JSON row, or a row with an "error" when it failed (the report shows it; the run goes on)."""
    command = [sys.executable, "-m", "fastcnn._bench_memory", "--library", library, "--model", model,
               "--batch-size", str(batch_size), "--steps", str(steps), "--threads", str(threads), "--seed", str(seed)]
    row = {"library": library, "model": model, "batch_size": batch_size, "steps": steps, "threads": threads}
    try:
        child = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timed out after {CHILD_TIMEOUT_SECONDS} s"}
    if child.returncode != 0:
        last_line = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
        return {**row, "error": last_line}
    lines = child.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict) or not isinstance(result.get("training_mib"), (int, float)):
        shown = repr(lines[-1][:200]) if lines else "nothing"
        return {**row, "error": f"exit status 0 but printed {shown}, not a JSON row with training_mib"}
    log(f"[{threads} thread(s)] training memory {model}, {library}: {result['training_mib']:.1f} MiB")
    return {**row, **result}


# ----------------------------------------------------------------------------------------------------------------
# In the child
# ----------------------------------------------------------------------------------------------------------------
def status_kib(field: str) -> int | None:
    """A "VmRSS"/"VmHWM" line of /proc/self/status in KiB, or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Make the kernel's peak-RSS mark (VmHWM) the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return status_kib("VmHWM") is not None


def max_rss_kib() -> int:
    """ru_maxrss in KiB (macOS reports bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def train_fastcnn(model, images, labels, seed: int) -> float:
    from . import _bench_training

    return _bench_training.fastcnn_epoch(model, _bench_training.fastcnn_optimizer(model), images, labels, seed)[1]


def train_torch(torch, model, images, labels, seed: int) -> float:
    from . import _bench_training

    optimizer = _bench_training.torch_optimizer(torch, model)
    generator = torch.Generator().manual_seed(seed)
    return _bench_training.torch_epoch(torch, model, optimizer, images, labels, generator)[1]


def child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastcnn._bench_memory",
                                     description="Peak memory of a few training steps (fastcnn.bench's child).")
    parser.add_argument("--library", choices=("fastcnn", "torch"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import numpy as np

    from . import _bench_training, set_num_threads

    torch = None
    if args.library == "torch":
        import torch

        torch.set_num_threads(args.threads)
    set_num_threads(args.threads)
    workload = _bench_training.WORKLOADS[args.model]
    images, labels = _bench_training.synthetic_data(workload.image_shape, args.batch_size * args.steps, args.seed)
    # PyTorch's copy is made from fastcnn's model; that template is built before the baseline, so each library's
    # figure counts only its own parameters.
    template = workload.build(args.seed) if torch is not None else None

    baseline_kib = status_kib("VmRSS") or max_rss_kib()
    peak_was_reset = reset_peak_rss()
    if torch is None:
        loss = train_fastcnn(workload.build(args.seed), images, labels, args.seed)
    else:
        model = _bench_training.torch_model_like(template, torch)
        loss = train_torch(torch, model, torch.from_numpy(images), torch.from_numpy(labels), args.seed)
    peak_kib = status_kib("VmHWM") if peak_was_reset else max_rss_kib()

    print(json.dumps({
        "baseline_mib": baseline_kib / 1024, "peak_mib": peak_kib / 1024,
        "training_mib": (peak_kib - baseline_kib) / 1024,
        "method": "VmHWM reset after the baseline" if peak_was_reset else "ru_maxrss (may include import peaks)",
        "final_loss": float(loss), "numpy": np.__version__,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main())

"""fastcnn's core benchmark: conv2d and pooling, forward and backward, against the NumPy reference and PyTorch.

A thin wrapper over `fastcnn.bench` (the same code runs as `python -m fastcnn.bench`), so that an installed fastcnn
benchmarks itself. From the repository root, with fastcnn installed (`pip install .`; PyTorch and threadpoolctl are
used when installed):

    python benchmarks/bench_core.py --markdown benchmarks/results/core.md --json benchmarks/results/core.json

Options: --threads 1,2 (thread counts), --repeats 7 (timed calls per figure; the median is reported), --quick (a
smoke run: 2 repeats and fewer shapes), --seed 0; --help lists them. Run the full benchmark on an otherwise idle
machine: every core is in use and other work shows up in the times.
"""
from fastcnn.bench import main

if __name__ == "__main__":
    raise SystemExit(main())

"""fastcnn's benchmark: conv2d and pooling kernels against the NumPy reference and PyTorch, then the whole library
(training throughput, inference latency and throughput, training peak memory) against PyTorch.

A thin wrapper over `fastcnn.bench` (the same code runs as `fastcnn bench` and `python -m fastcnn.bench`), so that an
installed fastcnn benchmarks itself. From the repository root, with fastcnn installed (`pip install .`; PyTorch,
threadpoolctl and matplotlib are used when installed):

    python benchmarks/bench_core.py --markdown benchmarks/results/core.md --json benchmarks/results/core.json \
        --plot benchmarks/results/core.png

Options: --only conv,pool,train,infer,memory (sections; default: all), --threads 1,2 (thread counts), --repeats 7
(timed calls per kernel figure; the median is reported), --train-images N, --quick (a smoke run, well under a
minute), --seed 0; --help lists them. Run the full benchmark on an otherwise idle machine: every core is in use and
other work shows up in the times.
"""
from fastcnn.bench import main

if __name__ == "__main__":
    raise SystemExit(main(prog="bench_core.py"))

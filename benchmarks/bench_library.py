"""fastcnn against PyTorch as a user meets them: training throughput (LeNet-5 and a small CIFAR-style net), LeNet-5
inference latency at batch 1 and throughput at batch 256, and training peak memory, each library in its own process.

A thin wrapper over `fastcnn bench --only train,infer,memory` (another --only given here replaces it). From the
repository root, with fastcnn and PyTorch installed (`pip install ".[bench,viz]"`):

    python benchmarks/bench_library.py --markdown benchmarks/results/library.md \
        --json benchmarks/results/library.json --plot benchmarks/results/library.png

Options as for bench_core.py (--threads, --train-images, --quick, --seed; --help lists them).
"""
import sys

from fastcnn.bench import main

if __name__ == "__main__":
    raise SystemExit(main(["--only", "train,infer,memory", *sys.argv[1:]], prog="bench_library.py"))

"""Measure what data parallelism costs here: `mpiexec -n N python -m fastcnn.distributed.timing`.

Prints, on rank 0, the time of one gradient Allreduce (the call `fit` makes every step) for LeNet-5's 61,706
parameters and for 1M parameters, and the time of one LeNet-5 training step (forward, backward, SGD update) on a
batch of 64 MNIST-sized images with this process's threads, so the communication/computation ratio of a step on
this machine or cluster can be read off (docs/distributed.md works it out for a cluster).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from ._comm import init
from ._parallel import GradientAverager

LENET5_PARAMETERS = 61_706


def _median_seconds(run, repeats: int, comm) -> float:
    """Median over repeats of the slowest rank's time (the step waits for it), after a warm-up call."""
    run()
    times = np.empty(repeats)
    for index in range(repeats):
        comm.barrier()
        started = time.perf_counter()
        run()
        times[index] = _slowest(time.perf_counter() - started, comm)
    return float(np.median(times))


def _slowest(seconds: float, comm) -> float:
    """The largest of every rank's `seconds`. The communicator only sums: each rank writes its time into its own
    slot of a zero vector, so the sum holds every rank's time and the maximum is read off it."""
    slots = np.zeros(comm.size)
    slots[comm.rank] = seconds
    comm.allreduce_(slots)
    return float(slots.max())


def _lenet_step_seconds(repeats: int, comm) -> float:
    from .. import manual_seed, models, nn, optim

    manual_seed(0)
    model = models.lenet5()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    rng = np.random.default_rng(comm.rank)
    x, y = rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64)

    def step():
        criterion(model(x), y)
        model.backward(criterion.backward(), input_grad=False)
        optimizer.step()
        optimizer.zero_grad()
    return _median_seconds(step, repeats, comm)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastcnn.distributed.timing", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per measurement (default: 50)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be an int >= 1; got {args.repeats}")
    comm = init()
    from .. import get_num_threads
    from ..nn import Parameter

    rows = []
    for label, count in (("LeNet-5", LENET5_PARAMETERS), ("1M", 1_000_000)):
        averager = GradientAverager([Parameter(np.zeros(count, np.float32))], comm)
        rows.append((label, count, _median_seconds(averager.average, args.repeats, comm)))
    step = _lenet_step_seconds(max(5, args.repeats // 5), comm)
    if comm.is_root:
        print(f"{comm.size} process(es), {get_num_threads()} kernel thread(s) each")
        for label, count, seconds in rows:
            print(f"allreduce {label:>8} ({count:>9,} float32, {count * 4 / 1e6:5.2f} MB): {seconds * 1e6:9.1f} us")
        print(f"LeNet-5 training step, batch 64 per process: {step * 1e3:.2f} ms; allreduce / step = "
              f"{rows[0][2] / step:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

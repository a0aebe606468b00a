"""Data-parallel training under a real `mpiexec` (MPICH from the `mpich` wheel, mpi4py): 2 and 3 ranks, one thread
each, against single-process training on the same global batches; TCP forced over loopback; the command line.

Each MPI run is a subprocess with a timeout, so a rank that hangs fails the test instead of the suite.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastcnn
from fastcnn import distributed as dist
from fastcnn import nn, optim

pytest.importorskip("mpi4py", reason="mpi4py is not installed: pip install \"fastcnn[mpi]\"")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("no mpiexec: pip install \"fastcnn[mpi]\" (the mpich wheel provides it)", allow_module_level=True)

TIMEOUT = 90  # seconds per launch; a run takes about one second on 2 idle cores
LOCAL_BATCH, STEPS_PER_EPOCH, EPOCHS, SEED = 4, 10, 2, 7  # 20 optimizer steps

# Force MPICH's network module (libfabric's tcp provider on the loopback interface) even between processes of one
# host: NOLOCAL makes every peer look remote, so no shared memory is used.
TCP_OVER_LOOPBACK = {"MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp", "FI_TCP_IFACE": "lo",
                     "MPIR_CVAR_NOLOCAL": "1"}

# The script every rank runs. It is what a user writes, plus files for the test to compare.
TRAIN_SCRIPT = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import fastcnn
    from fastcnn import distributed as dist, nn, optim

    out, samples, local_batch, epochs, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), \\
        int(sys.argv[5])
    comm = dist.init()
    rng = np.random.default_rng(0)
    x = rng.random((samples, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 3, samples)
    fastcnn.manual_seed(comm.rank)  # different initial weights on every rank: fit must broadcast rank 0's
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3))
    if comm.rank == 0:
        np.savez(os.path.join(out, "initial.npz"), **model.state_dict())
    history = fastcnn.fit(model, x, y, epochs=epochs, batch_size=local_batch, seed=seed, progress=False,
                          optimizer=optim.SGD(model.parameters(), lr=0.1, momentum=0.9), distributed=comm)

    def loopback_tcp_connections():
        """Established TCP connections of this process between two 127.0.0.1 endpoints (from /proc)."""
        sockets = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                sockets.add(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass
        count = 0
        with open("/proc/net/tcp") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if state == "01" and f"socket:[{inode}]" in sockets and local.startswith("0100007F:") \\
                        and remote.startswith("0100007F:"):
                    count += 1
        return count

    report = {"rank": comm.rank, "size": comm.size, "threads": fastcnn.get_num_threads(),
              "checksum": dist.parameter_checksum(model), "history": history.history,
              "tcp": loopback_tcp_connections()}
    with open(os.path.join(out, f"rank{comm.rank}.json"), "w") as file:
        json.dump(report, file)
    if comm.rank == 0:
        np.savez(os.path.join(out, "final.npz"), **model.state_dict())
''')


def _launch(ranks: int, script: Path, args, env_extra=None, python_args=("-m", "mpi4py"), env_remove=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    for name in env_remove:
        env.pop(name, None)
    command = [MPIEXEC, "-n", str(ranks), sys.executable, *python_args, str(script), *map(str, args)]
    try:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{' '.join(command)} did not finish in {TIMEOUT} s (a rank waiting forever?):\n"
                    f"{error.stdout}\n{error.stderr}")


def _train_on_ranks(tmp_path: Path, ranks: int, env_extra=None):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    samples = ranks * LOCAL_BATCH * STEPS_PER_EPOCH
    done = _launch(ranks, script, [tmp_path, samples, LOCAL_BATCH, EPOCHS, SEED], env_extra)
    assert done.returncode == 0, done.stdout + done.stderr
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(ranks)]
    return samples, reports, dict(np.load(tmp_path / "initial.npz")), dict(np.load(tmp_path / "final.npz"))


def _single_process_reference(initial: dict, samples: int, ranks: int):
    """One process trained on the global batches the ranks formed together: at every step the concatenation of
    each rank's local batch (shard_indices(...)[k * B:(k + 1) * B] for ranks 0, 1, ...)."""
    rng = np.random.default_rng(0)
    x = rng.random((samples, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 3, samples)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3))
    model.load_state_dict(initial)

    def global_batches():
        for epoch in range(EPOCHS):
            order = np.random.default_rng(SEED + epoch).permutation(samples)
            shards = [order[r::ranks] for r in range(ranks)]
            for step in range(STEPS_PER_EPOCH):
                index = np.concatenate([s[step * LOCAL_BATCH:(step + 1) * LOCAL_BATCH] for s in shards])
                yield x[index], y[index]

    history = fastcnn.fit(model, global_batches(), epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, progress=False,
                          optimizer=optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    return model.state_dict(), history.history


def _assert_matches_single_process(samples, reports, initial, final, ranks):
    assert {r["checksum"] for r in reports} == {reports[0]["checksum"]}, "ranks hold different weights"
    assert all(r["threads"] == 1 for r in reports)
    expected, history = _single_process_reference(initial, samples, ranks)
    assert set(final) == set(expected)
    for key in expected:
        # Not bitwise: each rank sums its own part of the batch, then the Allreduce adds the parts (measured: a few
        # float32 ulps, 2e-7 to 7e-7 of each tensor's norm after 20 steps).
        difference = np.linalg.norm(final[key] - expected[key]) / np.linalg.norm(expected[key])
        assert difference <= 1e-5, (key, difference)
        np.testing.assert_allclose(final[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert not np.allclose(final["0.weight"], initial["0.weight"], rtol=1e-3), "training changed nothing"
    np.testing.assert_allclose(reports[0]["history"]["loss"], history["loss"], rtol=1e-5)
    np.testing.assert_allclose(reports[0]["history"]["accuracy"], history["accuracy"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_train_the_same_weights_as_one_process(tmp_path, ranks):
    samples, reports, initial, final = _train_on_ranks(tmp_path, ranks)
    assert [r["rank"] for r in reports] == list(range(ranks)) and reports[0]["size"] == ranks
    _assert_matches_single_process(samples, reports, initial, final, ranks)
    # Between processes of one host MPICH uses shared memory, no TCP: the control for the test below.
    assert all(r["tcp"] == 0 for r in reports)


def test_training_over_tcp_on_loopback(tmp_path):
    samples, reports, initial, final = _train_on_ranks(tmp_path, 2, TCP_OVER_LOOPBACK)
    # The setting took effect: each rank holds an established 127.0.0.1 <-> 127.0.0.1 connection (to the other).
    assert all(r["tcp"] >= 1 for r in reports), [r["tcp"] for r in reports]
    _assert_matches_single_process(samples, reports, initial, final, 2)


FAILING_SCRIPT = textwrap.dedent('''
    import numpy as np
    from fastcnn import distributed as dist
    comm = dist.init()
    if comm.rank == 1:
        raise RuntimeError("rank 1 fails")
    comm.allreduce_(np.ones(4, np.float32))  # rank 0 would wait here for ever
''')


def test_an_error_on_one_rank_ends_every_rank(tmp_path):
    # Run as `python script.py`, not `python -m mpi4py`: init() itself makes an uncaught exception abort the launch.
    script = tmp_path / "fail.py"
    script.write_text(FAILING_SCRIPT)
    done = _launch(2, script, [], python_args=())
    assert done.returncode != 0
    assert "rank 1 fails" in done.stderr


STOP_SCRIPT = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import fastcnn
    from fastcnn import callbacks, distributed as dist, nn

    comm = dist.init()
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, 64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))

    batches = []

    def stop_on_rank_1(batch, logs):
        batches.append(batch)
        if comm.rank == 1 and batch == 2:
            model.stop_training = True

    history = fastcnn.fit(model, x, y, epochs=3, batch_size=4, seed=0, progress=False, distributed=comm,
                          callbacks=[callbacks.LambdaCallback(on_batch_end=stop_on_rank_1)])
    with open(os.path.join(sys.argv[1], f"rank{comm.rank}.json"), "w") as file:
        json.dump({"epochs": len(history.epoch), "batches": batches, "checksum": dist.parameter_checksum(model)},
                  file)
''')


def test_a_stop_requested_on_one_rank_stops_every_rank_together(tmp_path):
    script = tmp_path / "stop.py"
    script.write_text(STOP_SCRIPT)
    done = _launch(2, script, [tmp_path])
    assert done.returncode == 0, done.stdout + done.stderr
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # Rank 1 asked after batch 2; the request travelled with batch 3's gradients, so both ranks stopped after batch
    # 3 of the first epoch (of 8 batches, 3 epochs), which ends as the epoch a stopped fit records.
    assert [r["batches"] for r in reports] == [[0, 1, 2, 3]] * 2
    assert [r["epochs"] for r in reports] == [1, 1]
    assert reports[0]["checksum"] == reports[1]["checksum"]


INTERRUPT_SCRIPT = textwrap.dedent('''
    import numpy as np
    import fastcnn
    from fastcnn import callbacks, distributed as dist, nn

    comm = dist.init()
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, 64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))

    def interrupt_on_rank_1(batch, logs):
        if comm.rank == 1 and batch == 2:
            raise KeyboardInterrupt  # rank 0 goes on into batch 3's gradient Allreduce

    fastcnn.fit(model, x, y, epochs=3, batch_size=4, seed=0, progress=False, distributed=comm,
                callbacks=[callbacks.LambdaCallback(on_batch_end=interrupt_on_rank_1)])
    print(f"rank {comm.rank} returned from fit", flush=True)
''')


def test_a_keyboard_interrupt_on_one_rank_ends_the_launch_instead_of_desynchronising_it(tmp_path):
    # A plain `python script.py` launch (no `-m mpi4py`), and fit catches the KeyboardInterrupt itself: on one
    # process it means "stop after this batch", but here rank 1 would enter a small Allreduce to agree on stopping
    # while rank 0 waits in the gradient Allreduce. fit must end the launch, with the shell's status for Ctrl-C.
    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT_SCRIPT)
    done = _launch(2, script, [], python_args=())
    assert done.returncode != 0, done.stdout + done.stderr
    assert "fit: KeyboardInterrupt on process 1 of 2" in done.stderr, done.stdout + done.stderr
    assert "ending the whole launch with status 130" in done.stderr
    assert "returned from fit" not in done.stdout
    # Rank 1 went on after MPI_Abort returned, into a small Allreduce against rank 0's gradients (MPICH's "Message
    # truncated" and a traceback) before abort made the process exit.
    assert "Traceback" not in done.stderr, done.stderr


RETURNING_ABORT_SCRIPT = textwrap.dedent('''
    from mpi4py import MPI
    from fastcnn import distributed as dist

    class AbortThatReturns(MPI.Intracomm):
        """MPICH's MPI_Abort may return before the launcher kills the job (its issue 7716); here it always does."""
        def Abort(self, errorcode=0):
            print("MPI_Abort returned", flush=True)

    comm = dist.MPICommunicator(AbortThatReturns(MPI.COMM_WORLD))
    comm.abort(7)
    print("went on after abort", flush=True)
''')


def test_abort_ends_the_process_even_when_mpi_abort_returns(tmp_path):
    script = tmp_path / "abort.py"
    script.write_text(RETURNING_ABORT_SCRIPT)
    done = _launch(1, script, [], python_args=())
    assert "MPI_Abort returned" in done.stdout, done.stdout + done.stderr
    assert "went on after abort" not in done.stdout
    assert done.returncode == 7, done.stdout + done.stderr


DIVERGE_SCRIPT = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import fastcnn
    from fastcnn import callbacks, distributed as dist, nn

    comm = dist.init()
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, 64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))

    def poison_rank_1(batch, logs):
        if comm.rank == 1 and batch == 2:
            model[1].weight.data[...] = np.nan  # rank 1's outputs turn NaN; rank 0's loss stays finite

    try:
        fastcnn.fit(model, x, y, epochs=2, batch_size=4, seed=0, progress=False, distributed=comm,
                    callbacks=[callbacks.LambdaCallback(on_batch_begin=poison_rank_1)])
        error = None
    except FloatingPointError as caught:
        error = str(caught)
    with open(os.path.join(sys.argv[1], f"rank{comm.rank}.json"), "w") as file:
        json.dump({"error": error, "grads": [float(np.abs(p.grad).sum()) for p in model.parameters()]}, file)
''')


def test_divergence_on_one_rank_stops_every_rank_and_leaves_no_gradient(tmp_path):
    script = tmp_path / "diverge.py"
    script.write_text(DIVERGE_SCRIPT)
    done = _launch(2, script, [tmp_path])
    assert done.returncode == 0, done.stdout + done.stderr
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for report in reports:
        assert report["error"] is not None and "NaN or infinite on 1 of 2 processes at epoch 1, batch 3" in \
            report["error"], report
        # Rank 0 ran backward on its finite batch before the agreed stop; one process stops before backward and
        # leaves zero gradients, and so must every rank here.
        assert report["grads"] == [0.0, 0.0], report


THREADS_SCRIPT = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import fastcnn
    from fastcnn import distributed as dist, nn
    from fastcnn.distributed.timing import _slowest

    comm = dist.init()
    first = fastcnn.get_num_threads()
    chosen = 2 if first == 1 else 1
    fastcnn.set_num_threads(chosen)
    dist.init()
    again = fastcnn.get_num_threads()
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 1, 4, 4), dtype=np.float32), rng.integers(0, 2, 16)
    fastcnn.fit(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), x, y, epochs=1, batch_size=4, seed=0,
                progress=False, distributed=True)
    after_fit = fastcnn.get_num_threads()
    dist.init(threads=first)
    with open(os.path.join(sys.argv[1], f"rank{comm.rank}.json"), "w") as file:
        json.dump({"first": first, "chosen": chosen, "again": again, "after_fit": after_fit,
                   "explicit": fastcnn.get_num_threads(), "slowest": _slowest(float(comm.rank + 1), comm)}, file)
''')


def test_later_init_calls_keep_the_thread_count_and_timing_reports_the_slowest_rank(tmp_path):
    script = tmp_path / "threads.py"
    script.write_text(THREADS_SCRIPT)
    # Without $OMP_NUM_THREADS, so that the first init() picks the thread count itself.
    done = _launch(2, script, [tmp_path], env_remove=["OMP_NUM_THREADS"])
    assert done.returncode == 0, done.stdout + done.stderr
    for rank in range(2):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # What the script set after the first init() holds through init() and fit(distributed=True)...
        assert report["again"] == report["chosen"] and report["after_fit"] == report["chosen"], report
        assert report["explicit"] == report["first"], report  # ...and init(threads=n) still sets it
        # Rank r took r + 1 seconds: the slowest is 2 (the mean over ranks would be 1.5).
        assert report["slowest"] == 2.0, report


CHECKPOINT_SCRIPT = textwrap.dedent('''
    import os, sys
    import numpy as np
    import fastcnn
    from fastcnn import callbacks, distributed as dist, nn, optim

    out, epochs, resume, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    comm = dist.init()
    rng = np.random.default_rng(0)
    x, y = rng.random((48, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, 48)
    fastcnn.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    # A path per rank, which a user would not write: it shows which ranks write at all.
    checkpoint = callbacks.ModelCheckpoint(os.path.join(out, f"{tag}-rank{comm.rank}.npz"))
    fastcnn.fit(model, x, y, epochs=epochs, batch_size=4, seed=5, progress=False, distributed=comm,
                optimizer=optim.SGD(model.parameters(), lr=0.05, momentum=0.9), callbacks=[checkpoint],
                resume_from=None if resume == "-" else resume)
    np.savez(os.path.join(out, f"{tag}-weights-rank{comm.rank}.npz"), **model.state_dict())
''')


def test_only_rank_0_writes_checkpoints_and_a_resumed_run_matches_an_uninterrupted_one(tmp_path):
    script = tmp_path / "checkpoint.py"
    script.write_text(CHECKPOINT_SCRIPT)
    for args in ([tmp_path, 4, "-", "whole"], [tmp_path, 2, "-", "first"],
                 [tmp_path, 4, tmp_path / "first-rank0.npz", "resumed"]):
        done = _launch(2, script, args)
        assert done.returncode == 0, done.stdout + done.stderr
    for tag in ("whole", "first", "resumed"):
        assert (tmp_path / f"{tag}-rank0.npz").exists()
        assert not (tmp_path / f"{tag}-rank1.npz").exists()  # rank 1 holds the same weights and writes nothing
    whole = dict(np.load(tmp_path / "whole-weights-rank0.npz"))
    for rank in (0, 1):  # every rank read rank 0's checkpoint and continued in step
        resumed = dict(np.load(tmp_path / f"resumed-weights-rank{rank}.npz"))
        for name, value in whole.items():
            np.testing.assert_array_equal(resumed[name], value, err_msg=name)


@pytest.mark.slow
def test_command_line_train_under_mpiexec(tmp_path):
    pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")
    pytest.importorskip("matplotlib", reason="fastcnn train draws its figures with matplotlib")
    out = tmp_path / "run"
    # 3 processes and --batch-size 32: 10 each, so the global batch really trained is 30.
    command = [MPIEXEC, "-n", "3", sys.executable, "-m", "fastcnn", "train", "--dataset", "digits", "--epochs", "2",
               "--batch-size", "32", "--out", str(out), "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT * 2,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("test accuracy:") == 1, done.stdout  # rank 0 alone reports
    assert "batch 30 (10 on each of 3 processes; --batch-size 32 is not a multiple of 3)" in done.stdout, done.stdout
    history = json.loads((out / "history.json").read_text())
    assert len(history["epoch"]) == 2 and history["test"]["accuracy"] > 0.8
    metadata = fastcnn.io.load_metadata(out / "model.npz")
    assert metadata["hyperparameters"]["processes"] == 3
    assert metadata["hyperparameters"]["batch_size"] == 30
    assert metadata["hyperparameters"]["requested_batch_size"] == 32


# --- in this process: the single-process communicator and the argument checks ---------------------------------

def test_single_process_communicator_leaves_data_alone():
    comm = dist.SingleProcess()
    buffer = np.arange(6, dtype=np.float32)
    assert comm.allreduce_(buffer) is buffer and buffer.tolist() == list(range(6))
    assert comm.broadcast_object({"seed": 3}) == {"seed": 3}
    assert (comm.rank, comm.size, comm.is_root) == (0, 1, True)
    with pytest.raises(ValueError, match="C-contiguous"):
        comm.allreduce_(np.zeros((4, 4), np.float32)[:, ::2])
    with pytest.raises(TypeError, match="NumPy array"):
        comm.allreduce_([1.0, 2.0])
    with pytest.raises(ValueError, match=r"root must be a rank in \[0, 1\); got 1"):
        comm.broadcast_(buffer, root=1)


def test_fit_with_a_single_process_communicator_trains():
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, 40)
    fastcnn.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    before = model.state_dict()
    history = fastcnn.fit(model, x, y, epochs=2, batch_size=8, seed=1, progress=False,
                          distributed=dist.SingleProcess(), validation_data=(x[:8], y[:8]))
    assert len(history.history["loss"]) == 2 and "val_accuracy" in history.history
    assert not np.array_equal(model.state_dict()["1.weight"], before["1.weight"])
    # The gradients live in one buffer now, and zero_grad still clears them in place.
    grads = [p.grad for p in model.parameters()]
    assert grads[0].base is not None and grads[0].base is grads[1].base


def test_gradient_averager_lays_gradients_out_in_one_buffer():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    for index, param in enumerate(model.parameters()):
        param.grad[...] = index + 1
    averager = dist.GradientAverager(model.parameters(), dist.SingleProcess(), extra=2)
    expected = np.concatenate([np.full(p.size, i + 1, np.float32) for i, p in enumerate(model.parameters())])
    np.testing.assert_array_equal(averager.gradients, expected)  # current gradients kept
    assert averager.buffer.size == model.num_parameters() + 2
    model.zero_grad()
    assert not averager.gradients.any()
    x = np.random.default_rng(0).random((2, 1, 4, 4), dtype=np.float32)
    model.backward(np.ones_like(model(x)))
    assert averager.gradients.any()  # backward passes accumulate straight into the buffer


@pytest.mark.parametrize("kwargs, error, match", [
    ({"distributed": "mpi"}, TypeError, "distributed must be None, True .* or a fastcnn.distributed.Communicator; "
                                        "got str"),
    ({"distributed": 2}, TypeError, "got int"),
])
def test_fit_refuses_a_bad_distributed_argument(kwargs, error, match):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(error, match=match):
        fastcnn.fit(model, np.zeros((4, 1, 2, 2)), np.zeros(4, int), epochs=1, progress=False, **kwargs)


def test_fit_needs_steps_per_epoch_for_distributed_batches():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    batches = [(np.zeros((2, 1, 2, 2), np.float32), np.zeros(2, int))]
    with pytest.raises(ValueError, match="need steps_per_epoch, so that every process takes the same number"):
        fastcnn.fit(model, batches, epochs=1, progress=False, distributed=dist.SingleProcess())


@pytest.mark.parametrize("args, match", [
    ((10, 0, 1.5), "seed must be an int >= 0; got 1.5"),
    ((0, 0, 1), "samples must be an int >= 1; got 0"),
    ((10, -1, 1), "epoch must be an int >= 0; got -1"),
])
def test_shard_indices_checks_its_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        dist.shard_indices(*args, comm=dist.SingleProcess())


def test_shard_indices_is_the_seeded_permutation():
    order = dist.shard_indices(10, 2, 5, dist.SingleProcess())
    np.testing.assert_array_equal(order, np.random.default_rng(7).permutation(10))
    np.testing.assert_array_equal(dist.shard_indices(3, 0, 0, dist.SingleProcess(), shuffle=False), [0, 1, 2])
    with pytest.raises(TypeError, match="comm must be a fastcnn.distributed.Communicator"):
        dist.shard_indices(10, 0, 0, comm=None)


def test_use_grad_storage_checks_the_storage():
    param = nn.Parameter(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"storage must have the parameter's shape \(2, 3\); got \(6,\)"):
        param.use_grad_storage(np.zeros(6, np.float32))
    with pytest.raises(TypeError, match="storage must be a float32 NumPy array; got float64"):
        param.use_grad_storage(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"C-contiguous and writeable; got an array of shape \(2, 3\) with "
                                         r"strides \(4, 8\) that is not C-contiguous$"):
        param.use_grad_storage(np.zeros((3, 2), np.float32).T)
    read_only = np.zeros((2, 3), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"got an array of shape \(2, 3\) with strides \(12, 4\) that is read-only$"):
        param.use_grad_storage(read_only)


def test_gradient_averager_names_the_repeated_parameters():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    params = list(model.parameters())
    with pytest.raises(ValueError, match=r"GradientAverager: params must list each parameter once; got 3 entries "
                                         r"holding 2 distinct parameters \(1 repeated\)"):
        dist.GradientAverager(params + params[:1], dist.SingleProcess())


def test_init_without_a_launcher_is_a_single_process(monkeypatch):
    for name in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not dist.launched_by_mpi()
    comm = dist.init()
    assert isinstance(comm, dist.SingleProcess)
    with pytest.raises(ValueError, match="threads must be an int >= 1 or None; got 0"):
        dist.init(threads=0)

"""The communicator interface data-parallel training needs, one implementation over MPI and one that does nothing.

`init()` picks the implementation: under `mpiexec` (or srun, or any launcher that sets the PMI/PMIx variables) it is
MPI through mpi4py; otherwise a single process, so the same script runs with and without MPI. mpi4py is imported
only when an MPI launch is detected, which keeps `import fastcnn` and plain training free of it.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

__all__ = ["Communicator", "SingleProcess", "MPICommunicator", "init", "launched_by_mpi", "default_threads"]

# Variables that MPI launchers set in every process they start: MPICH's hydra and Intel MPI (PMI_*), Open MPI
# (OMPI_*), PMIx launchers such as Open MPI 5 and Slurm's srun --mpi=pmix (PMIX_*), MVAPICH (MV2_*).
_LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
# Seconds an aborting process waits, after flushing, for the launcher to forward its last output (see abort).
_FORWARD_OUTPUT_PAUSE = 0.5


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (mpiexec, mpirun, srun), judged by its environment."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


def _check_buffer(buffer, fn: str) -> np.ndarray:
    """MPI reads and writes the array's memory directly: it must be one contiguous, writeable block of numbers."""
    if not isinstance(buffer, np.ndarray):
        raise TypeError(f"{fn}: buffer must be a NumPy array; got {type(buffer).__name__}")
    if buffer.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: buffer must hold numbers; got dtype {buffer.dtype}")
    if not (buffer.flags.c_contiguous and buffer.flags.writeable):
        raise ValueError(f"{fn}: buffer must be C-contiguous and writeable (np.ascontiguousarray makes a copy that "
                         f"is); got an array of shape {buffer.shape} that is not")
    return buffer


def _check_root(root, size: int, fn: str) -> int:
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < size:
        raise ValueError(f"{fn}: root must be a rank in [0, {size}); got {root!r}")
    return int(root)


class Communicator:
    """The collective operations of data-parallel training, over every process of a launch.

    Every process calls each operation in the same order (they are collective); `rank` numbers the processes from
    0 to `size - 1`, and rank 0 is the one that logs and writes files.

    Subclasses implement `allreduce_`, `broadcast_`, `broadcast_object`, `barrier` and `abort`.
    """

    rank: int = 0
    size: int = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce_(self, buffer: np.ndarray) -> np.ndarray:
        """Replace `buffer` (a contiguous array) on every process by its element-wise sum over all processes."""
        raise NotImplementedError

    def broadcast_(self, buffer: np.ndarray, root: int = 0) -> np.ndarray:
        """Copy rank `root`'s `buffer` into every other process's `buffer` (same shape and dtype), in place."""
        raise NotImplementedError

    def broadcast_object(self, value, root: int = 0):
        """Rank `root`'s `value` (a small picklable object: a seed, hyper-parameters), returned on every process."""
        raise NotImplementedError

    def barrier(self) -> None:
        """Return once every process has called it."""
        raise NotImplementedError

    def abort(self, status: int = 1):
        """End every process of the launch with `status` (after an error on one process, so no other waits)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class SingleProcess(Communicator):
    """The communicator of a process launched alone: every operation leaves its data as it is."""

    def allreduce_(self, buffer):
        return _check_buffer(buffer, "allreduce_")

    def broadcast_(self, buffer, root=0):
        _check_root(root, 1, "broadcast_")
        return _check_buffer(buffer, "broadcast_")

    def broadcast_object(self, value, root=0):
        _check_root(root, 1, "broadcast_object")
        return value

    def barrier(self):
        pass

    def abort(self, status=1):
        raise SystemExit(status)


class MPICommunicator(Communicator):
    """A communicator over MPI through mpi4py: buffer operations (`Allreduce`, `Bcast`) on the arrays' memory,
    without pickling.

    Args:
        comm: an mpi4py communicator. Default: `MPI.COMM_WORLD`.
    """

    def __init__(self, comm=None):
        MPI = _import_mpi()
        self._MPI = MPI
        self._comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(self._comm, MPI.Comm):
            raise TypeError(f"MPICommunicator: comm must be an mpi4py communicator; got {type(comm).__name__}")
        self.rank, self.size = self._comm.Get_rank(), self._comm.Get_size()

    @property
    def comm(self):
        """The mpi4py communicator, for operations this interface does not have."""
        return self._comm

    def allreduce_(self, buffer):
        buffer = _check_buffer(buffer, "allreduce_")
        self._comm.Allreduce(self._MPI.IN_PLACE, buffer, op=self._MPI.SUM)
        return buffer

    def broadcast_(self, buffer, root=0):
        buffer = _check_buffer(buffer, "broadcast_")
        self._comm.Bcast(buffer, root=_check_root(root, self.size, "broadcast_"))
        return buffer

    def broadcast_object(self, value, root=0):
        return self._comm.bcast(value, root=_check_root(root, self.size, "broadcast_object"))

    def barrier(self):
        self._comm.Barrier()

    def abort(self, status=1):
        sys.stdout.flush()
        sys.stderr.flush()
        # The launcher forwards each process's output through a pipe, and on an abort it kills every process and
        # may exit before it has read what is still in that pipe: the message saying why was lost now and then
        # (1 launch in 40 with MPICH's hydra). A moment's pause lets it forward what this process has written.
        time.sleep(_FORWARD_OUTPUT_PAUSE)
        self._comm.Abort(int(status))
        # MPI_Abort asks the launcher to kill the job and may return before it does (MPICH issue 7716; MPICH
        # later made it exit). Going on would run this rank's Python into collectives the others never enter.
        os._exit(int(status))

    def processes_sharing_cores(self) -> int:
        """How many processes of this launch run on the same cores as this one (itself included).

        Processes on one host that the launcher did not pin share the same affinity mask; pinned ones (mpiexec
        -bind-to core) have disjoint masks and share with nobody.
        """
        local = self._comm.Split_type(self._MPI.COMM_TYPE_SHARED)
        try:
            # Without affinity masks (macOS, Windows) nothing tells pinned ranks apart: all on the host share.
            mine = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else None
            return sum(1 for mask in local.allgather(mine) if mask == mine)
        finally:
            local.Free()


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(f"fastcnn.distributed: this process was started by an MPI launcher but mpi4py is not "
                          f"importable ({error}); install it with `pip install \"fastcnn[mpi]\"` (mpi4py and the "
                          f"mpich runtime) or, on a cluster, `pip install mpi4py` against the site's MPI") from None
    return MPI


def default_threads(processes_sharing: int) -> int:
    """Kernel threads per process: this process's usable cores divided among the processes that share them."""
    if isinstance(processes_sharing, bool) or not isinstance(processes_sharing, (int, np.integer)) \
            or processes_sharing < 1:
        raise ValueError(f"default_threads: processes_sharing must be an int >= 1; got {processes_sharing!r}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(processes_sharing))


_world: Communicator | None = None


def _abort_on_uncaught_exception(comm: Communicator) -> None:
    """An uncaught exception on one rank ends the whole launch, as `python -m mpi4py` does; without it the other
    ranks would wait in their next collective operation forever."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        comm.abort(1)

    sys.excepthook = hook


def init(threads=None) -> Communicator:
    """The communicator of this launch: MPI over every process when started by mpiexec (or srun), else a single
    process. Call it once at the start of a script; later calls return the same communicator.

    Under MPI with several processes the first call also sets the kernels' thread count of this process, and makes
    an uncaught exception on any rank end the whole launch instead of leaving the others waiting.

    Args:
        threads: kernel threads for this process (`fastcnn.set_num_threads`), set on every call that passes it.
            Default: None, which on the first call under MPI with several processes means $OMP_NUM_THREADS when
            set, else the usable cores divided by the processes sharing them (`default_threads`); a single process,
            and every later call, keeps the current setting.

    Returns:
        a `Communicator` (`MPICommunicator` or `SingleProcess`).

    Example:
        >>> comm = fastcnn.distributed.init()
        >>> history = fastcnn.fit(model, x, y, epochs=5, seed=0, distributed=comm)
    """
    global _world
    from .._runtime import set_num_threads

    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"init: threads must be an int >= 1 or None; got {threads!r}")
    if _world is None:
        _world = MPICommunicator() if launched_by_mpi() else SingleProcess()
        if _world.size > 1:
            _abort_on_uncaught_exception(_world)
            # Only here, when the launch's communicator is created: later calls (fit(distributed=True) makes one)
            # must not undo a set_num_threads the script made since.
            if threads is None and not os.environ.get("OMP_NUM_THREADS"):
                set_num_threads(default_threads(_world.processes_sharing_cores()))
    if threads is not None:
        set_num_threads(int(threads))
    return _world


def initialised_world() -> Communicator | None:
    """The communicator `init()` returned, or None before any call (the CLI aborts through it after an error)."""
    return _world

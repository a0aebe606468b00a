"""Beyond one machine: data-parallel training over MPI, batch inference over Dask (docs/distributed.md).

Training: launch the same script on N processes with `mpiexec -n N python train.py` and pass
`distributed=True` (or the communicator from `init()`) to `fastcnn.fit`. Without an MPI launch the same script
trains in one process. Needs `pip install "fastcnn[mpi]"` (mpi4py and an MPI runtime).

Inference: `predict(model, data, client)` runs a model over a Dask array or a list of files on a Dask cluster.
Needs `pip install "fastcnn[dask]"`.

Nothing here imports mpi4py or dask until it is used.
"""
from __future__ import annotations

from ._comm import Communicator, MPICommunicator, SingleProcess, default_threads, init, launched_by_mpi
from ._parallel import (
    GradientAverager,
    average_buffers,
    broadcast_model,
    broadcast_optimizer,
    check_in_sync,
    parameter_checksum,
    shard_indices,
)
from ._dask import predict  # imports dask only when called


__all__ = [
    "Communicator", "SingleProcess", "MPICommunicator", "init", "launched_by_mpi", "default_threads",
    "GradientAverager", "broadcast_model", "broadcast_optimizer", "average_buffers", "shard_indices",
    "parameter_checksum", "check_in_sync", "predict",
]

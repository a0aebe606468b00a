"""The pieces of data parallelism, usable in a hand-written loop as `fit` uses them: one gradient buffer averaged
with one Allreduce, the model and optimizer broadcast from rank 0, each rank's shard of an epoch, and a checksum that
tells whether the ranks still hold the same weights.
"""
from __future__ import annotations

import zlib

import numpy as np

from ..nn.module import Module
from ._comm import Communicator

__all__ = ["GradientAverager", "broadcast_model", "broadcast_optimizer", "shard_indices", "parameter_checksum",
           "check_in_sync"]


def _check_comm(comm, fn: str) -> Communicator:
    if not isinstance(comm, Communicator):
        raise TypeError(f"{fn}: comm must be a fastcnn.distributed.Communicator (from fastcnn.distributed.init()); "
                        f"got {type(comm).__name__}")
    return comm


def _check_module(model, fn: str) -> Module:
    if not isinstance(model, Module):
        raise TypeError(f"{fn}: model must be a fastcnn.nn.Module; got {type(model).__name__}")
    return model


class GradientAverager:
    """Every parameter's gradient as a view of one contiguous float32 buffer, averaged across ranks in one call.

    Creating it copies the current gradients into the buffer and makes each `param.grad` a view of its slice
    (`Parameter.use_grad_storage`); backward passes then accumulate straight into the buffer, and `average()` is one
    in-place Allreduce of it followed by a division by the number of ranks: no copies, no pickling, no call per
    array. `extra` float32 slots after the gradients travel in the same Allreduce (summed, not divided): `fit`
    sends the batch's loss, correct predictions and stop requests in them.

    Args:
        params: the parameters (`model.parameters()`), each listed once.
        comm: the communicator.
        extra: number of extra slots. Default: 0.

    Example:
        >>> averager = GradientAverager(model.parameters(), comm)
        >>> model.backward(criterion.backward()); averager.average(); optimizer.step(); optimizer.zero_grad()
    """

    def __init__(self, params, comm, extra: int = 0):
        fn = "GradientAverager"
        self.comm = _check_comm(comm, fn)
        if isinstance(extra, bool) or not isinstance(extra, (int, np.integer)) or extra < 0:
            raise ValueError(f"{fn}: extra must be an int >= 0; got {extra!r}")
        params = list(params)
        if len({id(p) for p in params}) != len(params):
            repeated = len(params) - len({id(p) for p in params})
            raise ValueError(f"{fn}: params must list each parameter once; got {len(params)} entries holding "
                             f"{len(params) - repeated} distinct parameters ({repeated} repeated)")
        total = sum(p.data.size for p in params)
        self.buffer = np.zeros(total + int(extra), dtype=np.float32)
        self.gradients = self.buffer[:total]
        self.extra = self.buffer[total:]
        offset = 0
        for param in params:
            param.use_grad_storage(self.buffer[offset:offset + param.data.size].reshape(param.data.shape))
            offset += param.data.size

    def average(self) -> np.ndarray:
        """Average the gradients (and sum the extra slots) over every rank, in place; returns the extra slots."""
        self.comm.allreduce_(self.buffer)
        if self.comm.size > 1:
            self.gradients /= np.float32(self.comm.size)
        return self.extra


def _float_buffers(model):
    """The model's floating-point buffers (BatchNorm's running statistics); counters such as num_batches_tracked
    advance identically on every rank."""
    return [buffer for _, buffer in model.named_buffers() if buffer.dtype.kind == "f"]


def broadcast_model(model, comm, root: int = 0) -> None:
    """Copy rank `root`'s parameters and buffers into every rank's model, in place (once, before training)."""
    _check_module(model, "broadcast_model")
    _check_comm(comm, "broadcast_model")
    for param in model.parameters():
        comm.broadcast_(param.data, root)
    for _, buffer in model.named_buffers():
        comm.broadcast_(buffer, root)


def broadcast_optimizer(optimizer, comm, root: int = 0) -> None:
    """Give every rank rank `root`'s optimizer state (momentum buffers, step counts, learning rates)."""
    _check_comm(comm, "broadcast_optimizer")
    if not (callable(getattr(optimizer, "state_dict", None)) and callable(getattr(optimizer, "load_state_dict",
                                                                                  None))):
        raise TypeError(f"broadcast_optimizer: optimizer must have state_dict() and load_state_dict(); got "
                        f"{type(optimizer).__name__}")
    state = comm.broadcast_object(optimizer.state_dict() if comm.rank == root else None, root)
    if comm.rank != root:
        optimizer.load_state_dict(state)


def average_buffers(model, comm) -> None:
    """Replace every floating-point buffer (BatchNorm's running mean and variance) by its mean over the ranks."""
    buffers = _float_buffers(model)
    if not buffers or comm.size == 1:
        return
    packed = np.concatenate([b.ravel().astype(np.float64) for b in buffers])
    comm.allreduce_(packed)
    packed /= comm.size
    offset = 0
    for buffer in buffers:
        buffer[...] = packed[offset:offset + buffer.size].reshape(buffer.shape)
        offset += buffer.size


def shard_indices(samples: int, epoch: int, seed: int, comm, shuffle: bool = True) -> np.ndarray:
    """This rank's sample indices for one epoch: `default_rng(seed + epoch).permutation(samples)[rank::size]`.

    Every rank gets `samples // size` indices, so every rank takes the same number of steps (none waits for
    another that has run out); the at most `size - 1` samples left at the end of the permutation sit out this
    epoch (a different few each epoch when shuffling). Without shuffling the order is 0, 1, 2, ...

    Args:
        samples: the number of training samples.
        epoch: the epoch number (from 0).
        seed: the run's seed, the same on every rank.
        comm: the communicator.
        shuffle: permute the samples. Default: True.
    """
    fn = "shard_indices"
    _check_comm(comm, fn)
    for name, value, minimum in (("samples", samples, 1), ("epoch", epoch, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{fn}: {name} must be an int >= {minimum}; got {value!r}")
    per_rank = samples // comm.size
    if per_rank == 0:
        raise ValueError(f"{fn}: {samples} samples cannot be shared by {comm.size} processes; every process needs at "
                         f"least one")
    order = np.random.default_rng(seed + epoch).permutation(samples) if shuffle else np.arange(samples)
    return order[comm.rank:per_rank * comm.size:comm.size]


def parameter_checksum(model) -> int:
    """A CRC-32 of every parameter's and buffer's bytes: equal on two ranks when they hold the same weights."""
    _check_module(model, "parameter_checksum")
    checksum = 0
    for param in model.parameters():
        checksum = zlib.crc32(np.ascontiguousarray(param.data).view(np.uint8), checksum)
    for _, buffer in model.named_buffers():
        checksum = zlib.crc32(np.ascontiguousarray(buffer).view(np.uint8), checksum)
    return checksum


def check_in_sync(model, comm) -> int:
    """Raise RuntimeError on every rank unless every rank's model has rank 0's checksum; returns the checksum."""
    _check_comm(comm, "check_in_sync")
    mine = parameter_checksum(model)
    root = comm.broadcast_(np.array([mine], dtype=np.int64))[0] if comm.rank == 0 else \
        comm.broadcast_(np.zeros(1, dtype=np.int64))[0]
    differs = np.zeros(comm.size, dtype=np.int64)
    differs[comm.rank] = int(mine != root)
    comm.allreduce_(differs)
    if differs.any():
        ranks = ", ".join(str(r) for r in np.nonzero(differs)[0])
        raise RuntimeError(f"check_in_sync: the weights of rank(s) {ranks} differ from rank 0's (checksum "
                           f"{int(root):#010x}); the ranks have gone out of step")
    return mine

"""`fit(..., distributed=...)`: what data parallelism changes in fit's loop, kept out of `fastcnn.training`.

Per step every rank runs forward and backward on its own batch, then ONE in-place Allreduce sums a buffer holding
every gradient followed by six control slots: the batch's loss sum, correct predictions and sample count (so every
rank logs the global batch's values), stop and Ctrl-C requests, and non-finite outputs. Every decision that ends
training is therefore taken on the same numbers by every rank, and no rank can leave while another waits.
"""
from __future__ import annotations

import functools
import math
import sys

import numpy as np

from .. import _batches, training
from ._comm import Communicator, init
from ._parallel import GradientAverager, average_buffers, broadcast_model, broadcast_optimizer, check_in_sync, \
    shard_indices

# The control slots after the gradients in the Allreduce buffer.
_LOSS_SUM, _CORRECT, _COUNT, _STOP, _INTERRUPT, _NONFINITE = range(6)
_CONTROL_SLOTS = 6


class _FitRun:
    """One data-parallel `fit`: the communicator, the agreed seed, and the hooks fit calls."""

    def __init__(self, comm: Communicator, seed: int):
        self.comm, self.seed = comm, seed

    @classmethod
    def create(cls, distributed, seed, fn: str) -> "_FitRun":
        if distributed is True:
            comm = init()
        elif isinstance(distributed, Communicator):
            comm = distributed
        else:
            raise TypeError(f"{fn}: distributed must be None, True (fastcnn.distributed.init()) or a "
                            f"fastcnn.distributed.Communicator; got {type(distributed).__name__}")
        # Every rank must shuffle with the same seed: rank 0's is everyone's, and a different one given on another
        # rank is a mistake worth an error rather than silently different data orders.
        chosen = seed if seed is not None else int(np.random.SeedSequence().entropy % (2**63))
        agreed = comm.broadcast_object(chosen if comm.is_root else None)
        if seed is not None and seed != agreed:
            raise ValueError(f"{fn}: seed must be the same on every process; rank {comm.rank} has {seed}, rank 0 "
                             f"has {agreed}")
        return cls(comm, agreed)

    @property
    def is_root(self) -> bool:
        return self.comm.is_root

    def epoch_size(self, train, batch_size: int):
        """(steps, samples) of one epoch over every rank, for the progress bar and callbacks' params."""
        if isinstance(train, _batches._Arrays):
            per_rank = train.samples // self.comm.size
            if per_rank == 0:
                raise ValueError(f"fit: {train.samples} training samples cannot be shared by {self.comm.size} "
                                 f"processes; every process needs at least one")
            return -(-per_rank // batch_size), per_rank * self.comm.size
        if train.steps is None:
            raise ValueError("fit: with distributed training, batches from an iterable need steps_per_epoch, so that "
                             "every process takes the same number of steps (each process trains on the batches its "
                             "own iterable yields: give each one its own shard)")
        return train.steps, None

    def start(self, model, optimizer):
        """Rank 0's weights, buffers and optimizer state on every rank, and one gradient buffer; fit's loop class."""
        broadcast_model(model, self.comm)
        if callable(getattr(optimizer, "state_dict", None)) and callable(getattr(optimizer, "load_state_dict", None)):
            broadcast_optimizer(optimizer, self.comm)
        averager = GradientAverager(model.parameters(), self.comm, extra=_CONTROL_SLOTS)
        return functools.partial(_DistributedLoop, self.comm, averager)

    def seed_epoch(self, generators: dict, dropouts: list, epoch: int) -> None:
        """Augmentation and Dropout draw from streams of (seed, rank, epoch): different on every rank, and the same
        again when a run resumes at this epoch (no per-rank generator state needs saving)."""
        children = np.random.SeedSequence(self.seed, spawn_key=(self.comm.rank, epoch)).spawn(1 + len(dropouts))
        generators["augment"] = np.random.default_rng(children[0])
        generators["dropout"] = [np.random.default_rng(child) for child in children[1:]]
        for module, generator in zip(dropouts, generators["dropout"]):
            module.reseed(generator)

    def shard(self, epoch: int, samples: int, shuffle: bool) -> np.ndarray:
        return shard_indices(samples, epoch, self.seed, self.comm, shuffle)

    def check_in_sync(self, model) -> None:
        check_in_sync(model, self.comm)


class _DistributedLoop(training._Loop):
    """fit's loop with the gradients averaged each step and every stop agreed by all ranks."""

    def __init__(self, comm: Communicator, averager: GradientAverager, *args):
        super().__init__(*args)
        self.comm, self.averager = comm, averager
        self._agreed_stop = self._agreed_interrupt = False
        self._in_epoch = False

    def train_epoch(self, epoch, batches, bar, interrupts):
        self._in_epoch = True
        try:
            logs = super().train_epoch(epoch, batches, bar, interrupts)
        finally:
            self._in_epoch = False
        self._agree(interrupts)  # requests made after the last step's Allreduce
        # Batch statistics stay per rank (each rank normalises with its own batch, as PyTorch DDP without
        # SyncBatchNorm); the running estimates are averaged so that every rank evaluates and saves the same model.
        average_buffers(self.model, self.comm)
        return logs

    def train_step(self, epoch, batch, xb, yb, interrupts):
        logits, value, hits = self.forward_and_score(epoch, batch, xb, yb)
        finite = math.isfinite(value)
        if finite:
            self.model.backward(self.criterion.backward(), input_grad=False)
        count = xb.shape[0]
        control = self.averager.extra
        control[:] = 0.0
        control[_LOSS_SUM] = value * count
        control[_CORRECT] = hits or 0
        control[_COUNT] = count
        control[_STOP] = float(bool(self.model.stop_training))
        control[_INTERRUPT] = float(bool(interrupts.requested))
        control[_NONFINITE] = float(not finite)
        totals = self.averager.average()
        if totals[_NONFINITE] > 0:
            # The ranks with a finite loss ran backward already: leave no gradient behind, as one process does
            # (it stops before backward).
            self.averager.gradients.fill(0.0)
            training._diverged(self.fn, f"the loss or the model's outputs became NaN or infinite on "
                                        f"{int(totals[_NONFINITE])} of {self.comm.size} processes", epoch, batch,
                               self.optimizer)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self._agreed_stop, self._agreed_interrupt = totals[_STOP] > 0, totals[_INTERRUPT] > 0
        self._apply_agreement(interrupts)
        global_count = int(totals[_COUNT])
        return global_count, float(totals[_LOSS_SUM]) / global_count, (None if hits is None else
                                                                       int(totals[_CORRECT]))

    def interrupted_at_once(self, interrupts) -> None:
        """A KeyboardInterrupt lands where it lands: another rank may be in this step's gradient Allreduce while this
        one would enter a small one to agree on stopping, and mismatched collectives fail or wait for ever. Only the
        agreed request (one Ctrl-C, a flag that travels with the gradients) stops every rank together; anything
        else ends the launch, with the status a shell gives an interrupted command."""
        if self.comm.size == 1:
            super().interrupted_at_once(interrupts)
            return
        print(f"{self.fn}: KeyboardInterrupt on process {self.comm.rank} of {self.comm.size} cut training at a point "
              f"the other processes do not share (a second Ctrl-C, or raised by a callback), so they cannot stop "
              f"together: ending the whole launch with status 130. One Ctrl-C stops every process after the next "
              f"batch; a callback stops training with model.stop_training = True", file=sys.stderr)
        self.comm.abort(130)

    def stop_requested(self, interrupts) -> bool:
        # Within an epoch: what the last step's Allreduce agreed (a request made during a batch's callbacks takes
        # effect after the next batch, on every rank together). After an epoch: one small Allreduce decides.
        if not self._in_epoch:
            self._agree(interrupts)
        return self._agreed_stop or self._agreed_interrupt

    def _agree(self, interrupts) -> None:
        votes = np.array([float(bool(self.model.stop_training)), float(bool(interrupts.requested))])
        self.comm.allreduce_(votes)
        self._agreed_stop, self._agreed_interrupt = votes[0] > 0, votes[1] > 0
        self._apply_agreement(interrupts)

    def _apply_agreement(self, interrupts) -> None:
        """Set what was agreed on this rank too, so fit's own checks read the same on every rank."""
        if self._agreed_stop:
            self.model.stop_training = True
        if self._agreed_interrupt:
            interrupts.requested = True

    def validate(self, validation, epoch, classes) -> dict:
        """Array validation data is split across the ranks and the scores combined; batches from an iterable are
        evaluated whole on every rank (each gets the same numbers)."""
        if not isinstance(validation, _batches._Arrays):
            return super().validate(validation, epoch, classes)
        rank, size = self.comm.rank, self.comm.size
        local = _batches._Arrays(validation.x[rank::size], validation.y[rank::size], validation.batch_size)
        sums = np.zeros(4)  # loss sum, correct, count, labelled
        if local.samples:
            scores = training._run_evaluation(self.model, self.criterion, local.batches(), classes, self.fn)
            sums[:] = (scores["loss"] * local.samples, scores.get("accuracy", 0.0) * local.samples, local.samples,
                       float("accuracy" in scores))
        self.comm.allreduce_(sums)
        result = {"loss": float(sums[0] / sums[2])}
        if sums[3] > 0:
            result["accuracy"] = round(float(sums[1])) / float(sums[2])
        return result

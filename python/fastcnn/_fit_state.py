"""fit's state beyond the model and the optimizer: its seeded random generators, the callbacks' states, and
resuming all of it from a checkpoint written by `fastcnn.callbacks.ModelCheckpoint`.
"""
from __future__ import annotations

import numpy as np

from . import io as _io
from . import nn


class _FitContext:
    """What ModelCheckpoint needs from fit besides the model and the optimizer: the random generators' states and
    the other callbacks' states."""

    def __init__(self, generators: dict, callbacks: list):
        self.generators, self.callbacks = generators, callbacks

    def rng_state(self) -> dict:
        dropout = self.generators["dropout"]
        return {
            "shuffle": self.generators["shuffle"].bit_generator.state,
            "augment": self.generators["augment"].bit_generator.state,
            "dropout": None if dropout is None else [g.bit_generator.state for g in dropout],
        }

    def restore_rng(self, state: dict, dropouts: list) -> None:
        self.generators["shuffle"].bit_generator.state = state["shuffle"]
        self.generators["augment"].bit_generator.state = state["augment"]
        if state.get("dropout") is not None:
            generators = []
            for module, saved in zip(dropouts, state["dropout"]):
                generator = np.random.default_rng()
                generator.bit_generator.state = saved
                module.reseed(generator)
                generators.append(generator)
            self.generators["dropout"] = generators

    def callbacks_state(self) -> list:
        states = []
        for callback in self.callbacks:
            state = callback.state_dict()
            if state is not None:
                states.append({"class": type(callback).__name__, "state": state})
        return states

    def restore_callbacks(self, saved) -> None:
        """Give each saved state to the callback of the same class in the same order among its class."""
        by_class: dict[str, list] = {}
        for entry in saved or []:
            by_class.setdefault(entry["class"], []).append(entry["state"])
        for callback in self.callbacks:
            pending = by_class.get(type(callback).__name__)
            if pending:
                callback.load_state_dict(pending.pop(0))


def _make_generators(model, seed):
    """Shuffling draws from default_rng(seed); augmentation and each Dropout from their own child streams of the
    same seed, so changing one (adding a Dropout) leaves the others' draws alone. Unseeded runs leave Dropout's own
    generators as they are."""
    root = np.random.SeedSequence(seed)
    dropouts = [module for module in model.modules() if isinstance(module, nn.Dropout)]
    children = root.spawn(1 + len(dropouts))
    generators = {"shuffle": np.random.default_rng(root), "augment": np.random.default_rng(children[0]),
                  "dropout": None}
    if seed is not None:
        generators["dropout"] = [np.random.default_rng(child) for child in children[1:]]
        for module, generator in zip(dropouts, generators["dropout"]):
            module.reseed(generator)
    return generators, dropouts


def _resume(path, model, optimizer, context: _FitContext, dropouts, fn: str) -> int:
    """Restore a checkpoint into the model, the optimizer, fit's generators and the callbacks; return its epoch.
    Everything is checked before anything changes, so a refused checkpoint leaves the model as it was."""
    checkpoint = _io.load_checkpoint(path)
    optimizer_state, rng_state = checkpoint["optimizer_state"], checkpoint["rng_state"]
    if optimizer_state is not None and checkpoint["optimizer_class"] != type(optimizer).__name__:
        raise ValueError(f"{fn}: resume_from={path!r} holds the state of a {checkpoint['optimizer_class']} "
                         f"optimizer; fit's optimizer is a {type(optimizer).__name__}")
    if rng_state is not None and rng_state.get("dropout") is not None and len(rng_state["dropout"]) != len(dropouts):
        raise ValueError(f"{fn}: resume_from={path!r} has random states for {len(rng_state['dropout'])} Dropout "
                         f"layers; the model has {len(dropouts)}")
    before = model.state_dict()
    try:
        model.load_state_dict(checkpoint["model_state"], strict=True)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
    except (TypeError, ValueError) as error:
        model.load_state_dict(before)
        raise type(error)(f"{fn}: resume_from={path!r} does not fit the model and optimizer: {error}") from None
    if rng_state is not None:
        context.restore_rng(rng_state, dropouts)
    context.restore_callbacks(checkpoint["callbacks_state"])
    return int(checkpoint["epoch"])

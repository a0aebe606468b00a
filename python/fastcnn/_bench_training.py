"""The whole-library sections of `fastcnn.bench`: training throughput and inference speed, fastcnn against PyTorch.

Both libraries train the same model from the same initial weights (PyTorch's copy is built from fastcnn's model
and loaded with its state dict), on the same synthetic images, with the same batch size, optimizer (SGD, momentum
0.9) and loss (cross-entropy). Before anything is timed, both models' outputs on one batch are compared: a model
that computes something else is marked WRONG and gets no ratio.

- fastcnn trains with `fastcnn.fit` itself (progress=False), the real training step every user runs, including
  its input checks, shuffling and running loss; PyTorch with the plain loop its tutorials teach (model.train(),
  then per batch zero_grad, forward, loss, backward, step, and loss.item() for the running loss as fit keeps one).
- Inference uses the public paths a user would: fastcnn's `model(x)` in eval mode inside `fastcnn.no_grad()` and
  `fastcnn.predict` (which adds the softmax), PyTorch's `model(x)` in eval mode inside `torch.inference_mode()`.

PyTorch is passed in (never imported here): `import fastcnn` needs only NumPy.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import _grad_mode, _random, models, nn, training
from ._bench_measure import log, matches_reference, ratio, timed_samples_ms
from ._bench_targets import BATCH1_LATENCY_TARGET_US, ISSUE_TARGET_THREADS, TRAINING_VS_TORCH_TARGETS, all_reached
from .optim import SGD

BATCH_SIZE = 64
LEARNING_RATE = 0.01
MOMENTUM = 0.9
CLASSES = 10
QUICK_TRAIN_IMAGES = 640
TIMED_EPOCHS = 3  # the median epoch is reported
QUICK_TIMED_EPOCHS = 1
WARM_UP_BATCHES = 5  # trained before timing: first-touch pages, lazily built kernels and thread pools
INFERENCE_BATCH_SIZES = (1, 256)
INFERENCE_CALLS = {1: 500, 256: 20}  # timed calls per figure; the median is reported
QUICK_INFERENCE_CALLS = {1: 50, 256: 3}


def cifar_net(seed=None) -> nn.Sequential:
    """The small CIFAR-style net of the performance issue, for (N, 3, 32, 32) input, with PyTorch's default init."""
    rng = _random.generator_from(seed)  # one stream for all layers, as models.lenet5: no two layers alike
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1, seed=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, seed=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, CLASSES, seed=rng),
    )


@dataclass(frozen=True)
class Workload:
    """A model to train and its input: `build(seed)` returns the fastcnn model; images are (C, H, W)."""

    name: str
    description: str
    image_shape: tuple[int, int, int]
    build: Callable[[int], nn.Module]
    images: int  # per timed epoch: a small real data set's epoch, not a handful of batches


WORKLOADS = {
    "lenet5": Workload("lenet5", "LeNet-5 (fastcnn.models.lenet5), 1x28x28", (1, 28, 28),
                       lambda seed: models.lenet5(num_classes=CLASSES, seed=seed), images=10_000),
    "cifar_net": Workload("cifar_net", "conv3x3(32)-ReLU-maxpool2-conv3x3(64)-ReLU-maxpool2-Linear(4096,10), "
                          "3x32x32", (3, 32, 32), cifar_net, images=5_000),  # 5x LeNet's time per image
}


# ----------------------------------------------------------------------------------------------------------------
# The same model and data in both libraries
# ----------------------------------------------------------------------------------------------------------------
TORCH_LAYERS = {"Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear"}


def torch_model_like(model: nn.Sequential, torch):
    """PyTorch's copy of a fastcnn Sequential: each layer rebuilt from its config, then fastcnn's weights loaded.

    fastcnn's layers take PyTorch's argument names and its state-dict keys ("3.weight") are PyTorch's, so the
    copy is exact by construction; a layer kind without a PyTorch twin here is refused rather than approximated.
    """
    layers = []
    for index, layer in enumerate(model):
        kind = type(layer).__name__
        if kind not in TORCH_LAYERS:
            raise ValueError(f"torch_model_like: no PyTorch equivalent for layer {index} ({kind})")
        layers.append(getattr(torch.nn, kind)(**layer.get_config()))
    copy = torch.nn.Sequential(*layers)
    copy.load_state_dict({key: torch.from_numpy(value.copy()) for key, value in model.state_dict().items()})
    return copy


def synthetic_data(image_shape, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` standard-normal float32 images and uniform labels in [0, CLASSES)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((count, *image_shape), dtype=np.float32)
    return images, rng.integers(0, CLASSES, size=count).astype(np.int64)


def forward_check(model, torch_model, torch, images: np.ndarray) -> str:
    """'ok' when both models give the same logits for the images (within the bench's tolerances), else 'WRONG'."""
    with _grad_mode.no_grad():
        ours = model(images)
    with torch.no_grad():
        theirs = torch_model(torch.from_numpy(images)).numpy()
    return "ok" if matches_reference(ours, theirs) else "WRONG"


# ----------------------------------------------------------------------------------------------------------------
# Training: one epoch in each library
# ----------------------------------------------------------------------------------------------------------------
def fastcnn_optimizer(model):
    return SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)


def torch_optimizer(torch, model):
    return torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)


def fastcnn_epoch(model, optimizer, images, labels, seed: int) -> tuple[float, float]:
    """(seconds, mean loss) of one `fastcnn.fit` epoch: what a user's training run spends per epoch."""
    start = time.perf_counter()
    history = training.fit(model, images, labels, epochs=1, batch_size=BATCH_SIZE, optimizer=optimizer,
                           loss=nn.CrossEntropyLoss(), progress=False, seed=seed)
    return time.perf_counter() - start, history.history["loss"][-1]


def torch_epoch(torch, model, optimizer, images, labels, generator) -> tuple[float, float]:
    """(seconds, mean loss) of one epoch of PyTorch's idiomatic loop over in-memory tensors, shuffled each epoch.

    Indexing the tensors with a permutation, rather than a DataLoader (which collates sample by sample), is what
    fit does too and the faster of the two for data already in memory.
    """
    criterion = torch.nn.CrossEntropyLoss()
    count, loss_sum = images.shape[0], 0.0
    start = time.perf_counter()
    model.train()
    order = torch.randperm(count, generator=generator)
    for first in range(0, count, BATCH_SIZE):
        batch = order[first:first + BATCH_SIZE]
        optimizer.zero_grad()
        loss = criterion(model(images[batch]), labels[batch])
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * batch.numel()
    return time.perf_counter() - start, loss_sum / count


def fastcnn_trainer(model, seed: int):
    """A function training `model` for one epoch on (images, labels), keeping its optimizer across epochs."""
    optimizer = fastcnn_optimizer(model)
    return lambda x, y: fastcnn_epoch(model, optimizer, x, y, seed)


def torch_trainer(torch, model, seed: int):
    optimizer = torch_optimizer(torch, model)
    generator = torch.Generator().manual_seed(seed)
    return lambda x, y: torch_epoch(torch, model, optimizer, x, y, generator)


def timed_epochs(train_epoch, images, labels, epochs: int) -> tuple[list[float], float]:
    """Seconds of each of `epochs` epochs, after WARM_UP_BATCHES untimed batches; and the last epoch's loss."""
    train_epoch(images[:WARM_UP_BATCHES * BATCH_SIZE], labels[:WARM_UP_BATCHES * BATCH_SIZE])
    seconds, loss = [], None
    for _ in range(epochs):
        elapsed, loss = train_epoch(images, labels)
        seconds.append(elapsed)
    return seconds, loss


def measure_training(workload: Workload, threads: int, images_count: int, epochs: int, seed: int, torch) -> dict:
    """One row of the training table: images/s of both libraries on the same model, data and hyper-parameters."""
    model = workload.build(seed)
    images, labels = synthetic_data(workload.image_shape, images_count, seed)
    row = {"model": workload.name, "description": workload.description, "threads": threads,
           "images": images_count, "batch_size": BATCH_SIZE, "timed_epochs": epochs,
           "warm_up_batches": WARM_UP_BATCHES,
           "optimizer": f"SGD lr={LEARNING_RATE:g} momentum={MOMENTUM:g}", "loss": "cross-entropy",
           "epoch_seconds": {}, "images_per_second": {}, "final_loss": {}}
    trainers = {"fastcnn": (fastcnn_trainer(model, seed), images, labels)}
    if torch is None:
        row["check"] = "unchecked"
    else:
        torch_model = torch_model_like(model, torch)
        row["check"] = forward_check(model, torch_model, torch, images[:BATCH_SIZE])
        tensors = torch.from_numpy(images), torch.from_numpy(labels)
        trainers["torch"] = (torch_trainer(torch, torch_model, seed), *tensors)
    for name, (trainer, x, y) in trainers.items():
        seconds, loss = timed_epochs(trainer, x, y, epochs)
        row["epoch_seconds"][name] = seconds
        row["images_per_second"][name] = images_count / statistics.median(seconds)
        row["final_loss"][name] = loss
    row["speedup_vs_torch"] = ratio(row["images_per_second"].get("fastcnn"), row["images_per_second"].get("torch"))
    row["target"] = TRAINING_VS_TORCH_TARGETS.get(workload.name) if threads == ISSUE_TARGET_THREADS else None
    row["meets_target"] = (None if row["target"] is None or row["check"] == "unchecked"
                           else all_reached(row["check"], [(row["speedup_vs_torch"], row["target"])]))
    log(f"[{threads} thread(s)] training {workload.name}: " + ", ".join(
        f"{name} {rate:.0f} images/s" for name, rate in row["images_per_second"].items()))
    return row


# ----------------------------------------------------------------------------------------------------------------
# Inference: batch-1 latency and batch-256 throughput
# ----------------------------------------------------------------------------------------------------------------
def fastcnn_inference_calls(model, x: np.ndarray) -> dict[str, Callable[[], np.ndarray]]:
    """fastcnn's public inference paths; each returns what a user gets (logits, or probabilities for predict)."""
    def logits():
        with _grad_mode.no_grad():
            return model(x)

    return {"fastcnn model(x), no_grad": logits,
            "fastcnn.predict": lambda: training.predict(model, x)}


def torch_inference_call(torch, torch_model, x: np.ndarray) -> Callable[[], object]:
    tx = torch.from_numpy(x)

    def logits():
        with torch.inference_mode():
            return torch_model(tx)

    return logits


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def inference_checks(calls: dict, torch_logits) -> dict[str, str]:
    """Each fastcnn path's output against PyTorch's logits (or their softmax, for predict)."""
    if torch_logits is None:
        return {name: "unchecked" for name in calls}
    expected = {"fastcnn.predict": softmax(torch_logits.astype(np.float64)).astype(np.float32)}
    return {name: "ok" if matches_reference(call(), expected.get(name, torch_logits)) else "WRONG"
            for name, call in calls.items()}


def measure_inference(workload: Workload, batch_size: int, threads: int, calls_count: int, seed: int,
                      torch) -> dict:
    """One row of the inference table: median time per call and images/s of every path, fastcnn's and PyTorch's."""
    model = workload.build(seed).eval()
    x, _ = synthetic_data(workload.image_shape, batch_size, seed)
    calls = fastcnn_inference_calls(model, x)
    torch_logits = None
    if torch is not None:
        torch_model = torch_model_like(model, torch).eval()
        torch_call = torch_inference_call(torch, torch_model, x)
        torch_logits = torch_call().numpy()
    checks = inference_checks(calls, torch_logits)
    if torch is not None:
        calls["torch model(x), inference_mode"] = torch_call
        checks["torch model(x), inference_mode"] = "ok"  # the ground truth of this section
    paths = {}
    for name, call in calls.items():
        median_ms = statistics.median(timed_samples_ms(call, calls_count))
        paths[name] = {"median_us": median_ms * 1e3, "images_per_second": batch_size / (median_ms / 1e3),
                       "check": checks[name]}
    row = {"model": workload.name, "batch_size": batch_size, "threads": threads, "calls": calls_count,
           "paths": paths}
    add_inference_verdicts(row)
    log(f"[{threads} thread(s)] inference {workload.name}, batch {batch_size}: " + ", ".join(
        f"{name} {path['median_us']:.0f} us" for name, path in paths.items()))
    return row


def add_inference_verdicts(row: dict) -> None:
    """fastcnn's fastest correct path against PyTorch's, and the batch-1 latency target (at the issue's thread
    count only). An unchecked path (no PyTorch to check it against) meets no target: None, as in training."""
    ours = {name: path for name, path in row["paths"].items() if name.startswith("fastcnn")}
    correct = {name: path for name, path in ours.items() if path["check"] in ("ok", "unchecked")}
    fastest = min(correct, key=lambda name: correct[name]["median_us"]) if correct else None
    torch_path = row["paths"].get("torch model(x), inference_mode")
    row["fastest_fastcnn_path"] = fastest
    row["speedup_vs_torch"] = (ratio(torch_path["median_us"], correct[fastest]["median_us"])
                               if fastest and torch_path else None)
    row["target_us"] = (BATCH1_LATENCY_TARGET_US if row["batch_size"] == 1 and row["threads"] == ISSUE_TARGET_THREADS
                        else None)
    if row["target_us"] is None:
        row["meets_target"] = None
    elif fastest is None:
        row["meets_target"] = False  # every fastcnn path was wrong
    elif correct[fastest]["check"] == "unchecked":
        row["meets_target"] = None
    else:
        row["meets_target"] = correct[fastest]["median_us"] <= row["target_us"]

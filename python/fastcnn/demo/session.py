"""The demo's training session: one run at a time in a background thread, its progress, and snapshots for views.

The state lives here, in the server, so a reloaded page (or a second tab) rejoins the run. One `Session` holds:

- the run's progress (status, epoch, batch, loss, accuracy, images/s, curves), updated by a `fit` callback after
  every batch and read by the HTTP threads under `_lock`;
- a twin model, a second `tutorial_cnn` of the same shape that nothing trains. The callback copies the trained
  model's `state_dict()` into it every `snapshot_interval` seconds (between two optimizer steps, so the weights are
  consistent) and at the end of every epoch. The views (filters, feature maps, pooled maps) are computed from the
  twin under `_model_lock`, never from the model being trained, so inspection and training never share a model.
  The training thread only *tries* that lock between batches: a view being drawn delays a snapshot, not training.

Training data: a fixed subset of `train_size` training images (6000 by default, a quick epoch) chosen with a seeded
permutation, and the first `test_size` test images (1000 by default) for validation, the confusion matrix and the
sample images. Subsets are loaded once per process and dataset.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time

import numpy as np

from .. import datasets as _datasets
from ..callbacks import Callback
from ..models import HYPERPARAMETERS, Hyperparameter, tutorial_cnn, validate_hyperparameters
from ..viz import arrays
from . import views as _views

__all__ = ["DATASETS", "Busy", "Session", "check_dataset", "check_train_request"]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    input_size: int
    load: object  # (download: bool) -> ((x_train, y_train), (x_test, y_test))

    def as_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "input_size": self.input_size,
                "classes": _datasets.class_names(self.name)}


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("mnist", "MNIST handwritten digits", 28,
                    lambda download: _datasets.load_mnist(download=download)),
        DatasetInfo("fashion-mnist", "Fashion-MNIST clothes", 28,
                    lambda download: _datasets.load_fashion_mnist(download=download)),
        DatasetInfo("digits", "scikit-learn 8x8 digits (needs scikit-learn)", 8,
                    lambda download: _datasets.load_digits()),
    )
}

PREDICTION_COUNT = 16  # sample predictions shown at the end: the first test images
_LIVE_POINTS = 1000  # per-batch curve points kept; past that every other one is dropped


class Busy(RuntimeError):
    """A run is already going on (the server answers 409)."""


def check_dataset(value) -> str:
    """The dataset's key ('fashion_mnist' is accepted for 'fashion-mnist'), or ValueError naming the choices."""
    key = value.strip().lower().replace("_", "-") if isinstance(value, str) else None
    if key not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(repr(name) for name in DATASETS)}; got {value!r}")
    return key


def check_train_request(body, default_dataset: str = "mnist") -> tuple[str, dict]:
    """(dataset, hyper-parameters) from a /api/train body, checked by `validate_hyperparameters`.

    Missing names and nulls take the table's defaults; the messages are the table's, as the CLI prints them.
    """
    if not isinstance(body, dict):
        raise ValueError(f"the request body must be a JSON object such as {{\"filters\": 8, \"epochs\": 2}}; got "
                         f"a JSON {type(body).__name__.replace('NoneType', 'null')}")
    values = dict(body)
    unknown = sorted(set(values) - set(HYPERPARAMETERS) - {"dataset"})
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r}; expected dataset or one of {', '.join(HYPERPARAMETERS)}")
    dataset = values.pop("dataset", None)
    dataset = check_dataset(default_dataset if dataset is None else dataset)
    params = validate_hyperparameters(input_size=DATASETS[dataset].input_size, **values)
    return dataset, params


@dataclasses.dataclass
class _Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list


_data_cache: dict = {}
_data_lock = threading.Lock()


def load_subset(dataset: str, train_size: int, test_size: int, download: bool = True) -> _Data:
    """The training subset (a seeded permutation's first `train_size`) and the first `test_size` test images.

    MNIST and Fashion-MNIST are downloaded into fastcnn's cache when no copy is found, unless download=False
    (see `fastcnn.datasets`)."""
    key = (dataset, train_size, test_size)
    with _data_lock:  # one load at a time: a second caller waits and then finds it cached
        if key not in _data_cache:
            (x_train, y_train), (x_test, y_test) = DATASETS[dataset].load(download)
            chosen = np.sort(np.random.default_rng(0).permutation(len(y_train))[:train_size])
            _data_cache[key] = _Data(np.ascontiguousarray(x_train[chosen]), y_train[chosen].copy(),
                                     np.ascontiguousarray(x_test[:test_size]), y_test[:test_size].copy(),
                                     _datasets.class_names(dataset))
        return _data_cache[key]


def _finite_or_none(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class _Progress(Callback):
    """Reports every batch to the session, asks fit to stop when the user pressed Stop, and takes snapshots."""

    def __init__(self, session: "Session", run: int, stop: threading.Event, interval: float):
        super().__init__()
        self.session, self.run, self.stop, self.interval = session, run, stop, interval
        self.epoch_started = self.last_snapshot = 0.0
        self.seen = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started, self.seen = time.perf_counter(), 0
        self.session._update(self.run, epoch=epoch + 1, batch=0)

    def on_batch_end(self, batch, logs=None):
        logs = logs or {}
        if self.stop.is_set():
            self.model.stop_training = True  # fit stops after this batch
        now = time.perf_counter()
        self.seen += int(logs.get("size", 0))
        speed = self.seen / (now - self.epoch_started) if now > self.epoch_started else None
        steps = self.params.get("steps") or (batch + 1)
        self.session._batch_end(self.run, batch + 1, logs, speed, steps)
        if now - self.last_snapshot >= self.interval:
            if self.session._snapshot(self.model, wait=False):
                self.last_snapshot = now

    def on_epoch_end(self, epoch, logs=None):
        self.session._snapshot(self.model, wait=True)
        self.last_snapshot = time.perf_counter()
        self.session._epoch_end(self.run, logs or {})


class Session:
    """Training runs and what the page shows about them. Thread-safe; one run at a time.

    Args:
        train_size: training images per epoch (a fixed subset). Default: 6000.
        test_size: test images for validation, the confusion matrix and the sample images. Default: 1000.
        default_dataset: the dataset used when a request names none. Default: "mnist".
        snapshot_interval: seconds between snapshots of the weights while training. Default: 0.4.
    """

    def __init__(self, *, train_size: int = 6000, test_size: int = 1000, default_dataset: str = "mnist",
                 snapshot_interval: float = 0.4):
        self.train_size, self.test_size = int(train_size), int(test_size)
        self.default_dataset = check_dataset(default_dataset)
        self.snapshot_interval = float(snapshot_interval)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified whenever the state changes
        self._version = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._state = self._blank_state(0, None, {}, "idle", "press Train to start")
        self._sample = 0
        # The twin model that views are drawn from, its data and the cached views: guarded by _model_lock.
        self._model_lock = threading.Lock()
        self._twin = None
        self._twin_data: _Data | None = None
        self._snapshot_id = 0
        self._views_cache: dict = {}

    # ------------------------------------------------------------------------------------------ requests

    def start(self, body) -> dict:
        """Check a /api/train body and start a run; the new state. ValueError for a bad value, Busy while a run
        goes on."""
        dataset, params = check_train_request(body, self.default_dataset)
        with self._lock:
            status = self._state["status"]
            if status in ("running", "stopping"):
                where = f"epoch {self._state['epoch']} of {self._state['epochs']}" if self._state["epoch"] else \
                    "loading the data"
                raise Busy(f"a training run is already {status} (run {self._state['run']}, {where}); press Stop "
                           f"and wait for it to end before starting another")
            if self._closed:
                raise Busy("the demo server is shutting down")
            run = self._state["run"] + 1
            self._stop = stop = threading.Event()
            self._state = self._blank_state(run, dataset, params, "running",
                                            f"loading {DATASETS[dataset].title}")
            self._touch()
            self._thread = threading.Thread(target=self._train, args=(run, dataset, params, stop), daemon=True,
                                            name=f"fastcnn-demo-run-{run}")
            self._thread.start()
            return self._public_state()

    def stop(self) -> dict:
        """Ask the running run to stop after its current batch; the new state (a no-op when nothing runs)."""
        with self._lock:
            self._stop.set()
            if self._state["status"] == "running":
                self._state["status"] = "stopping"
                self._state["message"] = "stopping after the current batch"
                self._touch()
            return self._public_state()

    def set_sample(self, value) -> int:
        """Choose the sample image (an index into the test subset) for every page; ValueError when out of range."""
        index = self._sample_spec().validate(value)
        with self._lock:
            self._sample = index
            self._touch()
        return index

    def check_sample(self, value) -> int:
        return self._sample_spec().validate(value)

    def state(self, *, views: bool = True) -> dict:
        """The run's state as JSON-able data; with the current sample's views under "views" (None before a run)."""
        with self._lock:
            state = self._public_state()
        if views:
            state["views"] = self.views(state["sample"])
        return state

    def views(self, sample: int | None = None) -> dict | None:
        """The views of the latest snapshot for a sample image (default: the chosen one); None before any run."""
        with self._model_lock:
            if self._twin is None:
                return None
            data = self._twin_data
            index = min(self._sample if sample is None else int(sample), len(data.y_test) - 1)
            key = (self._snapshot_id, index)
            if key not in self._views_cache:
                views = _views.model_views(self._twin, data.x_test[index], int(data.y_test[index]),
                                           data.class_names, index)
                views["snapshot"] = self._snapshot_id
                self._views_cache = {key: views}  # only the latest is kept: snapshots move on
            return self._views_cache[key]

    def views_key(self, sample: int | None = None):
        """What the current views depend on: (snapshot, sample); the event stream resends views when it changes."""
        with self._model_lock:
            return self._snapshot_id, self._sample if sample is None else sample

    def wait_for_change(self, version: int, timeout: float) -> int:
        """Block until the state's version differs from `version` (or timeout, or close); the current version."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != version or self._closed, timeout)
            return self._version

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float = 10.0) -> None:
        """Stop the run (if any), wake every waiting event stream and wait for the training thread."""
        with self._lock:
            self._closed = True
            self._stop.set()
            self._touch()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # -------------------------------------------------------------------------------------- state helpers

    @staticmethod
    def _blank_state(run, dataset, params, status, message) -> dict:
        return {
            "status": status, "message": message, "run": run, "dataset": dataset, "params": dict(params),
            "epoch": 0, "epochs": params.get("epochs", 0), "batch": 0, "batches": 0,
            "loss": None, "accuracy": None, "images_per_second": None,
            "started": time.time() if status == "running" else None, "elapsed": 0.0, "stopped": False,
            "history": {"epoch": []}, "live": {"x": [], "loss": [], "accuracy": []}, "results": None,
        }

    def _sample_spec(self) -> Hyperparameter:
        with self._model_lock:
            count = len(self._twin_data.y_test) if self._twin_data is not None else self.test_size
        return Hyperparameter("sample", int, 0, count - 1, 0, "index of the test image shown")

    def _touch(self) -> None:
        """Call with _lock held after any change."""
        self._version += 1
        self._changed.notify_all()

    def _public_state(self) -> dict:
        """A copy of the state for JSON (call with _lock held)."""
        state = dict(self._state)
        if state["status"] in ("running", "stopping") and state["started"] is not None:
            state["elapsed"] = round(time.time() - state["started"], 2)
        state["history"] = {key: list(values) for key, values in state["history"].items()}
        state["live"] = {key: list(values) for key, values in state["live"].items()}
        state["params"] = dict(state["params"])
        state["sample"] = self._sample
        state["version"] = self._version
        # Read without _model_lock (plain attribute reads): a view being drawn must not hold up the training thread,
        # which takes _lock after every batch.
        data = self._twin_data
        state["snapshot"] = self._snapshot_id
        state["sample_count"] = len(data.y_test) if data is not None else self.test_size
        return state

    def _update(self, run: int, **values) -> None:
        with self._lock:
            if self._state["run"] != run:
                return
            self._state.update(values)
            self._touch()

    def _batch_end(self, run, batch, logs, speed, steps) -> None:
        with self._lock:
            state = self._state
            if state["run"] != run:
                return
            loss, accuracy = _finite_or_none(logs.get("loss")), _finite_or_none(logs.get("accuracy"))
            state.update(batch=batch, batches=steps, loss=loss, accuracy=accuracy,
                         images_per_second=None if speed is None else round(speed, 1))
            live = state["live"]
            live["x"].append(round(state["epoch"] - 1 + batch / steps, 4))
            live["loss"].append(loss)
            live["accuracy"].append(accuracy)
            if len(live["x"]) > _LIVE_POINTS:
                for key in live:
                    live[key] = live[key][::2]
            self._touch()

    def _epoch_end(self, run: int, logs: dict) -> None:
        with self._lock:
            state = self._state
            if state["run"] != run:
                return
            records = {key: [] for key in ("loss", "accuracy", "val_loss", "val_accuracy")}
            for key, values in state["history"].items():
                if key != "epoch":
                    records[key] = list(values)
            for key in records:
                records[key].append(_finite_or_none(logs.get(key)))
            # history_arrays numbers the epochs; NaN (a missing value) goes back to None for JSON.
            curves = arrays.history_arrays(records)
            state["history"] = {key: [v if v is None or math.isfinite(v) else None for v in values]
                                for key, values in curves.items()}
            self._touch()

    def _snapshot(self, model, wait: bool) -> bool:
        """Copy the trained model's weights into the twin; False when the views hold the lock (try again later)."""
        if not self._model_lock.acquire(blocking=wait):
            return False
        try:
            if self._twin is not None:
                self._twin.load_state_dict(model.state_dict())
                self._snapshot_id += 1
        finally:
            self._model_lock.release()
        with self._lock:
            self._touch()
        return True

    # ------------------------------------------------------------------------------------------ training

    def _train(self, run: int, dataset: str, params: dict, stop: threading.Event) -> None:
        from ..optim import Adam
        from ..training import fit, predict

        try:
            data = load_subset(dataset, self.train_size, self.test_size)
            architecture = {name: params[name] for name in ("filters", "filter_size", "pool_size", "conv_layers")}
            size = DATASETS[dataset].input_size
            model = tutorial_cnn(**architecture, input_size=size, num_classes=len(data.class_names))
            twin = tutorial_cnn(**architecture, input_size=size, num_classes=len(data.class_names), seed=0)
            twin.load_state_dict(model.state_dict())
            twin.eval()
            with self._model_lock:
                self._twin, self._twin_data = twin, data
                self._snapshot_id += 1
                self._views_cache = {}
            self._update(run, message=f"training on {len(data.y_train)} {DATASETS[dataset].title} images")
            stopped_early = stop.is_set()
            if not stopped_early:
                fit(model, data.x_train, data.y_train, epochs=params["epochs"], batch_size=params["batch_size"],
                    optimizer=Adam(model.parameters(), lr=params["learning_rate"]),
                    validation_data=(data.x_test, data.y_test), progress=False,
                    callbacks=[_Progress(self, run, stop, self.snapshot_interval)])
                stopped_early = bool(model.stop_training)  # set only by _Progress, when Stop was pressed
            self._snapshot(model, wait=True)
            with self._model_lock:
                probabilities = predict(twin, data.x_test)
            results = self._results(data, probabilities)
            with self._lock:
                state = self._state
                stopped = stopped_early
                done_epochs = len(state["history"]["epoch"])
                state.update(status="done", stopped=stopped, results=results,
                             elapsed=round(time.time() - state["started"], 2))
                if stopped:
                    state["message"] = (f"stopped during epoch {state['epoch']} after batch {state['batch']} of "
                                        f"{state['batches']}" if state["epoch"] else "stopped before training")
                else:
                    state["message"] = f"finished {done_epochs} epoch" + ("s" if done_epochs != 1 else "")
                self._touch()
        except Exception as error:  # noqa: BLE001 (shown on the page; the server keeps running)
            message = str(error) or type(error).__name__
            if not isinstance(error, (ValueError, TypeError, FloatingPointError, OSError, ImportError)):
                message = f"{type(error).__name__}: {message}"
            with self._lock:
                if self._state["run"] == run:
                    self._state.update(status="error", message=message)
                    if self._state["started"] is not None:
                        self._state["elapsed"] = round(time.time() - self._state["started"], 2)
                    self._touch()

    @staticmethod
    def _results(data: _Data, probabilities: np.ndarray) -> dict:
        predicted = np.argmax(probabilities, axis=1)
        classes = len(data.class_names)
        count = min(PREDICTION_COUNT, len(data.y_test))
        return {
            "class_names": list(data.class_names),
            "confusion_matrix": arrays.confusion_matrix(data.y_test, predicted, classes).tolist(),
            "test_images": int(len(data.y_test)),
            "accuracy": float(np.mean(predicted == data.y_test)),
            "predictions": [
                {"index": i, "image": _views.image_view(_views.input_image(data.x_test[i]))["src"],
                 "predicted": int(predicted[i]), "true": int(data.y_test[i]),
                 "confidence": round(float(probabilities[i, predicted[i]]), 4)}
                for i in range(count)
            ],
        }


def hyperparameter_table() -> list[dict]:
    """HYPERPARAMETERS as JSON-able dicts, in the table's order."""
    return [spec.as_dict() for spec in HYPERPARAMETERS.values()]

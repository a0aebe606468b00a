"""fastcnn.training and fastcnn.callbacks, used as a user would: fit on real digits, callbacks, interrupts, errors,
reproducibility, resuming, and gradient checks that pass for correct layers and fail for a wrong one."""
import math
import os
import signal

import numpy as np
import pytest

import fastcnn
from fastcnn import io, nn
from fastcnn.callbacks import (
    Callback,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
)
from fastcnn.optim import SGD, Adam
from fastcnn.optim.lr_scheduler import ReduceLROnPlateau, StepLR
from fastcnn.training import History, evaluate, fit, gradcheck, input_gradient, predict

# --- data and models ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 8x8 digits as (N, 1, 8, 8) in [0, 1], shuffled once, split 1400 / 397."""
    datasets = pytest.importorskip("sklearn.datasets", exc_type=ImportError)
    data = datasets.load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], data.target[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture
def small(digits):
    x, y, _, _ = digits
    return x[:200], y[:200]


def cnn(seed=0, dropout=0.0, batchnorm=False):
    layers = [nn.Conv2d(1, 8, 3, padding=1, seed=seed)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(8 * 4 * 4, 10, seed=seed + 1))
    return nn.Sequential(*layers)


def weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    a, b = (weights(m) if isinstance(m, nn.Module) else m for m in (a, b))
    assert list(a) == list(b)
    for key in a:
        assert np.array_equal(a[key], b[key]), f"{key} differs"


def flip(x, rng):
    """A random horizontal flip of half the batch: an augmentation that uses its generator."""
    out = x.copy()
    chosen = rng.random(len(x)) < 0.5
    out[chosen] = out[chosen, :, :, ::-1]
    return out


class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_train_begin(self, logs=None):
        self.events.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(("epoch_begin", epoch))

    def on_batch_end(self, batch, logs=None):
        self.events.append(("batch_end", batch, dict(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch, dict(logs)))

    def on_train_end(self, logs=None):
        self.events.append(("train_end", dict(logs)))

    def of(self, kind):
        return [event for event in self.events if event[0] == kind]


# --- fit: learning and History ------------------------------------------------------------------------------------

def test_fit_learns_digits(digits):
    x, y, x_test, y_test = digits
    model = cnn()
    history = fit(model, x, y, epochs=3, batch_size=32, optimizer=Adam(model.parameters(), lr=1e-2),
                  validation_split=0.1, seed=0, progress=False)
    # measured 0.94 to 0.97 test accuracy over seeds 0-4 after 3 epochs
    assert evaluate(model, x_test, y_test)["accuracy"] >= 0.9
    assert history.epoch == [0, 1, 2]
    assert set(history.history) == {"loss", "accuracy", "lr", "val_loss", "val_accuracy"}
    assert all(len(values) == 3 for values in history.history.values())
    assert history.history["loss"][-1] < history.history["loss"][0] / 3
    assert history.history["val_accuracy"][-1] >= 0.9
    assert history.history["lr"] == [1e-2] * 3
    assert not history.interrupted
    assert history.params["samples"] == 1260 and history.params["steps"] == 40 and history.params["epochs"] == 3


def test_default_optimizer_loss_and_history_means(small):
    x, y = small
    recorder = Recorder()
    history = fit(cnn(), x, y, epochs=2, batch_size=64, callbacks=[recorder], progress=False, seed=1)
    assert isinstance(history, History)
    assert history.history["lr"] == [1e-3, 1e-3], "the default optimizer is Adam(lr=1e-3)"
    batches = recorder.of("batch_end")
    assert [b[1] for b in batches] == [0, 1, 2, 3] * 2
    assert [b[2]["size"] for b in batches[:4]] == [64, 64, 64, 8]
    for epoch in range(2):
        last = batches[4 * epoch + 3][2]
        # the epoch's values are the running means the last batch reported (batch-size weighted, as Keras)
        assert history.history["loss"][epoch] == last["loss"]
        assert history.history["accuracy"][epoch] == last["accuracy"]
    assert [e[0] if len(e) == 1 else e[:2] for e in recorder.events if e[0] != "batch_end"] == [
        "train_begin", ("epoch_begin", 0), ("epoch_end", 0), ("epoch_begin", 1), ("epoch_end", 1),
        ("train_end", {"interrupted": False})]


def test_fit_is_the_documented_manual_loop(small):
    """A seeded fit equals, bitwise, the manual loop with shuffling from np.random.default_rng(seed)."""
    x, y = small
    model, twin = cnn(), cnn()
    fit(model, x, y, epochs=2, batch_size=50, optimizer=SGD(model.parameters(), lr=0.1, momentum=0.9),
        seed=5, progress=False)
    optimizer, criterion = SGD(twin.parameters(), lr=0.1, momentum=0.9), nn.CrossEntropyLoss()
    rng = np.random.default_rng(5)
    for _ in range(2):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 50):
            index = order[start:start + 50]
            criterion(twin(x[index]), y[index])
            twin.backward(criterion.backward(), input_grad=False)
            optimizer.step()
            optimizer.zero_grad()
    assert_same_weights(model, twin)


@pytest.mark.parametrize("mode", [True, False])
def test_modes_are_restored(small, mode):
    x, y = small
    model = cnn(batchnorm=True, dropout=0.2)
    model.train(mode)
    model[1].eval()  # a module with its own mode keeps it
    fit(model, x, y, epochs=1, progress=False, validation_split=0.2)
    evaluate(model, x, y)
    predict(model, x)
    input_gradient(model, x[:2], 3)
    assert model.training == mode and not model[1].training
    assert all(m.training == mode for i, m in enumerate(model) if i != 1)


def test_validation_split_holds_out_the_last_samples_before_shuffling(small):
    x, y = small
    x = x.copy()
    x[:, 0, 0, 0] = np.arange(len(x))  # tag every image with its index
    seen = set()

    def record(batch, rng):  # augmentation sees exactly the training batches
        seen.update(int(v) for v in batch[:, 0, 0, 0])
        return batch

    model = cnn()
    history = fit(model, x, y, epochs=2, batch_size=32, validation_split=0.25, augment=record, seed=0,
                  progress=False)
    assert seen == set(range(150)), "the first 75% train, the last 25% (unshuffled) validate"
    assert history.params["samples"] == 150
    final = evaluate(model, x[150:], y[150:])
    assert history.history["val_loss"][-1] == final["loss"]
    assert history.history["val_accuracy"][-1] == final["accuracy"]


def test_validation_data_tuple(small, digits):
    x, y = small
    _, _, x_test, y_test = digits
    model = cnn()
    history = fit(model, x, y, epochs=1, validation_data=(x_test, y_test), progress=False)
    assert history.history["val_loss"] == [evaluate(model, x_test, y_test)["loss"]]


# --- iterable input -----------------------------------------------------------------------------------------------

def batches_of(x, y, size):
    for start in range(0, len(x), size):
        yield x[start:start + size], y[start:start + size]


def test_batches_from_a_callable_a_list_and_arrays_train_identically(small):
    x, y = small
    from_arrays, from_callable, from_list = cnn(), cnn(), cnn()
    fit(from_arrays, x, y, epochs=2, batch_size=40, shuffle=False, progress=False)
    history = fit(from_callable, lambda: batches_of(x, y, 40), epochs=2, progress=False)
    fit(from_list, list(batches_of(x, y, 40)), epochs=2, progress=False)
    assert_same_weights(from_arrays, from_callable)
    assert_same_weights(from_arrays, from_list)
    assert len(history.history["loss"]) == 2 and "accuracy" in history.history


def test_one_shot_generator(small):
    x, y = small
    history = fit(cnn(), batches_of(x, y, 50), epochs=1, progress=False)
    assert len(history.epoch) == 1
    with pytest.raises(ValueError, match=r"fit: x is a one-shot iterator \(a generator\), which can feed only one "
                                         r"epoch; pass a callable"):
        fit(cnn(), batches_of(x, y, 50), epochs=2, progress=False)


def test_endless_generator_with_steps_per_epoch(small):
    x, y = small

    def endless():
        while True:
            yield from batches_of(x, y, 20)

    recorder = Recorder()
    history = fit(cnn(), endless(), epochs=3, steps_per_epoch=4, callbacks=[recorder], progress=False,
                  validation_data=lambda: batches_of(x[:60], y[:60], 30))
    assert [b[1] for b in recorder.of("batch_end")] == [0, 1, 2, 3] * 3
    assert history.params["steps"] == 4 and len(history.history["val_loss"]) == 3
    with pytest.raises(ValueError, match=r"ran out after 10 batches in epoch 1; steps_per_epoch=12"):
        fit(cnn(), lambda: batches_of(x, y, 20), epochs=1, steps_per_epoch=12, progress=False)


def test_bad_batches_are_named(small):
    x, y = small
    bad = x[:20].copy()
    bad[3, 0, 1, 2] = np.inf
    with pytest.raises(ValueError, match=r"x in x batch 1 of epoch 1 holds NaN or infinite values \(first at index "
                                         r"\(3, 0, 1, 2\)"):
        fit(cnn(), [(x[:20], y[:20]), (bad, y[:20])], epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"y in x batch 0 of epoch 1 must hold class labels in \[0, 10\) .* got 12"):
        fit(cnn(), [(x[:4], np.array([1, 2, 12, 0]))], epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"y in x batch 1 of epoch 1 must hold class labels in \[0, 10\) .* got -1"):
        fit(cnn(), [(x[:4], y[:4]), (x[:4], np.array([1, 2, -1, 0]))], epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"x must yield \(x_batch, y_batch\) pairs; x batch 0 of epoch 1 is a ndarray"):
        fit(cnn(), [x[:4]], epochs=1, progress=False)
    with pytest.raises(ValueError, match="x yielded no batches in epoch 1"):
        fit(cnn(), [], epochs=1, progress=False)


# --- reproducibility ----------------------------------------------------------------------------------------------

def test_seeded_runs_are_bitwise_identical(small):
    x, y = small
    runs = []
    for seed in (3, 3, 4):
        model = cnn(dropout=0.3, batchnorm=True)
        history = fit(model, x, y, epochs=2, batch_size=32, seed=seed, augment=[flip], validation_split=0.2,
                      progress=False)
        runs.append((weights(model), history.history))
    assert_same_weights(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert not np.array_equal(runs[0][0]["0.weight"], runs[2][0]["0.weight"]), "another seed trains differently"


def test_unseeded_runs_differ(small):
    x, y = small
    a, b = cnn(), cnn()
    fit(a, x, y, epochs=1, progress=False)
    fit(b, x, y, epochs=1, progress=False)
    assert not np.array_equal(a[0].weight.data, b[0].weight.data)


# --- callbacks ----------------------------------------------------------------------------------------------------

def test_early_stopping_stops_and_restores_best_weights(small):
    x, y = small
    # validating against wrong labels: the better the model fits y, the higher val_loss climbs
    wrong = (y + 1) % 10
    snapshots = {}
    model = cnn()
    stopper = EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    snapshot = LambdaCallback(on_epoch_end=lambda epoch, logs: snapshots.update({epoch: weights(model)}))
    history = fit(model, x, y, epochs=20, batch_size=20, optimizer=Adam(model.parameters(), lr=3e-3),
                  validation_data=(x, wrong), seed=0, progress=False, callbacks=[stopper, snapshot])
    losses = history.history["val_loss"]
    assert len(losses) < 20, "training stopped early"
    best = int(np.argmin(losses))
    assert stopper.best_epoch == best and stopper.best == losses[best]
    assert stopper.stopped_epoch == len(losses) - 1 == best + 1, "patience=1: one epoch without improvement"
    assert_same_weights(model, snapshots[best])
    assert not np.array_equal(snapshots[best]["0.weight"], snapshots[len(losses) - 1]["0.weight"])


def test_early_stopping_patience_and_modes():
    model = cnn()
    stopper = EarlyStopping(monitor="loss", patience=2, min_delta=0.05)
    stopper.set_model(model)
    model.stop_training = False
    stopper.on_train_begin()
    for epoch, value in enumerate([1.0, 0.5, 0.48, 0.6]):  # 0.48 is not 0.05 better than 0.5
        stopper.on_epoch_end(epoch, {"loss": value})
    assert model.stop_training and stopper.stopped_epoch == 3 and stopper.best == 0.5
    assert EarlyStopping(monitor="val_accuracy").mode == "max" and EarlyStopping().mode == "min"


def test_early_stopping_on_a_value_never_logged(small):
    x, y = small
    with pytest.raises(ValueError, match=r"EarlyStopping: monitor 'val_loss' is not among the logged values "
                                         r"\['accuracy', 'loss', 'lr'\] \(val_\* values need validation_data"):
        fit(cnn(), x, y, epochs=2, callbacks=[EarlyStopping()], progress=False)
    with pytest.raises(ValueError, match="mode must be 'auto', 'min' or 'max'"):
        EarlyStopping(mode="up")


def test_stop_training_from_a_callback_stops_after_the_current_batch(small):
    x, y = small
    model = cnn()

    def stop(batch, logs):
        if batch == 2:
            model.stop_training = True

    recorder = Recorder()
    history = fit(model, x, y, epochs=5, batch_size=20, callbacks=[LambdaCallback(on_batch_end=stop), recorder],
                  validation_split=0.2, progress=False)
    assert [b[1] for b in recorder.of("batch_end")] == [0, 1, 2]
    assert history.epoch == [0] and len(history.history["val_loss"]) == 1, "the cut epoch is still validated"
    assert not history.interrupted


def test_learning_rate_scheduler_with_step_lr(small):
    x, y = small
    model = cnn()
    optimizer = SGD(model.parameters(), lr=0.1)
    history = fit(model, x, y, epochs=5, optimizer=optimizer, progress=False,
                  callbacks=[LearningRateScheduler(StepLR(optimizer, step_size=2, gamma=0.5))])
    assert history.history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025], rel=1e-12)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025), "after 5 steps: 0.1 * 0.5 ** (5 // 2)"


@pytest.mark.parametrize("schedule, expected", [
    (lambda epoch: 0.1 * 0.5 ** epoch, [0.1, 0.05, 0.025]),
    (lambda epoch, lr: lr * 0.5, [0.05, 0.025, 0.0125]),  # Keras's form, from the current lr
])
def test_learning_rate_scheduler_with_a_function(small, schedule, expected):
    x, y = small
    model = cnn()
    history = fit(model, x, y, epochs=3, optimizer=SGD(model.parameters(), lr=0.1), progress=False,
                  callbacks=[LearningRateScheduler(schedule)])
    assert history.history["lr"] == pytest.approx(expected, rel=1e-12)


class SpyPlateau(ReduceLROnPlateau):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fed = []

    def step(self, metrics):
        self.fed.append(metrics)
        super().step(metrics)


@pytest.mark.parametrize("validate", [True, False])
def test_reduce_lr_on_plateau_is_fed_val_loss_or_loss(small, validate):
    x, y = small
    model = cnn()
    model.freeze()  # nothing learns: the monitored loss stays put, a plateau
    optimizer = SGD(model.parameters(), lr=0.1)
    plateau = SpyPlateau(optimizer, factor=0.5, patience=1)
    history = fit(model, x, y, epochs=5, optimizer=optimizer, progress=False, shuffle=False,
                  validation_split=0.2 if validate else 0.0, callbacks=[LearningRateScheduler(plateau)])
    assert plateau.fed == history.history["val_loss" if validate else "loss"]
    # epoch 0 sets the best; epochs 1 and 2 are bad, so after epoch 2 (more than patience=1) the lr halves
    assert history.history["lr"] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)


def test_scheduler_errors(small):
    x, y = small
    model = cnn()
    other = SGD(cnn().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="the scheduler drives a different optimizer than the one fit trains with"):
        fit(model, x, y, epochs=1, callbacks=[LearningRateScheduler(StepLR(other, 1))], progress=False)
    with pytest.raises(ValueError, match=r"the schedule must return a finite float >= 0; got nan for epoch 0"):
        fit(model, x, y, epochs=1, callbacks=[LearningRateScheduler(lambda epoch: math.nan)], progress=False)
    with pytest.raises(TypeError, match="schedule must be an lr_scheduler object or a function"):
        LearningRateScheduler(0.1)
    plateau = ReduceLROnPlateau(optimizer := SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match=r"monitor 'val_accuracy' is not among the logged values"):
        fit(model, x, y, epochs=1, optimizer=optimizer, progress=False,
            callbacks=[LearningRateScheduler(plateau, monitor="val_accuracy")])


# --- failures and interrupts --------------------------------------------------------------------------------------

def test_nan_loss_stops_with_a_clear_error(small):
    x, y = small
    model = cnn()
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(FloatingPointError, match=r"fit: the (loss|model's outputs) became (nan|inf|NaN or infinite) "
                                                  r"at epoch 1, batch \d+; training stopped before this batch's "
                                                  r"update. Lower the learning rate \(now 1e\+20\)"):
        fit(model, x, y, epochs=3, batch_size=20, optimizer=SGD(model.parameters(), lr=1e20), progress=False)
    assert signal.getsignal(signal.SIGINT) is handler
    assert model.training


class InterruptInBackward(nn.Identity):
    """Raises KeyboardInterrupt halfway through a backward pass, once armed: the layers after it have already
    added into their param.grad."""

    armed = False

    def backward(self, grad_output, input_grad=True):
        if self.armed:
            raise KeyboardInterrupt
        return grad_output


@pytest.mark.parametrize("how", ["raise", "signal", "mid_backward"])
def test_keyboard_interrupt_returns_an_interrupted_history_and_a_usable_model(small, how):
    x, y = small
    trap = InterruptInBackward()
    layers = list(cnn(batchnorm=True))
    model = nn.Sequential(*layers[:5], trap, *layers[5:])  # between Flatten and Linear
    handler = signal.getsignal(signal.SIGINT)

    def interrupt(batch, logs):
        if batch == 2 and len(recorder.of("epoch_end")) == 1:
            if how == "raise":
                raise KeyboardInterrupt
            if how == "signal":
                os.kill(os.getpid(), signal.SIGINT)
            trap.armed = True  # the next batch's backward is interrupted

    recorder = Recorder()
    history = fit(model, x, y, epochs=5, batch_size=20, progress=False, validation_split=0.1,
                  callbacks=[recorder, LambdaCallback(on_batch_end=interrupt)])
    trap.armed = False
    assert history.interrupted
    assert history.epoch == [0] and len(history.history["val_loss"]) == 1, "the cut epoch is not recorded"
    assert recorder.of("train_end") == [("train_end", {"interrupted": True})]
    second_epoch = [b[1] for b in recorder.of("batch_end")][9:]
    assert second_epoch == [0, 1, 2], "it stopped right after the batch that was running"
    assert signal.getsignal(signal.SIGINT) is handler
    assert all(not p.grad.any() for p in model.parameters())
    probabilities = predict(model, x)
    assert np.all(np.isfinite(probabilities))
    fit(model, x, y, epochs=1, progress=False)  # and training can go on


# --- argument and data errors -------------------------------------------------------------------------------------

def test_non_finite_data_is_rejected_naming_x_or_y_and_the_index(small):
    x, y = small
    bad_x = x.copy()
    bad_x[5, 0, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"fit: x holds NaN or infinite values \(first at index \(5, 0, 2, 3\)"):
        fit(cnn(), bad_x, y, epochs=1, progress=False)
    bad_y = y.astype(np.float64)
    bad_y[7] = np.inf
    with pytest.raises(ValueError, match=r"fit: y holds NaN or infinite values \(first at index 7\)"):
        fit(cnn(), x, bad_y, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"validation_data x holds NaN"):
        fit(cnn(), x, y, epochs=1, validation_data=(bad_x, y), progress=False)


@pytest.mark.parametrize("change, error, pattern", [
    (dict(y=np.arange(200) % 11), ValueError,
     r"fit: y must hold class labels in \[0, 10\) for the model's 10 outputs; got 10 at index 10"),
    (dict(y=-np.ones(200, int)), ValueError, r"got -1 at index 0"),
    (dict(y=np.full(200, 0.5)), ValueError, r"fit: y must hold integer class labels; got 0.5 at index 0"),
    (dict(y=np.array(["cat"] * 200)), TypeError, r"fit: y must hold integer class labels; got dtype <U3"),
    (dict(y=np.zeros(199, int)), ValueError, r"fit: x and y must have the same length; got 200 and 199"),
    (dict(y=np.zeros((200, 1), int)), ValueError, r"fit: y must be a 1-D array of class labels"),
    (dict(y=None), TypeError, r"fit: y is required when x is an array"),
    (dict(x=np.zeros((0, 1, 8, 8)), y=np.zeros(0, int)), ValueError, r"fit: x is empty"),
    (dict(x=np.zeros(5)), ValueError, r"fit: x must be a batch of shape \(N, ...\)"),
    (dict(x="images"), TypeError, r"fit: x must be an array of numbers"),
    (dict(x=np.zeros((200, 1, 8, 8), complex)), TypeError, r"fit: x must hold numbers; got dtype complex128"),
    (dict(epochs=0), ValueError, r"fit: epochs must be an int >= 1; got 0"),
    (dict(epochs=2.0), TypeError, r"fit: epochs must be an int >= 1; got float 2.0"),
    (dict(batch_size=0), ValueError, r"fit: batch_size must be an int >= 1; got 0"),
    (dict(batch_size=True), TypeError, r"fit: batch_size must be an int >= 1; got True"),
    (dict(validation_split=1.0), ValueError, r"fit: validation_split must be a float in \[0, 1\); got 1.0"),
    (dict(validation_split=-0.1), ValueError, r"validation_split must be a float in \[0, 1\); got -0.1"),
    (dict(validation_split="0.1"), TypeError, r"validation_split must be a float in \[0, 1\); got '0.1'"),
    (dict(validation_split=0.999), ValueError, r"validation_split=0.999 of 200 samples leaves 0 for training and "
                                               r"200 for validation; both need >= 1"),
    (dict(validation_split=0.1, validation_data=(np.zeros((2, 1, 8, 8)), [0, 1])), ValueError,
     r"give validation_data or validation_split, not both"),
    (dict(callbacks=[print]), TypeError, r"fit: callbacks\[0\] must be a fastcnn.callbacks.Callback; got "
                                         r"builtin_function_or_method \(wrap plain functions in LambdaCallback\)"),
    (dict(optimizer="adam"), TypeError, r"fit: optimizer must be an optimizer such as fastcnn.optim.SGD"),
    (dict(loss=nn.MSELoss), TypeError, r"fit: loss must be a criterion such as fastcnn.nn.CrossEntropyLoss\(\) "
                                       r"\(callable, with backward\(\)\); got type"),
    (dict(augment="flip"), TypeError, r"fit: augment must be a callable t\(x, rng\) -> x"),
    (dict(augment=lambda x, rng: x[:2]), ValueError, r"must return a batch of 64 images; got shape \(2, 1, 8, 8\)"),
    (dict(seed=-1), ValueError, r"fit: seed must be an int >= 0; got -1"),
    (dict(model=lambda x: x), TypeError, r"fit: model must be a fastcnn.nn.Module; got function"),
    (dict(x=np.zeros((200, 3, 8, 8))), ValueError, r"Conv2d: expected input of shape"),
    (dict(x=object(), y=None), TypeError, r"fit: x must be an array \(with y\), an iterable of \(x_batch, y_batch\)"),
])
def test_fit_argument_errors(small, change, error, pattern):
    x, y = small
    arguments = dict(model=cnn(), x=x, y=y, epochs=1, progress=False)
    arguments.update(change)
    with pytest.raises(error, match=pattern):
        fit(arguments.pop("model"), arguments.pop("x"), arguments.pop("y"), **arguments)


# --- progress -----------------------------------------------------------------------------------------------------

def test_progress_bar_shows_epoch_loss_accuracy_and_speed(small, capsys):
    pytest.importorskip("tqdm", exc_type=ImportError)
    x, y = small
    fit(cnn(), x, y, epochs=2, validation_split=0.2, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    for text in ("Epoch 1/2", "Epoch 2/2", "img/s", "loss=", "accuracy=", "val_loss=", "val_accuracy="):
        assert text in captured.err
    fit(cnn(), x, y, epochs=1, progress=False)
    assert capsys.readouterr().err == ""


def test_progress_bar_survives_a_bare_stream(small, monkeypatch):
    pytest.importorskip("tqdm", exc_type=ImportError)

    class Bare:  # what some IDEs and services put in sys.stderr: no isatty, no fileno
        def __init__(self):
            self.text = []

        def write(self, text):
            self.text.append(text)

        def flush(self):
            pass

    x, y = small
    stream = Bare()
    monkeypatch.setattr("sys.stderr", stream)
    fit(cnn(), x, y, epochs=1, progress=True)
    assert "Epoch 1/1" in "".join(stream.text)
    monkeypatch.setattr("sys.stderr", None)  # pythonw
    fit(cnn(), x, y, epochs=1, progress=True)


def test_fit_in_a_worker_thread(small):
    """Signal handlers can only be installed in the main thread: elsewhere fit trains without one."""
    import threading

    x, y = small
    results = []
    worker = threading.Thread(target=lambda: results.append(fit(cnn(), x, y, epochs=1, progress=False)))
    worker.start()
    worker.join()
    assert len(results) == 1 and not results[0].interrupted


def test_fit_with_a_regression_loss():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3
    model = nn.Sequential(nn.Linear(3, 1, seed=0))
    history = fit(model, x, y, epochs=30, batch_size=32, loss=nn.MSELoss(), seed=0, progress=False,
                  optimizer=SGD(model.parameters(), lr=0.1), validation_split=0.25)
    assert set(history.history) == {"loss", "lr", "val_loss"}, "no accuracy without class labels"
    assert history.history["val_loss"][-1] < 1e-4
    np.testing.assert_allclose(model[0].weight.data, [[1.0, -2.0, 0.5]], atol=1e-2)
    bad = y.copy()
    bad[9, 0] = np.nan
    with pytest.raises(ValueError, match=r"fit: y holds NaN or infinite values \(first at index \(9, 0\)"):
        fit(model, x, bad, epochs=1, loss=nn.MSELoss(), progress=False)


# --- evaluate and predict -----------------------------------------------------------------------------------------

def test_evaluate_and_predict(small):
    x, y = small
    model = cnn()
    fit(model, x, y, epochs=2, progress=False, seed=0)
    probabilities = predict(model, x, batch_size=33)
    assert probabilities.shape == (200, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    model.eval()
    with fastcnn.no_grad():
        logits = model(x)
    assert np.array_equal(probabilities.argmax(axis=1), logits.argmax(axis=1))
    scores = evaluate(model, x, y, batch_size=7)
    assert scores["accuracy"] == np.mean(logits.argmax(axis=1) == y)
    assert scores["loss"] == pytest.approx(nn.CrossEntropyLoss()(logits, y), rel=1e-6)
    with pytest.raises(ValueError, match=r"evaluate: y must hold class labels in \[0, 10\)"):
        evaluate(model, x, y + 5)


def test_predict_is_stable_for_huge_logits(small):
    x, _ = small
    model = cnn()
    model[-1].weight.data *= 1e5
    probabilities = predict(model, x)
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


# --- checkpoints and resuming -------------------------------------------------------------------------------------

def training_setup(seed=0):
    model = cnn(seed=seed, dropout=0.3, batchnorm=True)
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
    # step_size=2 and resuming after epoch 1: only the restored scheduler knows the lr halves after epoch 2
    return model, optimizer, StepLR(optimizer, step_size=2, gamma=0.5)


def test_resuming_from_a_checkpoint_equals_an_uninterrupted_run(small, tmp_path):
    x, y = small
    options = dict(batch_size=32, augment=flip, seed=11, validation_split=0.2, progress=False)

    model, optimizer, scheduler = training_setup()
    full = fit(model, x, y, epochs=4, optimizer=optimizer, callbacks=[LearningRateScheduler(scheduler)], **options)

    first, optimizer, scheduler = training_setup()
    # listed first, the checkpoint still runs after the scheduler: it must save the lr the next epoch uses
    checkpoint = ModelCheckpoint(tmp_path / "ckpt-{epoch:02d}.npz")
    fit(first, x, y, epochs=2, optimizer=optimizer, callbacks=[checkpoint, LearningRateScheduler(scheduler)],
        **options)
    assert sorted(os.listdir(tmp_path)) == ["ckpt-01.npz", "ckpt-02.npz"]
    assert checkpoint.last_saved == str(tmp_path / "ckpt-02.npz")
    assert_same_weights(io.load(tmp_path / "ckpt-02.npz"), first), "a checkpoint is also a model file"

    resumed, optimizer, scheduler = training_setup(seed=99)  # a fresh process would start from other weights
    rest = fit(resumed, x, y, epochs=4, optimizer=optimizer, resume_from=tmp_path / "ckpt-01.npz",
               callbacks=[LearningRateScheduler(scheduler)], **options)
    assert rest.epoch == [1, 2, 3]
    assert full.history["lr"] == pytest.approx([0.05, 0.05, 0.025, 0.025])
    assert rest.history["lr"] == full.history["lr"][1:]
    assert rest.history["loss"] == full.history["loss"][1:]
    assert_same_weights(resumed, model)


def test_resume_refuses_a_different_optimizer(small, tmp_path):
    x, y = small
    model, optimizer, _ = training_setup()
    fit(model, x, y, epochs=1, optimizer=optimizer, callbacks=[ModelCheckpoint(tmp_path / "c.npz")], progress=False,
        seed=0)
    other, _, _ = training_setup()
    with pytest.raises(ValueError, match=r"holds the state of a SGD optimizer; fit's optimizer is a Adam"):
        fit(other, x, y, epochs=2, resume_from=tmp_path / "c.npz", progress=False)
    plain = cnn(dropout=0.3)
    before = weights(plain)
    with pytest.raises(ValueError, match=r"resume_from=.* does not fit the model and optimizer: .*missing from the "
                                         r"checkpoint: 5\.weight, 5\.bias; unexpected in the checkpoint: 1\.weight"):
        fit(plain, x, y, epochs=2, optimizer=SGD(plain.parameters(), lr=0.1, momentum=0.9),
            resume_from=tmp_path / "c.npz", progress=False)
    assert_same_weights(plain, before)
    same, _, _ = training_setup(seed=3)
    before = weights(same)
    groups = [{"params": list(same[0].parameters())}, {"params": [p for m in list(same)[1:] for p in m.parameters()]}]
    with pytest.raises(ValueError, match=r"does not fit the model and optimizer: .*param_groups must be a list of 2"):
        fit(same, x, y, epochs=2, optimizer=SGD(groups, lr=0.1), resume_from=tmp_path / "c.npz", progress=False)
    assert_same_weights(same, before)  # the model loaded fine, then was put back when the optimizer's state failed
    with pytest.raises(ValueError, match=r"has random states for 1 Dropout layers; the model has 0"):
        fit(cnn(batchnorm=True), x, y, epochs=2, optimizer=SGD(plain.parameters(), lr=0.1, momentum=0.9),
            resume_from=tmp_path / "c.npz", progress=False, seed=0)


def test_model_checkpoint_save_best_only(small, tmp_path):
    x, y = small
    model = cnn()
    path = tmp_path / "best.npz"
    saved = []  # the epoch in the file when each epoch starts (ModelCheckpoint writes after the other callbacks)
    checkpoint = ModelCheckpoint(path, save_best_only=True)
    history = fit(model, x, y, epochs=4, validation_data=(x, (y + 1) % 10), seed=0, progress=False,
                  optimizer=Adam(model.parameters(), lr=3e-3), callbacks=[checkpoint, LambdaCallback(
                      on_epoch_begin=lambda e, logs: saved.append(io.load_checkpoint(path)["epoch"] if e else None))])
    saved = saved[1:] + [io.load_checkpoint(path)["epoch"]]
    losses = history.history["val_loss"]
    assert saved == [int(np.argmin(losses[:e + 1])) + 1 for e in range(4)]
    assert checkpoint.best == min(losses)
    assert os.listdir(tmp_path) == ["best.npz"]
    with pytest.raises(ValueError, match=r"ModelCheckpoint: monitor 'val_loss' is not among the logged values"):
        fit(model, x, y, epochs=1, callbacks=[ModelCheckpoint(tmp_path / "b.npz", save_best_only=True)],
            progress=False)


# --- gradcheck ----------------------------------------------------------------------------------------------------

def _x(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


LAYERS = {
    "conv": (lambda: nn.Conv2d(2, 3, 3, seed=0), (2, 2, 5, 5)),
    "conv_stride_padding_groups": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, seed=0), (2, 4, 7, 7)),
    "conv_dilation_no_bias": (lambda: nn.Conv2d(2, 2, 3, dilation=2, padding=2, bias=False, seed=0), (1, 2, 6, 6)),
    "max_pool": (lambda: nn.MaxPool2d(2), (2, 2, 4, 4)),
    "max_pool_overlapping_padded": (lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 2, 5, 5)),
    "avg_pool": (lambda: nn.AvgPool2d(3, stride=2, padding=1), (2, 2, 5, 5)),
    "avg_pool_ceil_no_pad_count": (lambda: nn.AvgPool2d(2, padding=1, ceil_mode=True, count_include_pad=False),
                                   (1, 2, 5, 5)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(3), (4, 3, 3, 3)),
    "batchnorm1d": (lambda: nn.BatchNorm1d(5), (6, 5)),
    "relu": (nn.ReLU, (3, 7)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.1), (3, 7)),
    "sigmoid": (nn.Sigmoid, (3, 7)),
    "tanh": (nn.Tanh, (3, 7)),
    "linear": (lambda: nn.Linear(6, 4, seed=0), (3, 6)),
    "dropout_p0": (lambda: nn.Dropout(0.0), (3, 8)),
    "dropout_fixed_mask": (lambda: nn.Dropout(0.5, seed=0), (3, 8)),
    "global_avg_pool": (nn.GlobalAvgPool2d, (2, 3, 4, 4)),
    "normalize": (lambda: nn.Normalize([0.5, -1.0], [2.0, 0.5]), (2, 2, 3, 3)),
    "residual": (lambda: nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, seed=1), nn.Tanh())), (2, 2, 4, 4)),
    "flatten": (nn.Flatten, (2, 2, 3, 3)),
    "identity": (nn.Identity, (2, 3)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_gradcheck_passes_for_every_layer_kind(name):
    make, shape = LAYERS[name]
    assert gradcheck(make(), _x(*shape)) is True


def every_layer_network():
    return nn.Sequential(
        nn.Normalize(0.5, 2.0),
        nn.Conv2d(1, 4, 3, padding=1, seed=0), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2, seed=1), nn.LeakyReLU(0.1),
        nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, seed=2), nn.Tanh())),
        nn.MaxPool2d(2, stride=1), nn.AvgPool2d(2, stride=1, padding=1), nn.Sigmoid(),
        nn.Dropout(0.3, seed=0), nn.GlobalAvgPool2d(),
        nn.Linear(4, 6, seed=3), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3, seed=4),
    )


def test_gradcheck_passes_for_a_network_of_every_layer_kind():
    assert gradcheck(every_layer_network(), _x(6, 1, 6, 6), max_elements=40) is True


def test_gradcheck_checks_eval_mode_batchnorm():
    model = every_layer_network()
    model.train()
    model(_x(6, 1, 6, 6, seed=3))  # running statistics worth using
    model.eval()
    assert gradcheck(model, _x(6, 1, 6, 6), max_elements=40)


class WrongScale(nn.Module):
    """x * w per channel, with a backward that is `error` times too large in the input or the weight gradient."""

    def __init__(self, input_error=1.0, weight_error=1.0):
        super().__init__()
        self.weight = nn.Parameter(np.array([0.7, -1.2, 0.4]))
        self.input_error, self.weight_error = input_error, weight_error
        self._x = None

    def forward(self, x):
        self._x = x if self._recording() else None
        return x * self.weight.data.reshape(1, -1, 1, 1)

    def backward(self, grad_output, input_grad=True):
        self._accumulate(self.weight, (grad_output * self._x).sum(axis=(0, 2, 3)) * self.weight_error)
        return grad_output * self.weight.data.reshape(1, -1, 1, 1) * self.input_error


def _in_a_network(layer):
    return nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, seed=0), nn.BatchNorm2d(3), nn.ReLU(), layer,
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 4, seed=1))


def test_gradcheck_fails_for_a_wrong_layer():
    x = _x(2, 3, 4, 4)
    assert gradcheck(WrongScale(), x) and gradcheck(_in_a_network(WrongScale()), x)
    with pytest.raises(AssertionError, match=r"gradcheck: WrongScale: gradient of the input differs at \d+ of 96 "
                                             r"elements; worst at index \(\d, \d, \d, \d\): backward gave"):
        gradcheck(WrongScale(input_error=1.05), x)
    with pytest.raises(AssertionError, match=r"gradient of the parameter 'weight' differs at 3 of 3 elements"):
        gradcheck(WrongScale(weight_error=0.95), x)
    with pytest.raises(AssertionError, match=r"gradcheck: Sequential: gradient of the input differs"):
        gradcheck(_in_a_network(WrongScale(input_error=1.02)), x)
    with pytest.raises(AssertionError, match=r"gradient of the parameter '3.weight' differs"):
        gradcheck(_in_a_network(WrongScale(weight_error=1.02)), x)


def test_gradcheck_restores_grads_buffers_and_dropout_randomness():
    model = nn.Sequential(nn.Linear(4, 6, seed=0), nn.BatchNorm1d(6), nn.Dropout(0.5, seed=1), nn.Linear(6, 2, seed=2))
    twin = nn.Sequential(nn.Linear(4, 6, seed=0), nn.BatchNorm1d(6), nn.Dropout(0.5, seed=1), nn.Linear(6, 2, seed=2))
    for p in model.parameters():
        p.grad[...] = 0.25
    before = weights(model)
    gradcheck(model, _x(5, 4))
    assert all(np.all(p.grad == 0.25) for p in model.parameters())
    assert_same_weights(model, before)
    np.testing.assert_array_equal(model(_x(5, 4, seed=1)), twin(_x(5, 4, seed=1)))  # the same next dropout mask


def test_gradcheck_errors():
    with pytest.raises(AssertionError, match=r"backward returned None for the input gradient"):
        class NoInputGradient(nn.Identity):
            def backward(self, grad_output, input_grad=True):
                return None
        gradcheck(NoInputGradient(), _x(2, 3))
    with pytest.raises(ValueError, match="gradcheck: eps must be > 0"):
        gradcheck(nn.ReLU(), _x(2, 3), eps=0)
    with pytest.raises(TypeError, match="gradcheck: model must be a fastcnn.nn.Module"):
        gradcheck(np.tanh, _x(2, 3))


# --- input_gradient -----------------------------------------------------------------------------------------------

def test_input_gradient_matches_finite_differences_and_leaves_param_grads_alone():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, seed=0), nn.BatchNorm2d(3), nn.Tanh(), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(3 * 3 * 3, 4, seed=1))
    model.train()
    model(_x(8, 1, 6, 6, seed=2))  # running statistics; eval mode uses them
    model.train()
    for p in model.parameters():
        p.grad[...] = 1.0
    x = _x(3, 1, 6, 6, seed=4)
    targets = np.array([0, 3, 1])
    saliency = input_gradient(model, x, targets)
    assert saliency.shape == x.shape and saliency.dtype == np.float32
    assert model.training, "the mode is restored"
    assert all(np.all(p.grad == 1.0) for p in model.parameters()), "param.grad untouched"

    model.eval()
    eps = 1e-2
    numeric = np.zeros_like(saliency, dtype=np.float64)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += eps
        down[index] -= eps
        with fastcnn.no_grad():
            difference = model(up).astype(np.float64) - model(down).astype(np.float64)
        numeric[index] = difference[index[0], targets[index[0]]] / (2 * eps)
    np.testing.assert_allclose(saliency, numeric, rtol=1e-2, atol=2e-4)
    np.testing.assert_array_equal(input_gradient(model, x, 3)[1], saliency[1])
    with pytest.raises(ValueError, match=r"input_gradient: target must hold class labels in \[0, 4\) .* got 4"):
        input_gradient(model, x, 4)

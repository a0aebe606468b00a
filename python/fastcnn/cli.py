"""The `fastcnn` command: train the tutorial CNN and see what it learned, evaluate a saved model, classify images.

    fastcnn                         the main command: `fastcnn train` with every default (full MNIST, >= 98%)
    fastcnn train [options]         train models.tutorial_cnn; write the model, history.json, figures, report.html
    fastcnn evaluate MODEL          loss, accuracy and a per-class table on a dataset's test images
    fastcnn predict MODEL IMAGE...  the top classes of PNG/JPEG files, with probabilities
    fastcnn bench [...]             fastcnn.bench (kernel timings); `fastcnn bench --help` for its options
    fastcnn demo [...]              fastcnn.demo, the browser demo; where this install has none, says so (status 2)

`python -m fastcnn` is the same command. Options given without a command go to `train` (`fastcnn --epochs 5`).

train writes into `--out DIR`, by default a new folder `runs/<dataset>-<YYYYmmdd-HHMMSS>` under the current
directory (a new one each run, so no run overwrites another): `model.npz` (`fastcnn.io.save`, with input_shape,
class_names, the dataset, the hyper-parameters and the test scores as metadata), `history.json`
(`{"epoch": [...], "history": {"loss": [...], "accuracy": [...], "lr": [...]}, "interrupted": false,
"test": {"loss": ..., "accuracy": ...}, "train_seconds": ...}`), seven PNGs (filters.png, feature_maps.png,
pooled_maps.png, curves.png, confusion_matrix.png, saliency.png, predictions.png) and report.html, one page that
embeds them all (see `fastcnn.report`). Every file is written to a temporary name and renamed into place.

predict resizes each image to the model's input_shape (from its metadata), as grayscale or RGB. Transparent
pixels are laid on white first. MNIST, Fashion-MNIST and the 8x8 digits are light strokes on a dark background, so
for a grayscale model `--invert auto` (the default) inverts an image whose border (its outermost pixels after
resizing) averages brighter than mid-gray: a dark digit drawn on white paper. `--invert yes|no` decides it yourself;
RGB images are never inverted automatically.

`mpiexec -n N fastcnn train ...` trains data-parallel on N processes (docs/distributed.md): --batch-size is the
global batch, split evenly across them (64 on 3 processes trains 21 on each: a global batch of 63, which the run
prints and records), each process uses cores / N kernel threads unless --threads says otherwise, and rank 0 alone
prints and writes the run's folder.

Exit status: 0 on success; 2 with one line `fastcnn: error: ...` on stderr for a bad argument, a missing or corrupt
model file, an unreadable image or missing data (the line says how to install it); 1 when training diverges; 130
after Ctrl-C (train still saves the model trained so far, its history and the report, and says so).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser", "MAIN_COMMAND_EPOCHS", "SGD_LEARNING_RATE"]

# The shared table's 5 epochs take 45-55 s of training alone on 2 idle cores (9-11 s per epoch on MNIST) and two or
# three times that on a shared machine. 3 epochs reach 98.33-98.45% test accuracy (seeds 0-3, measured) in 27-36 s,
# so the README's main command takes about half a minute idle and stays near a minute on a busy machine. Every
# other default is the table's.
MAIN_COMMAND_EPOCHS = 3
# The table's learning rate (1e-3) is Adam's; plain SGD (momentum 0.9) needs a larger step to train in 3 epochs.
SGD_LEARNING_RATE = 0.05
SGD_MOMENTUM = 0.9

DATASETS = ("mnist", "fashion-mnist", "digits")
_INPUT_SIZE = {"mnist": 28, "fashion-mnist": 28, "digits": 8}
# Hyper-parameters of `models.HYPERPARAMETERS` and their flags; help, rule and default come from the table.
_FLAGS = {"filters": "--filters", "filter_size": "--filter-size", "pool_size": "--pool-size",
          "conv_layers": "--conv-layers", "learning_rate": "--lr", "epochs": "--epochs", "batch_size": "--batch-size"}
MODEL_FILE = "model.npz"
HISTORY_FILE = "history.json"
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


class CommandError(Exception):
    """A failure the user can act on: printed as one line `fastcnn: error: <message>`, exit status `status`."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (via CommandError), not the usage text and a message."""

    def error(self, message):
        raise CommandError(f"{message} (see `{self.prog} --help`)")


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}; got {text!r}")
        return value
    return parse


# --------------------------------------------------------------------------------------------------- the parser

def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .models import HYPERPARAMETERS

    parser = _Parser(prog="fastcnn", description="Train a small CNN on MNIST-like data and see what it learned.",
                     epilog="With no arguments: `fastcnn train` on the full MNIST training set (>= 98% test "
                            "accuracy in about a minute on 2 cores).")
    parser.add_argument("--version", action="version", version=f"fastcnn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="train the tutorial CNN and write the model, figures and report.html",
                                description="Train fastcnn.models.tutorial_cnn and write the model, history.json, "
                                            "the figures and report.html to --out.")
    train.add_argument("--dataset", choices=DATASETS, default="mnist", help="training data (default: mnist)")
    for name, flag in _FLAGS.items():
        spec = HYPERPARAMETERS[name]
        default = {"epochs": MAIN_COMMAND_EPOCHS,
                   "learning_rate": f"{spec.default:g} with adam, {SGD_LEARNING_RATE:g} with sgd"}.get(name, spec.default)
        # Read as text and checked by models.validate_hyperparameters, so the demo and the CLI refuse the same
        # values with the same words.
        train.add_argument(flag, dest=name, metavar=name.split("_")[-1].upper() if name != "learning_rate" else "LR",
                           help=f"{spec.help}: {spec.rule} (default: {default})")
    train.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                       help=f"adam, or sgd with momentum {SGD_MOMENTUM} (default: adam)")
    train.add_argument("--augment", action="store_true",
                       help="random shifts (crops of the padded image) and rotations up to 10 degrees; "
                            "horizontal flips too for fashion-mnist")
    train.add_argument("--seed", type=_int_at_least(0), default=0,
                       help="seeds the initial weights, shuffling and augmentation (default: 0)")
    train.add_argument("--out", metavar="DIR", help="output folder (default: a new runs/<dataset>-<timestamp>)")
    train.add_argument("--threads", type=_int_at_least(1),
                       help="threads for the kernels (default: every usable core)")
    train.add_argument("--download", action="store_true",
                       help="download mnist or fashion-mnist from the official source when no copy is installed")
    train.add_argument("--quiet", action="store_true", help="no progress bar; print only the result")

    evaluate = commands.add_parser("evaluate", help="loss, accuracy and per-class accuracy of a saved model",
                                   description="Evaluate a saved model on a dataset's test images.")
    evaluate.add_argument("model", metavar="MODEL", help="a model file written by `fastcnn train` or fastcnn.io.save")
    evaluate.add_argument("--dataset", choices=DATASETS,
                          help="default: the dataset recorded in the model file, else mnist")
    evaluate.add_argument("--download", action="store_true", help="as train --download")
    evaluate.add_argument("--threads", type=_int_at_least(1), help="threads for the kernels")

    predict = commands.add_parser("predict", help="classify image files (PNG, JPEG, ...)",
                                  description="Classify images with a saved model. Each image is converted to the "
                                              "model's input size and channels (its input_shape metadata).")
    predict.add_argument("model", metavar="MODEL", help="a model file written by `fastcnn train` or fastcnn.io.save")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    predict.add_argument("--top", type=_int_at_least(1), default=3, help="classes shown (default: 3)")
    predict.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                         help="turn dark-on-light into light-on-dark like the training data; auto: when a "
                              "grayscale image's border is brighter than mid-gray (default: auto)")
    predict.add_argument("--threads", type=_int_at_least(1), help="threads for the kernels")

    commands.add_parser("bench", add_help=False, help="time the kernels (fastcnn.bench; `fastcnn bench --help`)")
    commands.add_parser("demo", add_help=False, help="serve the browser demo (fastcnn.demo; `fastcnn demo --help`)")
    return parser


# ----------------------------------------------------------------------------------------------------- helpers

def _one_line(message) -> str:
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def _without_function(message, *names: str) -> str:
    """A library message without its leading 'load: ' (the CLI says what it was doing itself)."""
    text = _one_line(message)
    for name in names:
        if text.startswith(f"{name}: "):
            return text[len(name) + 2:]
    return text


def _set_threads(threads) -> None:
    if threads is not None:
        from . import set_num_threads
        try:
            set_num_threads(threads)
        except ValueError as error:
            raise CommandError(f"--threads: {_one_line(error)}") from None


def _communicator(threads):
    """Under mpiexec, the launch's communicator (threads per process set as fastcnn.distributed.init does); else
    None, and training runs in this process alone."""
    from .distributed import init, launched_by_mpi

    if not launched_by_mpi():
        _set_threads(threads)
        return None
    try:
        return init(threads=threads)
    except (ImportError, ValueError) as error:
        raise CommandError(_one_line(error)) from None


def _end_launch(status: int) -> None:
    """After an error on one process of an MPI launch, end them all: the others would wait for it for ever."""
    comm_module = sys.modules.get(f"{__package__}.distributed._comm")
    comm = comm_module.initialised_world() if comm_module is not None else None
    if comm is not None and comm.size > 1:
        comm.abort(status)


def _load_dataset(name: str, download: bool):
    """((x_train, y_train), (x_test, y_test)) of a dataset, or a CommandError saying how to install it."""
    from . import datasets

    try:
        if name == "digits":
            return datasets.load_digits()
        loader = datasets.load_mnist if name == "mnist" else datasets.load_fashion_mnist
        return loader(download=download)
    except datasets.DatasetNotFoundError:
        install = datasets._DATASETS[name].how_to_install  # the one place that says how to get each dataset
        raise CommandError(f"{name} is not installed here (looked in $FASTCNN_DATA, the system locations and "
                           f"{datasets.get_cache_dir() / name}); install it with `{install}`, or pass --download "
                           f"to fetch it") from None
    except ImportError as error:  # load_digits needs scikit-learn
        raise CommandError(_without_function(error, "load_digits")) from None
    except (datasets.DownloadError, ValueError, OSError) as error:
        raise CommandError(f"cannot load {name}: {_without_function(error, 'load_mnist', 'load_fashion_mnist')}") \
            from None


def _load_model(path: str):
    """(model, metadata) from a model file, or a CommandError naming the file and what is wrong with it."""
    from . import io

    try:
        metadata = io.load_metadata(path)
        model = io.load(path)
    except FileNotFoundError:
        raise CommandError(f"no such model file: {path!r}") from None
    except IsADirectoryError:
        raise CommandError(f"{path!r} is a folder; give the model file in it, e.g. {os.path.join(path, MODEL_FILE)}") \
            from None
    except (ValueError, TypeError, OSError) as error:
        raise CommandError(f"cannot load the model: {_without_function(error, 'load', 'load_metadata')}") from None
    return model, metadata


def _class_names(metadata: dict, dataset: str | None, classes: int, path: str) -> list[str]:
    from . import datasets

    names = metadata.get("class_names") or (datasets.class_names(dataset) if dataset else None)
    names = list(names) if names else [str(c) for c in range(classes)]
    if len(names) != classes:
        raise CommandError(f"{path!r} predicts {classes} classes but has {len(names)} class names")
    return names


def _per_class(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> list[tuple[str, int, int]]:
    from .viz import confusion_matrix

    counts = confusion_matrix(y_true, y_pred, len(names))
    return [(name, int(counts[c].sum()), int(counts[c, c])) for c, name in enumerate(names)]


def _per_class_text(rows) -> str:
    width = max(5, *(len(name) for name, _, _ in rows))
    lines = [f"{'class':<{width}}  {'images':>7}  {'correct':>7}  {'accuracy':>8}"]
    for name, images, correct in rows:
        accuracy = f"{correct / images:.2%}" if images else "n/a"
        lines.append(f"{name:<{width}}  {images:>7}  {correct:>7}  {accuracy:>8}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- train

def _hyperparameters(args) -> dict:
    from .models import validate_hyperparameters

    given = {name: getattr(args, name) for name in _FLAGS}
    if given["epochs"] is None:
        given["epochs"] = MAIN_COMMAND_EPOCHS
    if given["learning_rate"] is None and args.optimizer == "sgd":
        given["learning_rate"] = SGD_LEARNING_RATE
    try:
        return validate_hyperparameters(input_size=_INPUT_SIZE[args.dataset], **given)
    except ValueError as error:
        raise CommandError(_one_line(error)) from None


def _output_folder(out, dataset: str) -> Path:
    """--out (created when missing), or a new runs/<dataset>-<timestamp> folder that no other run uses."""
    target = Path(out).expanduser() if out is not None else Path("runs")
    try:
        target.mkdir(parents=True, exist_ok=True)
        if out is not None:
            return target
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for attempt in range(1, 1000):
            folder = target / (f"{dataset}-{stamp}" + (f"-{attempt}" if attempt > 1 else ""))
            try:
                folder.mkdir()  # fails when another run took the name, even one started in the same second
                return folder
            except FileExistsError:
                continue
        raise CommandError(f"could not find a free folder name {target / dataset}-{stamp}-N; pass --out DIR")
    except FileExistsError:
        raise CommandError(f"{'--out: ' if out is not None else ''}{str(target)!r} exists and is not a folder") \
            from None
    except OSError as error:
        raise CommandError(f"cannot create the output folder: {error}") from None


def _augmentation(dataset: str, size: int):
    from . import augment

    steps = [augment.RandomHorizontalFlip()] if dataset == "fashion-mnist" else []  # a flipped digit is no digit
    steps += [augment.RandomCrop(size, padding=max(1, size // 14)), augment.RandomRotation(10)]
    return augment.Compose(steps)


def _split_batch(batch_size: int, processes: int) -> tuple[int, int]:
    """(per-process batch, global batch) for --batch-size on `processes` processes.

    --batch-size is the global batch, split across the processes, so that the same hyper-parameters train the same
    way on any number of them (no learning-rate rescaling needed). Each process takes batch_size // processes (at
    least 1), so the global batch really trained is that times the processes: 63 for 64 on 3 processes.
    """
    local = max(1, batch_size // processes)
    return local, local * processes


def _train(args) -> int:
    import importlib.util

    from . import datasets, io, models, optim, training
    from .report import write_run_report, write_text_atomically

    hp = _hyperparameters(args)
    if importlib.util.find_spec("matplotlib") is None:  # fail now, not after a minute of training
        raise CommandError("train draws its figures with matplotlib, which is not installed; install it with "
                           "`pip install matplotlib` (or `pip install fastcnn[viz]`)")
    # Under mpiexec every process trains on its share of each batch; rank 0 alone prints and writes the run.
    comm = _communicator(args.threads)
    root, processes = comm is None or comm.is_root, 1 if comm is None else comm.size
    say = (lambda *a: None) if args.quiet or not root else print
    (x_train, y_train), (x_test, y_test) = _load_dataset(args.dataset, args.download)
    names = datasets.class_names(args.dataset)
    folder = _output_folder(args.out, args.dataset) if root else None
    channels, size = x_train.shape[1], x_train.shape[2]
    say(f"{args.dataset}: {len(x_train)} training and {len(x_test)} test images of {channels}x{size}x{size}")

    model = models.tutorial_cnn(filters=hp["filters"], filter_size=hp["filter_size"], pool_size=hp["pool_size"],
                                conv_layers=hp["conv_layers"], in_channels=channels, num_classes=len(names),
                                input_size=size, seed=args.seed)
    if args.optimizer == "adam":
        optimizer = optim.Adam(model.parameters(), lr=hp["learning_rate"])
    else:
        optimizer = optim.SGD(model.parameters(), lr=hp["learning_rate"], momentum=SGD_MOMENTUM)
    augmentation = _augmentation(args.dataset, size) if args.augment else None
    local_batch, global_batch = _split_batch(hp["batch_size"], processes)
    split = ""
    if processes > 1:
        split = f" ({local_batch} on each of {processes} processes" + (
            f"; --batch-size {hp['batch_size']} is not a multiple of {processes}" if global_batch != hp["batch_size"]
            else "") + ")"
    say(f"training the tutorial CNN ({model.num_parameters():,} parameters) for {hp['epochs']} epochs: "
        f"{args.optimizer}, lr {hp['learning_rate']:g}, batch {global_batch}{split}"
        + (", augmented" if augmentation else ""))
    started = time.perf_counter()
    try:
        history = training.fit(model, x_train, y_train, epochs=hp["epochs"], batch_size=local_batch,
                               optimizer=optimizer, augment=augmentation,
                               seed=args.seed, progress=not args.quiet and root, distributed=comm)
    except FloatingPointError as error:
        raise CommandError(f"training diverged: {_without_function(error, 'fit')}", status=1) from None
    train_seconds = time.perf_counter() - started
    if not root:
        return INTERRUPTED if history.interrupted else 0

    scores = training.evaluate(model, x_test, y_test)
    predicted = training.predict(model, x_test).argmax(axis=1)
    per_class = _per_class(y_test, predicted, names)
    settings = {**hp, "optimizer": args.optimizer, "augment": bool(args.augment), "seed": args.seed}
    if processes > 1:
        settings["processes"] = processes
    if global_batch != hp["batch_size"]:  # the batch the model really trained with, and what was asked
        settings["batch_size"], settings["requested_batch_size"] = global_batch, hp["batch_size"]
    done = len(history.epoch)
    io.save(model, folder / MODEL_FILE, input_shape=[channels, size, size], class_names=names, dataset=args.dataset,
            hyperparameters=settings, test_loss=scores["loss"], test_accuracy=scores["accuracy"],
            epochs_completed=done, interrupted=history.interrupted)
    write_text_atomically(folder / HISTORY_FILE, json.dumps({
        "epoch": history.epoch, "history": history.history, "interrupted": history.interrupted,
        "test": {"loss": scores["loss"], "accuracy": scores["accuracy"]}, "train_seconds": train_seconds,
    }, indent=2) + "\n")
    write_run_report(folder, model, history, x_test, y_test, names, scores, per_class, settings, args.dataset,
                     len(x_train), train_seconds)

    print(f"test accuracy: {scores['accuracy']:.2%} (loss {scores['loss']:.4f}) on {len(x_test)} {args.dataset} "
          f"test images, after {done} epoch{'s' if done != 1 else ''} in {train_seconds:.1f} s")
    if history.interrupted:
        print(f"training interrupted after {done} of {hp['epochs']} epochs; saved the model as trained so far, its "
              f"history and the report to {folder}", file=sys.stderr)
        return INTERRUPTED
    print(f"wrote {folder}{os.sep}: {MODEL_FILE}, {HISTORY_FILE}, 7 figures and report.html "
          f"(open {folder / 'report.html'})")
    return 0


# ------------------------------------------------------------------------------------------- evaluate, predict

def _evaluate(args) -> int:
    from . import training

    _set_threads(args.threads)
    model, metadata = _load_model(args.model)
    dataset = args.dataset or (metadata.get("dataset") if metadata.get("dataset") in DATASETS else "mnist")
    _, (x_test, y_test) = _load_dataset(dataset, args.download)
    expected = metadata.get("input_shape")
    if expected and list(x_test.shape[1:]) != list(expected):
        raise CommandError(f"{args.model!r} takes images of {'x'.join(map(str, expected))} but {dataset} has "
                           f"{'x'.join(map(str, x_test.shape[1:]))}; pass the --dataset it was trained on")
    try:
        scores = training.evaluate(model, x_test, y_test)
        probabilities = training.predict(model, x_test)
    except ValueError as error:
        raise CommandError(f"{args.model!r} cannot classify {dataset}: "
                           f"{_without_function(error, 'evaluate', 'predict')}") from None
    names = _class_names(metadata, dataset, probabilities.shape[1], args.model)
    predicted = probabilities.argmax(axis=1)
    print(f"{args.model}: loss {scores['loss']:.4f}, accuracy {scores['accuracy']:.2%} on {len(x_test)} {dataset} "
          "test images")
    print(_per_class_text(_per_class(y_test, predicted, names)))
    return 0


def _read_image(path: str, shape) -> np.ndarray:
    """One image file as float32 (C, H, W) in [0, 1] for a model taking `shape` = (C, H, W)."""
    try:
        from PIL import Image
    except ImportError:
        raise CommandError("predict reads images with Pillow, which is not installed; install it with "
                           "`pip install pillow`") from None
    channels, height, width = shape
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")  # transparent pixels laid on white, like paper
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
    except FileNotFoundError:
        raise CommandError(f"no such image file: {path!r}") from None
    except IsADirectoryError:
        raise CommandError(f"{path!r} is a folder, not an image file") from None
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise CommandError(f"cannot read image {path!r}: {_one_line(error)}") from None
    array = np.asarray(image, dtype=np.float32) / np.float32(255)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _should_invert(image: np.ndarray, mode: str) -> bool:
    if mode != "auto":
        return mode == "yes"
    if image.shape[0] != 1:
        return False
    plane = image[0]
    border = np.concatenate([plane[0], plane[-1], plane[1:-1, 0], plane[1:-1, -1]])
    return float(border.mean()) > 0.5


def _predict(args) -> int:
    from . import training

    _set_threads(args.threads)
    model, metadata = _load_model(args.model)
    shape = metadata.get("input_shape")
    if not shape or len(shape) != 3:
        raise CommandError(f"{args.model!r} does not record the image size it takes (input_shape metadata); save it "
                           "with fastcnn.io.save(model, path, input_shape=(C, H, W))")
    if shape[0] not in (1, 3):
        raise CommandError(f"{args.model!r} takes images of {shape[0]} channels; predict reads grayscale (1) or RGB "
                           "(3) images")
    images, inverted = [], []
    for path in args.images:
        image = _read_image(path, shape)
        inverted.append(_should_invert(image, args.invert))
        images.append(1.0 - image if inverted[-1] else image)
    try:
        probabilities = training.predict(model, np.stack(images))
    except ValueError as error:
        raise CommandError(f"{args.model!r} cannot classify {'x'.join(map(str, shape))} images: "
                           f"{_without_function(error, 'predict')}") from None
    names = _class_names(metadata, metadata.get("dataset") if metadata.get("dataset") in DATASETS else None,
                         probabilities.shape[1], args.model)
    for path, row, flipped in zip(args.images, probabilities, inverted):
        best = np.argsort(-row, kind="stable")[:args.top]
        ranked = "  ".join(f"{names[c]} ({row[c]:.1%})" for c in best)
        note = "  [inverted: dark on light]" if flipped and args.invert == "auto" else ""
        print(f"{path}: {ranked}{note}")
    return 0


# -------------------------------------------------------------------------------------------------------- main

def _forward(command: str, argv: list[str]) -> int:
    """`fastcnn bench ...` and `fastcnn demo ...`: everything after the command goes to that module's main."""
    import importlib

    try:
        module = importlib.import_module(f".{command}", __package__)
    except ModuleNotFoundError as error:
        if command != "demo" or error.name != f"{__package__}.demo":  # a dependency missing inside: say which
            raise
        raise CommandError("the browser demo is not available in this version of fastcnn") from None
    if command == "demo":
        return module.main(argv, prog="fastcnn demo")
    return module.main(argv)


_COMMANDS = {"train": _train, "evaluate": _evaluate, "predict": _predict}


def main(argv: list[str] | None = None) -> int:
    """Run the `fastcnn` command with `argv` (default: sys.argv[1:]); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["train", *argv]  # the main command: `fastcnn` alone, or train's options without the word
    try:
        if argv[0] in ("bench", "demo"):  # everything after it is that module's, --help included
            return _forward(argv[0], argv[1:])
        args, unknown = build_parser().parse_known_args(argv)
        if unknown:
            raise CommandError(f"unrecognized arguments: {' '.join(unknown)} (see `fastcnn {args.command} --help`)")
        return _COMMANDS[args.command](args)
    except CommandError as error:
        print(f"fastcnn: error: {_one_line(error)}", file=sys.stderr)
        _end_launch(error.status)
        return error.status
    except SystemExit as exit_:  # --help, --version, and bench's own argument errors
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    except KeyboardInterrupt:  # Ctrl-C outside fit (loading data, drawing): nothing half-written stays behind
        print("fastcnn: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())

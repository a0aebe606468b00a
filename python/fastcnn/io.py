"""Saving and loading models and training checkpoints as single .npz files that never run code.

A file is a zip of .npy arrays (what `np.savez` writes): the model's `state_dict()` under its own keys
('features.0.weight', 'bn.running_mean'), plus one entry, `__fastcnn__`, holding a UTF-8 JSON document as a uint8
array (so that `allow_pickle` stays False everywhere). The JSON holds the format version, the kind of file
('model' or 'checkpoint'), the architecture (`fastcnn.nn.module_config(model)`) and the user's metadata. A checkpoint
adds the optimizer's arrays under 'optimizer/<key>' and its other state, the epoch, the random generators' states
and the callbacks' states in the JSON. Since model keys are the same in both kinds, `load` reads either.

Files are written atomically (a temporary file in the same directory, fsync, `os.replace`), so a crash or an
exception mid-write leaves the previous file intact. Loading uses `np.load(allow_pickle=False)` and rebuilds the
model only from registered classes (`fastcnn.nn.register_module`), so a file can never execute code.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from collections import OrderedDict

import numpy as np

from . import nn
from ._atomic import atomic_file
from ._runtime import get_memory_limit

__all__ = ["save", "load", "load_metadata", "save_checkpoint", "load_checkpoint", "FORMAT_VERSION"]

FORMAT_VERSION = 1
"""Bumped whenever a file written by this fastcnn could not be read correctly by an older one."""

_META_KEY = "__fastcnn__"
_OPTIMIZER_PREFIX = "optimizer/"
# Keys the library writes into the JSON document; user metadata may not reuse them.
_RESERVED = ("format", "format_version", "kind", "architecture", "fastcnn_version", "checkpoint")


# ---------------------------------------------------------------------------------------------------------------
# JSON metadata

def _json_default(value):
    """Let NumPy scalars and small arrays (an epoch count as np.int64, a mean as np.float32) into the JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _to_json(document: dict, fn: str) -> str:
    for key, value in document.items():
        try:
            json.dumps(value, default=_json_default)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{fn}: metadata {key!r} must be JSON-serialisable (numbers, strings, lists, dicts); "
                            f"got {type(value).__name__}: {error}") from None
    return json.dumps(document, default=_json_default, sort_keys=True)


def _check_metadata(metadata: dict, fn: str) -> dict:
    clean = {}
    for key, value in metadata.items():
        if key in _RESERVED:
            raise ValueError(f"{fn}: metadata key {key!r} is reserved for fastcnn's own use; choose another name")
        clean[key] = value
    if "input_shape" in clean and clean["input_shape"] is not None:
        shape = clean["input_shape"]
        if (not isinstance(shape, (tuple, list)) or not shape
                or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape)):
            raise ValueError(f"{fn}: input_shape must be a sequence of positive ints (one image, without N), "
                             f"e.g. (1, 28, 28); got {shape!r}")
        clean["input_shape"] = [int(s) for s in shape]
    if "class_names" in clean and clean["class_names"] is not None:
        names = clean["class_names"]
        if isinstance(names, str) or not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{fn}: class_names must be a list of strings; got {names!r}")
        clean["class_names"] = list(names)
    return clean


def _architecture(model, fn: str, required: bool):
    try:
        return nn.module_config(model)
    except TypeError as error:
        if required:
            raise TypeError(f"{fn}: {error}") from None
        return None


# ---------------------------------------------------------------------------------------------------------------
# Writing

def _write_npz(file, arrays: "OrderedDict[str, np.ndarray]") -> None:
    """Write `arrays` as an .npz archive (what np.savez writes) to the open binary `file`, without pickling and
    without np.savez's keyword arguments, which a key named 'file' or 'allow_pickle' would collide with."""
    archive = zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)
    try:
        for key, array in arrays.items():
            with archive.open(key + ".npy", mode="w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(array), allow_pickle=False)
    except BaseException:
        # A Ctrl-C can land inside archive.open after it marked an entry as being written but before there is a
        # handle to close: ZipFile.close() (and later its __del__) would then raise ValueError in place of the
        # KeyboardInterrupt. `file` is the caller's temporary file, thrown away after an error: drop the archive
        # unfinished, leaving the file to the caller.
        archive.fp = None
        raise
    archive.close()


def _atomic_write(path, arrays: "OrderedDict[str, np.ndarray]", fn: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{fn}: path must be a str or os.PathLike; got {type(path).__name__}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{fn}: directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{fn}: {path!r} is a directory; give a file name such as 'model.npz'")
    with atomic_file(path) as file:
        _write_npz(file, arrays)
    return path


def _model_arrays(model, fn: str) -> "OrderedDict[str, np.ndarray]":
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be a fastcnn.nn.Module; got {type(model).__name__}")
    arrays = OrderedDict()
    for key, value in model.state_dict().items():
        if key == _META_KEY or key.startswith(_OPTIMIZER_PREFIX):
            raise ValueError(f"{fn}: the model's state key {key!r} is reserved by the file format")
        arrays[key] = value
    return arrays


def _meta_array(document: dict, fn: str) -> np.ndarray:
    return np.frombuffer(_to_json(document, fn).encode("utf-8"), dtype=np.uint8).copy()


def _version() -> str:
    from . import __version__
    return __version__


def _document(kind: str, model, metadata: dict, fn: str, **sections) -> dict:
    """The JSON entry of a model file or a checkpoint; a checkpoint may hold a model whose classes are unregistered."""
    return {
        "format": "fastcnn",
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "fastcnn_version": _version(),
        "architecture": _architecture(model, fn, required=kind == "model"),
        **sections,
        **_check_metadata(metadata, fn),
    }


def save(model, path, **metadata) -> str:
    """Save a model's architecture, weights, buffers and metadata to one .npz file, atomically.

    Args:
        model: a `fastcnn.nn.Module` whose classes are all registered (`fastcnn.nn.register_module`), which the
            built-in layers and `Sequential` are.
        path: the file to write (written as given; no suffix is added). An existing file is replaced only once the
            new one is completely written.
        **metadata: JSON-able values stored with the model and returned by `load_metadata`. `input_shape` (one
            image's shape, without N) and `class_names` (a list of strings) are checked and recognised by tools.

    Returns:
        the path written.

    Example:
        >>> fastcnn.io.save(model, "digits.npz", input_shape=(1, 8, 8), class_names=[str(d) for d in range(10)])
        >>> model = fastcnn.io.load("digits.npz")
    """
    fn = "save"
    arrays = _model_arrays(model, fn)
    document = _document("model", model, metadata, fn)
    arrays[_META_KEY] = _meta_array(document, fn)
    return _atomic_write(path, arrays, fn)


def save_checkpoint(path, model, optimizer=None, *, epoch: int, rng_state=None, callbacks_state=None,
                    **metadata) -> str:
    """Save everything needed to continue training: the model, the optimizer's state, the number of completed
    epochs, the random generators' states and the callbacks' states (one .npz, written atomically).

    The file is also a model file: `load(path)` returns the model (when its classes are registered).

    Args:
        path: the file to write.
        model: the model being trained.
        optimizer: its optimizer (anything with `state_dict()`), or None.
        epoch: the number of completed epochs (training resumes at this epoch index).
        rng_state: JSON-able random state (fit's generators' `bit_generator.state`).
        callbacks_state: JSON-able state of callbacks (schedulers, early stopping).
        **metadata: other JSON-able values.
    """
    fn = "save_checkpoint"
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"{fn}: epoch must be a non-negative int; got {epoch!r}")
    arrays = _model_arrays(model, fn)
    optimizer_json = None
    if optimizer is not None:
        if not callable(getattr(optimizer, "state_dict", None)):
            raise TypeError(f"{fn}: optimizer must have a state_dict() method; got {type(optimizer).__name__}")
        optimizer_json = {"class": type(optimizer).__name__, "values": {}}
        for key, value in optimizer.state_dict().items():
            if isinstance(value, np.ndarray):
                if value.dtype.kind not in "biuf":
                    raise TypeError(f"{fn}: optimizer state {key!r} must hold numbers; got dtype {value.dtype}")
                arrays[_OPTIMIZER_PREFIX + key] = value
            else:
                optimizer_json["values"][key] = value
    document = _document("checkpoint", model, metadata, fn,
                         checkpoint={"epoch": int(epoch), "optimizer": optimizer_json, "rng_state": rng_state,
                                     "callbacks_state": callbacks_state})
    arrays[_META_KEY] = _meta_array(document, fn)
    return _atomic_write(path, arrays, fn)


# ---------------------------------------------------------------------------------------------------------------
# Reading

def _not_readable(path: str, fn: str, why: str) -> ValueError:
    return ValueError(f"{fn}: {path!r} is not a readable fastcnn file: {why}")


def _read(path, fn: str, *, arrays: bool = True):
    """(document, OrderedDict of arrays) from a file, every failure a ValueError naming the file."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{fn}: path must be a str or os.PathLike; got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{fn}: no such file: {path!r}")
    # Open the file ourselves: np.load(path) leaks its handle when the zip turns out to be corrupt.
    with open(path, "rb") as file:
        return _read_open(file, path, fn, arrays)


def _read_open(file, path: str, fn: str, arrays: bool):
    try:
        archive = np.load(file, allow_pickle=False)
    except ValueError:  # neither .npz nor .npy: NumPy would try pickle, which allow_pickle=False refuses
        raise _not_readable(path, fn, "it is not an .npz archive (no zip header)") from None
    except Exception as error:  # zipfile, zlib and the .npy header parser each have their own exceptions
        raise _not_readable(path, fn, f"corrupt or truncated ({type(error).__name__}: {error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _not_readable(path, fn, "it holds a single .npy array, not an .npz archive")
    with archive:
        _check_entry_sizes(archive, path, fn)

        def entry(key):
            try:
                return archive[key]
            except ValueError as error:
                if "allow_pickle" in str(error):
                    raise _not_readable(path, fn, f"entry {key!r} holds pickled Python objects, which fastcnn "
                                                  "never loads (unpickling can run code)") from None
                raise _not_readable(path, fn, f"entry {key!r} is corrupt ({error})") from None
            except Exception as error:
                raise _not_readable(path, fn, f"entry {key!r} is corrupt or truncated "
                                              f"({type(error).__name__}: {error})") from None

        if _META_KEY not in archive.files:
            raise _not_readable(path, fn, f"it has no {_META_KEY!r} entry (was it written by fastcnn.io.save?)")
        raw = entry(_META_KEY)
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise _not_readable(path, fn, f"the {_META_KEY!r} entry must be a 1-D uint8 array; got {raw.dtype} "
                                          f"{raw.shape}")
        try:
            document = json.loads(raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise _not_readable(path, fn, f"its metadata is not valid JSON ({error})") from None
        except RecursionError:  # "[[[[...": nesting deeper than the JSON parser's stack
            raise _not_readable(path, fn, "its metadata is nested too deeply to be a fastcnn description") from None
        if not isinstance(document, dict) or document.get("format") != "fastcnn":
            raise _not_readable(path, fn, "its metadata does not describe a fastcnn file")
        version = document.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise _not_readable(path, fn, f"invalid format_version {version!r}")
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{fn}: {path!r} has format version {version}, newer than the versions this fastcnn reads (up to "
                f"{FORMAT_VERSION}); upgrade fastcnn to load it"
            )
        loaded = OrderedDict()
        if arrays:
            for key in archive.files:
                if key == _META_KEY:
                    continue
                value = entry(key)
                if value.dtype.kind not in "biuf":
                    raise _not_readable(path, fn, f"entry {key!r} must hold numbers; got dtype {value.dtype}")
                loaded[key] = value
    return document, loaded


def _check_entry_sizes(archive, path: str, fn: str) -> None:
    """Refuse, before any array is read, an archive whose entries declare more data than they hold (NumPy would
    allocate the declared size first) or more in all than fastcnn's memory limit (a zip bomb, a crafted header)."""
    total = 0
    for info in archive.zip.infolist():
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        total += info.file_size
        if total > get_memory_limit():
            raise _not_readable(path, fn, f"its entries declare {total} bytes or more, over fastcnn's memory limit of "
                                          f"{get_memory_limit()} bytes (see fastcnn.set_memory_limit)")
        try:
            with archive.zip.open(info) as entry:
                version = np.lib.format.read_magic(entry)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(entry)
                header_bytes = entry.tell()
        except Exception as error:  # zipfile, zlib and the .npy header parser each have their own exceptions
            raise _not_readable(path, fn, f"entry {key!r} is corrupt or truncated "
                                          f"({type(error).__name__}: {error})") from None
        if dtype.hasobject:
            raise _not_readable(path, fn, f"entry {key!r} holds pickled Python objects, which fastcnn never loads "
                                          "(unpickling can run code)")
        declared = math.prod(shape) * dtype.itemsize  # Python ints: no overflow for crafted shapes
        if declared != info.file_size - header_bytes:
            raise _not_readable(path, fn, f"entry {key!r} declares shape {tuple(shape)} of {dtype} ({declared} bytes) "
                                          f"but holds {info.file_size - header_bytes} bytes")


def _declared_parameters(spec) -> int:
    """How many numbers the built-in layers of an architecture description would allocate (other classes count 0),
    computed from the description alone, so that a crafted one is refused before anything is built."""
    if isinstance(spec, list):
        return sum(_declared_parameters(item) for item in spec)
    if not isinstance(spec, dict):
        return 0
    config = spec.get("config")
    nested = sum(_declared_parameters(value) for value in spec.values() if isinstance(value, (dict, list)))
    if not isinstance(config, dict):
        return nested

    def size(name, square=False):
        value = config.get(name, 1)
        values = value if isinstance(value, list) else [value, value] if square else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            return 0  # not a valid size: the layer's own checks will refuse it
        return math.prod(values)

    kind = spec.get("class")
    if kind == "Conv2d":
        own = size("out_channels") * (size("in_channels") // max(size("groups"), 1) * size("kernel_size", True) + 1)
    elif kind == "Linear":
        own = size("out_features") * (size("in_features") + 1)
    elif kind in ("BatchNorm1d", "BatchNorm2d"):
        own = 4 * size("num_features")
    else:
        own = 0
    return own + nested


def _check_architecture_size(architecture, arrays, path: str, fn: str, strict: bool) -> None:
    try:
        declared = _declared_parameters(architecture)
    except RecursionError:
        raise ValueError(f"{fn}: {path!r}: cannot rebuild the model: its architecture is nested too deeply") from None
    if strict:
        held = sum(value.size for value in arrays.values())
        # Every parameter of the rebuilt model must come from the file, so it cannot declare more than it holds
        # (biases are counted even when absent: hence the slack, still far below what a crafted file declares).
        if declared > 2 * held + 4096:
            raise _not_readable(path, fn, f"its architecture declares about {declared} parameters but the file holds "
                                          f"only {held} numbers")
    if declared * 4 > get_memory_limit():
        raise _not_readable(path, fn, f"its architecture declares about {declared} parameters, over fastcnn's memory "
                                      f"limit of {get_memory_limit()} bytes (see fastcnn.set_memory_limit)")


def load_metadata(path) -> dict:
    """The JSON document stored in a model or checkpoint file: format_version, kind, architecture, input_shape and
    class_names when they were given, and the rest of the metadata passed to `save`. Reads no weights."""
    document, _ = _read(path, "load_metadata", arrays=False)
    return document


def load(path, *, model=None, strict: bool = True):
    """Load a model saved by `save` (or the model inside a checkpoint written by `save_checkpoint`).

    Rebuilds the architecture from registered classes only and loads the weights with
    `load_state_dict(strict=strict)`; nothing in the file is executed or unpickled.

    Args:
        path: the .npz file.
        model: load the weights into this existing model instead of rebuilding one (to fine-tune with a different
            head use `strict=False`). Default: None.
        strict: require the file's keys to match the model's exactly. Shapes must always match. Default: True.

    Returns:
        the model: a rebuilt model is in eval mode (call `.train()` to train it further); a given one keeps its mode.

    Raises:
        ValueError: for a corrupt, truncated or foreign file, a newer format version, an unknown class, missing or
            unexpected keys (when strict) or a shape mismatch; each message names the file.
    """
    fn = "load"
    document, arrays = _read(path, fn)
    path = os.fspath(path)
    state = OrderedDict((k, v) for k, v in arrays.items() if not k.startswith(_OPTIMIZER_PREFIX))
    rebuilt = model is None
    if rebuilt:
        architecture = document.get("architecture")
        if architecture is None:
            raise ValueError(f"{fn}: {path!r} holds no architecture (the model's classes were not registered when it "
                             f"was saved); build the model yourself and pass it as load(path, model=...)")
        _check_architecture_size(architecture, arrays, path, fn, strict)
        try:
            model = nn.module_from_config(architecture)
        except RecursionError:
            raise ValueError(f"{fn}: {path!r}: cannot rebuild the model: its architecture is nested too deeply") from None
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(f"{fn}: {path!r}: cannot rebuild the model: {error}") from None
    elif not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be a fastcnn.nn.Module or None; got {type(model).__name__}")
    try:
        model.load_state_dict(state, strict=strict)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{fn}: {path!r}: {error}") from None
    return model.eval() if rebuilt else model


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by `save_checkpoint` (or by `fastcnn.callbacks.ModelCheckpoint`).

    Returns:
        a dict with "epoch" (completed epochs), "model_state" (the model's state_dict), "architecture",
        "optimizer_class" and "optimizer_state" (a `state_dict()` for the optimizer's `load_state_dict`, or None),
        "rng_state", "callbacks_state" and "metadata" (the whole JSON document).
    """
    fn = "load_checkpoint"
    document, arrays = _read(path, fn)
    if document.get("kind") != "checkpoint" or not isinstance(document.get("checkpoint"), dict):
        raise ValueError(f"{fn}: {os.fspath(path)!r} is a {document.get('kind', 'unknown')} file, not a checkpoint "
                         f"(write one with fastcnn.callbacks.ModelCheckpoint or save_checkpoint)")
    info = document["checkpoint"]
    model_state = OrderedDict((k, v) for k, v in arrays.items() if not k.startswith(_OPTIMIZER_PREFIX))
    optimizer_state, optimizer_class = None, None
    if info.get("optimizer") is not None:
        optimizer_class = info["optimizer"].get("class")
        optimizer_state = dict(info["optimizer"].get("values", {}))
        for key, value in arrays.items():
            if key.startswith(_OPTIMIZER_PREFIX):
                optimizer_state[key[len(_OPTIMIZER_PREFIX):]] = value
    return {
        "epoch": info.get("epoch"),
        "model_state": model_state,
        "architecture": document.get("architecture"),
        "optimizer_class": optimizer_class,
        "optimizer_state": optimizer_state,
        "rng_state": info.get("rng_state"),
        "callbacks_state": info.get("callbacks_state"),
        "metadata": document,
    }

"""Hardening of what fastcnn reads and writes: model files and checkpoints that are truncated, corrupt, of another
version or crafted; IDX dataset files likewise; saving killed mid-write; Ctrl-C while fit writes checkpoints.

Every damaged file must be refused with a ValueError that names it (or, when the damage hit bytes nothing reads,
such as a zip timestamp, load exactly the saved values); nothing may crash, hang, allocate what the file merely
declares, or run code. FASTCNN_FUZZ_FILES (default 300) sets how many mutated files of each kind are tried.
"""
import gzip
import json
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile

import numpy as np
import pytest

import fastcnn
from fastcnn import datasets, io, nn
from fastcnn.callbacks import LambdaCallback, ModelCheckpoint
from fastcnn.training import fit

FUZZ_FILES = int(os.environ.get("FASTCNN_FUZZ_FILES", "300"))
MUTATIONS = ("flip", "truncate", "insert", "zero", "duplicate")
CHILD_OUTPUT_TIMEOUT = 60  # seconds a child process may take to print its first line


def random_moments(name: str):
    """A generator for the random moments of a test, from a fresh seed printed first (pytest shows it with a
    failure; FASTCNN_TEST_SEED=<seed> repeats that run)."""
    seed = int(os.environ.get("FASTCNN_TEST_SEED") or np.random.SeedSequence().entropy % 2**32)
    print(f"{name}: random seed {seed} (FASTCNN_TEST_SEED={seed} repeats it)")
    return np.random.default_rng(seed)


def read_line(process, seconds=CHILD_OUTPUT_TIMEOUT) -> str:
    """The next line of a child's stdout, or a test failure when none comes within `seconds` (a child hanging
    before it prints would otherwise hang the suite); the caller kills the child in a `finally`."""
    line = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    if reader.is_alive() or not line:
        pytest.fail(f"the child process (pid {process.pid}) printed no line within {seconds} s")
    return line[0]


def small_model(seed=0):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, seed=seed), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 3, seed=seed + 1))


def mutate(data: bytes, rng) -> tuple:
    kind = MUTATIONS[rng.integers(len(MUTATIONS))]
    at = int(rng.integers(len(data)))
    if kind == "flip":
        count = int(rng.integers(1, 9))
        raw = bytearray(data)
        for position in rng.integers(0, len(data), count):
            raw[position] ^= int(rng.integers(1, 256))
        return kind, bytes(raw)
    if kind == "truncate":
        return kind, data[:at]
    if kind == "insert":
        return kind, data[:at] + rng.bytes(int(rng.integers(1, 64))) + data[at:]
    if kind == "zero":
        return kind, data[:at] + bytes(min(64, len(data) - at)) + data[at + 64:]
    return kind, data[:at] + data[at:at + 512] + data[at:]  # a block written twice


def same_state(a, b):
    return list(a) == list(b) and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def test_randomly_damaged_model_files_are_refused_or_load_the_exact_saved_values(tmp_path):
    model = small_model()
    original = tmp_path / "model.npz"
    io.save(model, original, input_shape=(1, 8, 8), class_names=["a", "b", "c"])
    data, want = original.read_bytes(), model.state_dict()
    rng = np.random.default_rng(2024)
    outcomes = {"refused": 0, "unchanged": 0}
    target = tmp_path / "damaged.npz"
    for _ in range(FUZZ_FILES):
        kind, damaged = mutate(data, rng)
        target.write_bytes(damaged)
        for reader in (io.load, io.load_metadata, io.load_checkpoint):
            try:
                result = reader(target)
            except ValueError as error:
                assert "damaged.npz" in str(error), (kind, str(error))
                outcomes["refused"] += 1
                continue
            if reader is io.load:
                assert same_state(result.state_dict(), want), f"{kind}: a damaged file loaded different values"
                outcomes["unchanged"] += 1
    print(f"\nmodel files fuzzed: {FUZZ_FILES} x 3 readers -> {outcomes}")
    assert outcomes["refused"] > FUZZ_FILES  # most damage is caught (zip CRCs, headers, JSON)


def npy_entry(header: dict, payload: bytes) -> bytes:
    """An .npy entry with a hand-written header, as a crafted file would hold."""
    text = repr(header).encode("latin1")
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload


def crafted(path, model, replace=None, extra=None, document=None, compression=zipfile.ZIP_STORED):
    """A copy of a saved model with entries replaced by raw .npy bytes, extra entries, or another JSON document."""
    io.save(model, path)
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    if document is not None:
        text = document if isinstance(document, bytes) else json.dumps(document).encode()
        entries["__fastcnn__.npy"] = npy_entry({"descr": "|u1", "fortran_order": False, "shape": (len(text),)}, text)
    entries.update(replace or {})
    entries.update(extra or {})
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, raw in entries.items():
            archive.writestr(name, raw)
    return path


def saved_document(model):
    return json.loads(json.dumps({"format": "fastcnn", "format_version": 1, "kind": "model",
                                  "architecture": nn.module_config(model)}))


CRAFTED = {
    "huge declared shape": (dict(replace={"0.weight.npy": npy_entry(
        {"descr": "<f4", "fortran_order": False, "shape": (10**12, 4, 1, 3, 3)}, bytes(144))}),
        r"entry '0\.weight' declares shape \(1000000000000, 4, 1, 3, 3\) of float32 \(144000000000000 bytes\) but "
        r"holds 144 bytes"),
    "shape larger than the data": (dict(replace={"0.weight.npy": npy_entry(
        {"descr": "<f4", "fortran_order": False, "shape": (4, 1, 3, 4)}, bytes(144))}), r"declares shape"),
    "object dtype": (dict(replace={"0.bias.npy": npy_entry({"descr": "|O", "fortran_order": False, "shape": (4,)},
                                                          pickle.dumps(np.array([1, 2, 3, 4], dtype=object)))}),
                     r"entry '0\.bias' holds pickled Python objects, which fastcnn never loads"),
    "string dtype": (dict(replace={"0.bias.npy": npy_entry({"descr": "<U1", "fortran_order": False, "shape": (4,)},
                                                          bytes(16))}), r"entry '0\.bias' must hold numbers"),
    "complex dtype": (dict(replace={"0.bias.npy": npy_entry({"descr": "<c8", "fortran_order": False, "shape": (4,)},
                                                           bytes(32))}), r"entry '0\.bias' must hold numbers"),
    "bad header": (dict(replace={"0.bias.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': os.sy\n" + bytes(16)}),
                   r"entry '0\.bias' is corrupt"),
    "extra entry": (dict(extra={"5.weight_backdoor.npy": npy_entry(
        {"descr": "<f4", "fortran_order": False, "shape": (2,)}, bytes(8))}),
        r"unexpected in the checkpoint: 5\.weight_backdoor"),
    "extra non-npy entry": (dict(extra={"../../evil.sh": b"rm -rf ~\n"}), r"entry '\.\./\.\./evil\.sh' is corrupt"),
    "deep JSON": (dict(document=b"[" * 50000 + b"]" * 50000), r"nested too deeply"),
    "JSON list": (dict(document=[1, 2]), r"does not describe a fastcnn file"),
    "newer version": (dict(document={"format": "fastcnn", "format_version": 7, "kind": "model"}),
                      r"format version 7, newer than the versions this fastcnn reads"),
    "version as a string": (dict(document={"format": "fastcnn", "format_version": "1", "kind": "model"}),
                            r"invalid format_version '1'"),
    "version as a bool": (dict(document={"format": "fastcnn", "format_version": True}), r"invalid format_version True"),
    "version 0": (dict(document={"format": "fastcnn", "format_version": 0}), r"invalid format_version 0"),
    "no architecture": (dict(document={"format": "fastcnn", "format_version": 1, "kind": "model"}),
                        r"holds no architecture"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_model_files_are_refused_with_a_message_naming_the_file_and_the_problem(tmp_path, name):
    spec, pattern = CRAFTED[name]
    path = crafted(tmp_path / "crafted.npz", small_model(), **spec)
    with pytest.raises(ValueError, match=pattern) as caught:
        io.load(path)
    assert "crafted.npz" in str(caught.value)


@pytest.mark.parametrize("layer, key, value", [(0, "out_channels", 10**9), (5, "in_features", 10**12),
                                               (1, "num_features", 2**40), (0, "kernel_size", [10**5, 10**5])])
def test_an_architecture_declaring_huge_layers_is_refused_before_building_them(tmp_path, layer, key, value, allocations):
    model = small_model()
    document = saved_document(model)
    document["architecture"]["config"]["layers"][layer]["config"][key] = value
    path = crafted(tmp_path / "model.npz", model, document=document)
    with allocations() as traced, \
            pytest.raises(ValueError, match=r"model\.npz.* its architecture declares about \d+ parameters but the "
                                            r"file holds only \d+ numbers"):
        io.load(path)
    # The smallest of these layers would take 4 GB; loading the whole (real) model takes well under 1 MiB.
    assert traced["peak"] < 2**20, f"{traced['peak']} bytes allocated before refusing"


def test_a_compressed_entry_over_the_memory_limit_is_refused_before_it_is_inflated(tmp_path):
    """A zip bomb: 8 MiB of zeros compress to a few KiB; with a 1 MiB limit the file is refused unread."""
    model = small_model()
    bomb = npy_entry({"descr": "<f4", "fortran_order": False, "shape": (2 * 2**20,)}, bytes(8 * 2**20))
    path = crafted(tmp_path / "bomb.npz", model, extra={"bomb.npy": bomb}, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 64 * 1024
    fastcnn.set_memory_limit(2**20)
    with pytest.raises(ValueError, match=r"bomb\.npz.* declare \d+ bytes or more, over fastcnn's memory limit"):
        io.load(path)
    fastcnn.set_memory_limit(None)
    with pytest.raises(ValueError, match=r"unexpected in the checkpoint: bomb"):  # under the limit: read, refused
        io.load(path)


class Payload:
    """Unpickling this would create the marker file: the proof that a file ran code."""

    marker = None

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_never_runs_code_from_the_file(tmp_path):
    marker = tmp_path / "code-ran"
    Payload.marker = str(marker)
    path = crafted(tmp_path / "evil.npz", small_model(), replace={"0.bias.npy": npy_entry(
        {"descr": "|O", "fortran_order": False, "shape": (1,)}, pickle.dumps(np.array([Payload()], dtype=object)))})
    for reader in (io.load, io.load_checkpoint, io.load_metadata):
        with pytest.raises(ValueError, match="never loads|pickled"):
            reader(path)
    document = saved_document(small_model())
    document["architecture"]["config"]["layers"][0]["class"] = "os.system"
    crafted(tmp_path / "evil2.npz", small_model(), document=document)
    with pytest.raises(ValueError, match="unknown module class 'os.system'"):
        io.load(tmp_path / "evil2.npz")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ datasets

def idx_bytes(array) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    return struct.pack(">4B", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_randomly_damaged_idx_files_are_refused_naming_the_file_or_read_as_declared(tmp_path):
    rng = np.random.default_rng(7)
    images = idx_bytes(rng.integers(0, 256, (6, 28, 28)))
    outcomes = {"refused": 0, "read": 0}
    for i in range(FUZZ_FILES):
        gz = i % 2 == 1
        _, damaged = mutate(gzip.compress(images) if gz else images, rng)
        file = tmp_path / f"train-images-idx3-ubyte{'.gz' if gz else ''}"
        file.write_bytes(damaged)
        try:
            array = datasets.read_idx(file)
        except ValueError as error:
            assert str(file) in str(error)
            outcomes["refused"] += 1
            continue
        # a flip inside the pixels changes values, not structure: the shape is exactly what the header says
        assert array.dtype == np.uint8 and array.size == int(np.prod(array.shape))
        outcomes["read"] += 1
    print(f"\nIDX files fuzzed: {FUZZ_FILES} -> {outcomes}")
    assert outcomes["refused"] > FUZZ_FILES // 4


@pytest.mark.parametrize("header", [(0, 0, 8, 3, 2**31, 2**31, 2**31), (0, 0, 8, 1, 2**32 - 1),
                                    (0, 0, 8, 3, 10**6, 28, 28)])
def test_idx_files_declaring_huge_sizes_are_refused_without_allocating(tmp_path, header):
    file = tmp_path / "t10k-images-idx3-ubyte"
    file.write_bytes(struct.pack(f">4B{len(header) - 4}I", *header) + bytes(100))
    with pytest.raises(ValueError, match=r"more than the limit|is truncated"):
        datasets.read_idx(file)


# ------------------------------------------------------------------------------------------ killed while saving

SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    from fastcnn import io, nn
    # Two big models (about 17 MB each) that differ in every weight: any mix of the two is detectable.
    models = [nn.Sequential(nn.Linear(2048, 2048, seed=s), nn.ReLU(), nn.Linear(2048, 10, seed=s + 1)) for s in (1, 2)]
    path = sys.argv[1]
    i = 0
    while True:
        io.save(models[i % 2], path, which=i % 2)
        if i == 0:
            print("saved", flush=True)
        i += 1
""")


def test_a_save_killed_at_a_random_moment_leaves_the_old_or_the_new_file_never_a_partial_one(tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    path = tmp_path / "model.npz"
    expected = [nn.Sequential(nn.Linear(2048, 2048, seed=s), nn.ReLU(), nn.Linear(2048, 10, seed=s + 1)).state_dict()
                for s in (1, 2)]
    rng = random_moments("kill during save")
    kills = 6
    for _ in range(kills):
        saver = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
        try:
            assert read_line(saver).strip() == "saved"
            time.sleep(float(rng.uniform(0.0, 0.6)))  # somewhere inside one of the following saves
        finally:
            saver.send_signal(signal.SIGKILL)
            saver.wait(timeout=30)
            saver.stdout.close()
        model = io.load(path)  # never a ValueError: the file is always complete
        which = io.load_metadata(path)["which"]
        assert same_state(model.state_dict(), expected[which])
        leftovers = [name for name in os.listdir(tmp_path) if name not in ("model.npz", "saver.py")]
        assert all(name.startswith(".model.npz.") and name.endswith(".tmp") for name in leftovers), leftovers
        for name in leftovers:  # SIGKILL leaves no chance to clean up; a hidden temporary is all that can remain
            os.unlink(tmp_path / name)


# ------------------------------------------------------------------------------------------ Ctrl-C during fit

def toy_data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32) * 0.5 + y[:, None, None, None]
    return x, y


def test_keyboard_interrupt_inside_a_checkpoint_write_keeps_the_previous_checkpoint_and_a_consistent_model(
        tmp_path, monkeypatch):
    x, y = toy_data()
    model = small_model()
    path = tmp_path / "ckpt.npz"
    real_writer = io._write_npz
    epochs_written = []

    def interrupted_midway(file, arrays):
        if len(epochs_written) == 2:  # the third checkpoint: half of it reaches the disk, then Ctrl-C
            real_writer(file, dict(list(arrays.items())[:3]))
            raise KeyboardInterrupt
        real_writer(file, arrays)
        epochs_written.append(True)

    monkeypatch.setattr(io, "_write_npz", interrupted_midway)
    history = fit(model, x, y, epochs=10, batch_size=32, seed=0, progress=False,
                  callbacks=[ModelCheckpoint(path, monitor="loss")])
    assert history.interrupted and len(history.epoch) == 3
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"], "no half-written checkpoint or temporary file"
    checkpoint = io.load_checkpoint(path)
    assert checkpoint["epoch"] == 2, "the previous checkpoint is intact"
    assert all(np.isfinite(p.data).all() and not p.grad.any() for p in model.parameters())
    monkeypatch.undo()
    resumed = small_model(seed=5)
    fit(resumed, x, y, epochs=3, batch_size=32, seed=0, progress=False, resume_from=path)  # it can be resumed


TRAINER = textwrap.dedent("""
    import sys, numpy as np
    from fastcnn import io, nn
    from fastcnn.callbacks import LambdaCallback, ModelCheckpoint
    from fastcnn.training import fit
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    x = rng.standard_normal((240, 1, 8, 8)).astype(np.float32) * 0.5 + y[:, None, None, None]
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, seed=0), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3, seed=1))
    ready = LambdaCallback(on_epoch_end=lambda epoch, logs: epoch == 0 and print("epoch", flush=True))
    history = fit(model, x, y, epochs=10**6, batch_size=16, seed=0, progress=False,
                  callbacks=[ready, ModelCheckpoint(sys.argv[1], monitor="loss")])
    assert history.interrupted
    assert all(np.isfinite(p.data).all() and not p.grad.any() for p in model.parameters())
    print("interrupted after", len(history.epoch), "epochs", flush=True)
""")


def only_a_keyboard_interrupt(err: str) -> bool:
    """Whether stderr holds one traceback, of a KeyboardInterrupt alone (none chained to another exception)."""
    lines = err.rstrip().splitlines()
    return (err.count("Traceback (most recent call last):") == 1 and "During handling" not in err
            and "direct cause" not in err and bool(lines) and lines[-1].rstrip() in ("KeyboardInterrupt",
                                                                                     "KeyboardInterrupt:"))


def assert_exited_by_the_second_interrupt(status: int, out: str, err: str) -> None:
    """What a second Ctrl-C may do to the trainer script, depending on where it lands; anything else (another
    exception, an interrupt escaping fit's training loop) fails."""
    # 0: fit returned an interrupted History, the script's checks passed, and the second Ctrl-C came never or while
    # Python shut down (where it is ignored); -2 (SIGINT): an uncaught KeyboardInterrupt, or the signal's default
    # action once Python restored it during shutdown (no traceback then).
    assert status in (0, -signal.SIGINT), (status, out, err)
    if status == 0 or not err:
        assert out.startswith("interrupted after"), (status, out, err)
    if err:
        # A KeyboardInterrupt alone: no other exception before it (a crash in fit, or one in a checkpoint write
        # that the interrupt turned into another error) or after it.
        assert only_a_keyboard_interrupt(err), err
        # Raised where an interrupt may escape: by fit's own handler (the second Ctrl-C) after its training loop,
        # while the callbacks' on_train_end run, or by Python's default handler once fit had restored it. Never
        # from inside the loop, which catches every KeyboardInterrupt.
        functions = re.findall(r'File "[^"]+", line \d+, in (\S+)', err)
        assert functions and not {"train_epoch", "train_step", "validate"} & set(functions), err


@pytest.mark.parametrize("signals", [1, 2])
def test_ctrl_c_at_a_random_moment_during_fit_leaves_a_complete_checkpoint(tmp_path, signals):
    """One Ctrl-C stops after the current batch; a second one interrupts at once, possibly inside a checkpoint
    write. Either way the process exits cleanly and the checkpoint on disk is complete and loadable."""
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    path = tmp_path / "ckpt.npz"
    rng = random_moments(f"Ctrl-C x{signals} during fit")
    trainer = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert read_line(trainer).strip() == "epoch"
        time.sleep(float(rng.uniform(0.0, 0.3)))
        for _ in range(signals):
            trainer.send_signal(signal.SIGINT)
            time.sleep(0.002)
        out, err = trainer.communicate(timeout=60)
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait(timeout=30)
    if signals == 1:
        # fit returned an interrupted History, the script's checks of the model passed, and it exited normally.
        assert trainer.returncode == 0 and "Traceback" not in err, err
        assert out.startswith("interrupted after"), out
    else:
        assert_exited_by_the_second_interrupt(trainer.returncode, out, err)
    checkpoint = io.load_checkpoint(path)
    assert checkpoint["epoch"] >= 1
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz", "trainer.py"]

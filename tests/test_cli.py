"""The `fastcnn` command end to end, as a user runs it: train on the 8x8 digits, then evaluate and predict with the
saved model, every bad argument refused with one line and status 2, Ctrl-C, and the console entry points.

Most runs call `fastcnn.cli.main(argv)` in-process (fast); a few go through `python -m fastcnn` and the installed
`fastcnn` script. The slow test runs the README's main command, `fastcnn` with no arguments, on the full MNIST.
"""
import base64
import contextlib
import dataclasses
import importlib.util
import io as text_io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastcnn
from fastcnn import cli, datasets, training
from fastcnn import io as model_io

pytest.importorskip("matplotlib", exc_type=ImportError)
pytest.importorskip("sklearn", exc_type=ImportError)  # the digits
Image = pytest.importorskip("PIL.Image", exc_type=ImportError)

FIGURES = ("filters.png", "feature_maps.png", "pooled_maps.png", "curves.png", "confusion_matrix.png",
           "saliency.png", "predictions.png")
DIGITS = ["--dataset", "digits", "--quiet", "--threads", "1"]  # 8x8 images: threads only wait on a busy machine


def run(argv):
    """(exit status, stdout, stderr) of main(argv) in this process."""
    out, err = text_io.StringIO(), text_io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue(), err.getvalue()


def assert_one_line_error(status, out, err, *fragments):
    assert status == 2, (status, out, err)
    assert "Traceback" not in err + out
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastcnn: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One digits run (2 epochs, with the progress bar) shared by the tests that only read what it wrote."""
    folder = tmp_path_factory.mktemp("run")
    status, out, err = run(["train", "--dataset", "digits", "--epochs", "2", "--threads", "1", "--out", str(folder)])
    return folder, status, out, err


@pytest.fixture(scope="module")
def digits_test():
    return datasets.load_digits()[1]


# ------------------------------------------------------------------------------------------------------- train

def test_train_writes_the_model_history_figures_and_report(trained):
    folder, status, out, err = trained
    assert status == 0, err
    assert "Traceback" not in err
    assert re.search(r"test accuracy: \d+\.\d\d% \(loss \d+\.\d{4}\) on 359 digits test images", out), out
    assert "Epoch 2/2" in err  # fit's progress bar
    names = {p.name for p in folder.iterdir()}
    assert names == {"model.npz", "history.json", "report.html", *FIGURES}  # no temporary file left behind
    for name in names:
        assert (folder / name).stat().st_size > 0


def test_history_json_holds_every_epoch_and_the_test_scores(trained):
    folder = trained[0]
    record = json.loads((folder / "history.json").read_text())
    assert record["epoch"] == [0, 1]
    assert set(record["history"]) == {"loss", "accuracy", "lr"}
    assert all(len(v) == 2 for v in record["history"].values())
    assert record["history"]["lr"] == [1e-3, 1e-3]
    assert record["interrupted"] is False
    model = fastcnn.load(folder / "model.npz")
    (_, _), (x_test, y_test) = datasets.load_digits()
    assert record["test"] == pytest.approx(fastcnn.evaluate(model, x_test, y_test), abs=1e-9)


def test_model_file_records_input_shape_class_names_and_hyperparameters(trained):
    metadata = model_io.load_metadata(trained[0] / "model.npz")
    assert metadata["input_shape"] == [1, 8, 8]
    assert metadata["class_names"] == datasets.class_names("digits")
    assert metadata["dataset"] == "digits"
    assert metadata["hyperparameters"] == {"filters": 32, "filter_size": 3, "pool_size": 2, "conv_layers": 1,
                                           "learning_rate": 1e-3, "epochs": 2, "batch_size": 64,
                                           "optimizer": "adam", "augment": False, "seed": 0}
    assert metadata["epochs_completed"] == 2 and metadata["interrupted"] is False


def test_report_embeds_every_figure_and_shows_the_results(trained):
    folder = trained[0]
    page = (folder / "report.html").read_text(encoding="utf-8")
    for name in FIGURES:
        match = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"[^>]*data-file="' + re.escape(name),
                          page)
        assert match, f"{name} is not embedded"
        assert base64.b64decode(match.group(1)) == (folder / name).read_bytes()
    accuracy = json.loads((folder / "history.json").read_text())["test"]["accuracy"]
    assert f"{accuracy:.2%}" in page
    per_class = page[page.index("<table id=per-class>"):]
    per_class = per_class[:per_class.index("</table>")]
    assert per_class.count("<tr>") == 1 + 10  # header and one row per digit
    for heading in ("Training curves", "Filters", "Feature maps", "Pooled maps", "Confusion matrix", "Saliency",
                    "Predictions", "Settings", "test loss"):
        assert heading in page
    assert "<th>filter size</th><td>3</td>" in page and "<th>learning rate</th><td>0.001</td>" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained


def test_options_reach_the_model_and_the_default_folder_is_new_each_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda *a: "20260101-000000")  # two runs in the "same second"
    argv = ["--epochs", "1", "--filters", "4", "--filter-size", "5", "--pool-size", "1", "--conv-layers", "2",
            "--optimizer", "sgd", "--batch-size", "128", "--augment", "--seed", "3", *DIGITS]
    assert run(argv)[0] == 0  # options without the word `train` go to train
    assert run(argv)[0] == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["digits-20260101-000000", "digits-20260101-000000-2"]
    metadata = model_io.load_metadata(tmp_path / "runs" / runs[1] / "model.npz")
    assert metadata["hyperparameters"]["learning_rate"] == cli.SGD_LEARNING_RATE  # sgd's own default
    model = fastcnn.load(tmp_path / "runs" / runs[1] / "model.npz")
    assert model[0].weight.shape == (4, 1, 5, 5) and model[3].weight.shape == (8, 4, 5, 5)
    first = fastcnn.load(tmp_path / "runs" / runs[0] / "model.npz")
    assert all(np.array_equal(a, b) for a, b in zip(first.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize("stop_after_epochs", [0, 1])
def test_ctrl_c_saves_what_training_has_and_exits_130(tmp_path, monkeypatch, stop_after_epochs):
    """fit turns Ctrl-C (here a KeyboardInterrupt raised by a callback, as fit documents) into an interrupted
    History; the command still writes everything it can and says so."""
    real_fit = training.fit

    class CtrlC(fastcnn.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            if self._epoch == stop_after_epochs and batch == 3:
                raise KeyboardInterrupt

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

    monkeypatch.setattr(training, "fit", lambda *a, **k: real_fit(*a, callbacks=[CtrlC()], **k))
    status, out, err = run(["train", "--epochs", "3", "--out", str(tmp_path), *DIGITS])
    assert status == cli.INTERRUPTED, err
    assert "Traceback" not in err
    assert f"training interrupted after {stop_after_epochs} of 3 epochs" in err
    record = json.loads((tmp_path / "history.json").read_text())
    assert record["interrupted"] is True and len(record["epoch"]) == stop_after_epochs
    assert model_io.load_metadata(tmp_path / "model.npz")["interrupted"] is True
    page = (tmp_path / "report.html").read_text()
    assert "Training was interrupted (Ctrl-C)" in page
    assert (tmp_path / "curves.png").exists() == (stop_after_epochs > 0)
    assert ("Not drawn: training stopped before the first epoch ended" in page) == (stop_after_epochs == 0)


def test_a_real_ctrl_c_during_training(tmp_path):
    """SIGINT to a `python -m fastcnn train` process while its progress bar runs: status 130, a usable model."""
    try:
        datasets.load_mnist(download=False)
    except datasets.DatasetNotFoundError as error:
        pytest.skip(f"MNIST is not installed here: {error}")
    process = subprocess.Popen([sys.executable, "-m", "fastcnn", "train", "--epochs", "5", "--threads", "1",
                                "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        while "Epoch 1/5" not in seen:  # tqdm draws the bar as soon as fit starts
            character = process.stderr.read(1)
            assert character, f"the command ended before training: {seen}"
            seen += character
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=300)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == cli.INTERRUPTED, seen + err
    assert "Traceback" not in seen + err
    assert "training interrupted after 0 of 5 epochs" in err
    assert "test accuracy:" in out
    assert json.loads((tmp_path / "history.json").read_text())["interrupted"] is True
    fastcnn.load(tmp_path / "model.npz")
    assert (tmp_path / "report.html").exists()


def test_missing_data_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCNN_CACHE", str(tmp_path))
    monkeypatch.delenv("FASTCNN_DATA", raising=False)
    monkeypatch.setitem(datasets._DATASETS, "mnist", dataclasses.replace(datasets._DATASETS["mnist"], system_dirs=()))
    status, out, err = run(["train", "--epochs", "1", "--out", str(tmp_path / "run")])
    assert_one_line_error(status, out, err, "mnist is not installed", "python -m fastcnn.datasets install mnist",
                          "--download")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------- evaluate, predict

def test_evaluate_prints_loss_accuracy_and_a_per_class_table(trained):
    folder = trained[0]
    status, out, err = run(["evaluate", str(folder / "model.npz"), "--threads", "1"])
    assert status == 0, err
    record = json.loads((folder / "history.json").read_text())["test"]
    assert f"loss {record['loss']:.4f}, accuracy {record['accuracy']:.2%} on 359 digits test images" in out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [row[0] for row in rows] == datasets.class_names("digits")
    assert sum(int(row[1]) for row in rows) == 359
    assert sum(int(row[2]) for row in rows) == round(record["accuracy"] * 359)


def save_png(path, image, scale=8, invert=False):
    """A (1, 8, 8) image in [0, 1] as an 8-bit PNG, enlarged `scale` times (a user's file is rarely 8x8)."""
    pixels = np.round((1 - image[0] if invert else image[0]) * 255).astype(np.uint8)
    Image.fromarray(pixels).resize((8 * scale, 8 * scale), Image.NEAREST).save(path)
    return str(path)


def test_predict_classifies_png_files_as_the_model_does(trained, digits_test, tmp_path):
    x_test, _ = digits_test
    model = fastcnn.load(trained[0] / "model.npz")
    expected = [str(c) for c in fastcnn.predict(model, x_test[:3]).argmax(axis=1)]
    files = [save_png(tmp_path / f"digit{i}.png", x_test[i]) for i in range(3)]
    status, out, err = run(["predict", str(trained[0] / "model.npz"), *files, "--top", "2"])
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    for line, file, label in zip(lines, files, expected):
        match = re.fullmatch(re.escape(file) + r": (\S+) \((\d+\.\d)%\)  (\S+) \((\d+\.\d)%\)", line)
        assert match, line
        assert match.group(1) == label and float(match.group(2)) >= float(match.group(4))


def test_predict_inverts_dark_on_light_images_only_when_asked_or_detected(trained, digits_test, tmp_path):
    x_test, _ = digits_test
    model = str(trained[0] / "model.npz")
    light = save_png(tmp_path / "light.png", x_test[0])
    dark = save_png(tmp_path / "dark_on_white.png", x_test[0], invert=True)
    status, out, err = run(["predict", model, light, dark])
    assert status == 0, err
    plain, inverted = out.splitlines()
    assert "[inverted" not in plain and inverted.endswith("[inverted: dark on light]")
    assert plain.split(": ", 1)[1] == inverted.split(": ", 1)[1].replace("  [inverted: dark on light]", "")
    assert run(["predict", model, dark, "--invert", "no"])[1].split(": ", 1)[1] != plain.split(": ", 1)[1]
    # A drawing with a transparent background lies on white paper: inverted too.
    drawing = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    drawing.paste((0, 0, 0, 255), (18, 5, 23, 35))
    drawing.save(tmp_path / "transparent.png")
    assert run(["predict", model, str(tmp_path / "transparent.png")])[1].rstrip().endswith("dark on light]")


# --------------------------------------------------------------------------------------------- bad arguments

def bad_arguments(folder: Path):
    corrupt = folder / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    unreadable = folder / "unreadable.png"
    unreadable.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    not_a_folder = folder / "file.txt"
    not_a_folder.write_text("x")
    model = str(folder / "model.npz")
    return [
        (["train", "--filters", "-3"], "filters must be an int between 1 and 64; got '-3'"),
        (["train", "--filters", "many"], "filters must be an int"),
        (["train", "--filter-size", "4"], "filter_size must be an odd int between 3 and 7; got '4'"),
        (["train", "--dataset", "digits", "--pool-size", "4", "--conv-layers", "2"],
         "pool_size 4 with 2 conv layers shrinks the 8x8 input to 0x0"),
        (["train", "--pool-size", "9"], "pool_size must be an int between 1 and 4"),
        (["train", "--lr", "5"], "learning_rate must be a number between 0.0001 and 1; got '5'"),
        (["train", "--lr", "nan"], "learning_rate must be"),
        (["train", "--epochs", "0"], "epochs must be an int between 1 and 20"),
        (["train", "--batch-size", "2.5"], "batch_size must be an int"),
        (["train", "--conv-layers", "3"], "conv_layers must be 1 or 2"),
        (["train", "--dataset", "cifar10"], "invalid choice: 'cifar10'"),
        (["train", "--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
        (["train", "--seed", "-1"], "argument --seed: must be an int >= 0"),
        (["train", "--threads", "0"], "argument --threads: must be an int >= 1"),
        (["train", "--out", str(not_a_folder), *DIGITS], "exists and is not a folder"),
        (["train", "--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["--epochs", "99"], "epochs must be an int between 1 and 20"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["evaluate"], "required: MODEL"),
        (["evaluate", str(folder / "missing.npz")], "no such model file"),
        (["evaluate", str(corrupt)], "cannot load the model"),
        (["evaluate", str(folder)], "is a folder"),
        (["evaluate", model, "--dataset", "mnist"], "takes images of 1x8x8 but mnist has 1x28x28"),
        (["predict", model], "required: IMAGE"),
        (["predict", str(corrupt), "x.png"], "cannot load the model"),
        (["predict", model, str(unreadable)], "cannot read image"),
        (["predict", model, str(folder / "missing.png")], "no such image file"),
        (["predict", model, str(folder / "history.json")], "cannot read image"),
        (["predict", model, "--top", "0", "x.png"], "argument --top: must be an int >= 1"),
    ]


def test_every_bad_argument_exits_2_with_one_line(trained):
    for argv, fragment in bad_arguments(trained[0]):
        status, out, err = run(argv)
        assert_one_line_error(status, out, err, fragment)


def test_a_model_without_input_shape_cannot_predict(tmp_path):
    model = fastcnn.models.tutorial_cnn(filters=2, input_size=8, seed=0)
    fastcnn.save(model, tmp_path / "bare.npz")
    Image.new("L", (8, 8)).save(tmp_path / "x.png")
    assert_one_line_error(*run(["predict", str(tmp_path / "bare.npz"), str(tmp_path / "x.png")]), "input_shape")


# ----------------------------------------------------------------------------------- bench, demo, entry points

def test_bench_and_demo_forward_their_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(fastcnn.bench, "main", lambda argv: calls.append(("bench", argv)) or 0)
    assert run(["bench", "--quick", "--threads", "1"])[0] == 0
    if importlib.util.find_spec("fastcnn.demo") is not None:  # the demo ships with this fastcnn
        from fastcnn import demo
        monkeypatch.setattr(demo, "main", lambda argv, prog: calls.append(("demo", argv, prog)) or 0)
        assert run(["demo", "--port", "0"])[0] == 0
        assert calls[-1] == ("demo", ["--port", "0"], "fastcnn demo")
    assert calls[0] == ("bench", ["--quick", "--threads", "1"])


def test_demo_says_it_is_not_available_where_this_install_has_none(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastcnn.demo", None)  # what importing a fastcnn without the demo meets
    assert_one_line_error(*run(["demo"]), "the browser demo is not available in this version of fastcnn")


@pytest.mark.parametrize("batch_size, processes, expected", [
    (64, 1, (64, 64)), (64, 4, (16, 64)), (64, 3, (21, 63)), (2, 3, (1, 3)),
])
def test_batch_size_is_split_across_processes_into_the_global_batch_really_trained(batch_size, processes, expected):
    # (per process, global): under mpiexec the run records and prints the global batch, not --batch-size, when
    # the division leaves some over (tests/test_distributed_mpi.py runs it under mpiexec).
    assert cli._split_batch(batch_size, processes) == expected


def test_help_and_version_exit_0():
    status, out, _ = run(["--help"])
    assert status == 0 and "train" in out and "predict" in out
    status, out, _ = run(["--version"])
    assert status == 0 and out.strip() == f"fastcnn {fastcnn.__version__}"


def test_python_dash_m_fastcnn_and_the_console_script(tmp_path):
    status = subprocess.run([sys.executable, "-m", "fastcnn", "train", "--epochs", "1", "--out", str(tmp_path),
                             *DIGITS], capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stderr
    assert "test accuracy:" in status.stdout and (tmp_path / "report.html").exists()
    bad = subprocess.run([sys.executable, "-m", "fastcnn", "train", "--filter-size", "4"], capture_output=True,
                         text=True, timeout=120)
    assert_one_line_error(bad.returncode, bad.stdout, bad.stderr, "filter_size must be an odd int")
    script = Path(sys.executable).with_name("fastcnn")  # pip installs [project.scripts] next to the interpreter
    assert script.exists(), f"the console script is not installed at {script}"
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == f"fastcnn {fastcnn.__version__}"


# ------------------------------------------------------------------------------------------- the main command

@pytest.mark.slow
def test_the_main_command_reaches_98_percent_on_mnist(tmp_path, monkeypatch):
    """The README's main command, `fastcnn` with no arguments: the full MNIST training set, >= 98% test accuracy.
    The time bound is loose (about a minute on 2 idle cores; a busy machine takes several times longer)."""
    try:
        datasets.load_mnist(download=False)
    except datasets.DatasetNotFoundError as error:
        pytest.skip(f"MNIST is not installed here: {error}")
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    status, out, err = run([])
    seconds = time.perf_counter() - started
    assert status == 0, err
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("mnist-")
    record = json.loads((folder / "history.json").read_text())
    assert len(record["epoch"]) == cli.MAIN_COMMAND_EPOCHS
    assert record["test"]["accuracy"] >= 0.98, record["test"]
    assert f"test accuracy: {record['test']['accuracy']:.2%}" in out
    print(f"main command: {seconds:.0f} s in all, {record['train_seconds']:.0f} s training, "
          f"test accuracy {record['test']['accuracy']:.2%}")
    assert seconds < 600, f"the main command took {seconds:.0f} s"

"""The browser demo's server and JSON API, driven over HTTP as the page drives it (no browser here; see
test_demo_browser.py for the page itself).

The runs train on MNIST subsets of 1024 images (200 for testing); without MNIST installed they skip with the reason.
"""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest

from fastcnn import datasets
from fastcnn.demo import serve
from fastcnn.demo import server as demo_server
from fastcnn.demo import session as demo_session
from fastcnn.demo.views import png_bytes
from fastcnn.models import HYPERPARAMETERS, validate_hyperparameters

TRAIN_SIZE, TEST_SIZE = 1024, 200


@pytest.fixture(scope="module")
def mnist_subset():
    try:  # fills the demo's cache, so the servers below never try a download
        return demo_session.load_subset("mnist", TRAIN_SIZE, TEST_SIZE, download=False)
    except datasets.DatasetNotFoundError as error:
        pytest.skip(f"MNIST is not installed here: {error}")


@pytest.fixture(scope="module")
def server(mnist_subset):
    demo = serve(port=0, train_size=TRAIN_SIZE, test_size=TEST_SIZE)
    yield demo
    demo.shutdown()


def call(server, method, path, body=None, headers=None, raw=None):
    """(status, parsed JSON or text, response headers) of one request."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    headers = dict(headers or {})
    if raw is None and body is not None:
        raw = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    try:
        connection.request(method, path, body=raw, headers=headers)
        response = connection.getresponse()
        data = response.read()
        kind = response.getheader("Content-Type", "")
        return response.status, (json.loads(data) if "json" in kind else data.decode()), dict(response.getheaders())
    finally:
        connection.close()


def state(server):
    status, data, _ = call(server, "GET", "/api/state")
    assert status == 200
    return data


def wait_for(server, predicate, timeout, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        current = state(server)
        if predicate(current):
            return current
        assert time.monotonic() < deadline, f"timed out; last state: {current['status']} {current['message']}"
        time.sleep(interval)


def finished(current):
    return current["status"] in ("done", "error", "idle")


def decode_png(uri):
    """(height, width, pixels) of our grayscale PNGs, decoded by hand (8-bit, filter type 0 on every row)."""
    import base64

    data = base64.b64decode(uri.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, color = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), data[24], \
        data[25]
    assert (depth, color) == (8, 0)
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4:idat], "big")
    rows = np.frombuffer(zlib.decompress(data[idat + 4:idat + 4 + length]), np.uint8).reshape(height, width + 1)
    assert not rows[:, 0].any()
    return height, width, rows[:, 1:]


# --------------------------------------------------------------------------------------------- pages, config

def test_config_holds_the_table_the_labels_and_the_slider_ranges(server):
    status, config, headers = call(server, "GET", "/api/config")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert [h["name"] for h in config["hyperparameters"]] == list(HYPERPARAMETERS)
    controls = {c["name"]: c for c in config["controls"]}
    assert {c["label"] for c in controls.values()} >= {"Number of filters", "Filter size", "Pooling size",
                                                       "Learning rate", "Epochs"}
    assert (controls["filters"]["min"], controls["filters"]["max"]) == (1, 32)  # narrower than the table's 64
    assert controls["filters"]["table_max"] == HYPERPARAMETERS["filters"].maximum
    assert controls["filter_size"]["choices"] == [3, 5, 7]
    assert (controls["pool_size"]["min"], controls["pool_size"]["max"]) == (1, 4)
    assert (controls["learning_rate"]["min"], controls["learning_rate"]["max"], controls["learning_rate"]["kind"]) \
        == (1e-4, 1.0, "log-range")
    assert (controls["epochs"]["min"], controls["epochs"]["max"]) == (1, 20)
    assert {c["name"]: c["default"] for c in config["controls"]} == \
        {name: HYPERPARAMETERS[name].default for name in controls}
    assert [d["name"] for d in config["datasets"]] == ["mnist", "fashion-mnist", "digits"]
    assert config["default_dataset"] == "mnist" and config["test_size"] == TEST_SIZE


@pytest.mark.parametrize("path, kind", [("/", "text/html"), ("/index.html", "text/html"),
                                        ("/app.js", "text/javascript"), ("/style.css", "text/css")])
def test_static_files_come_from_the_package_and_load_nothing_from_elsewhere(server, path, kind):
    status, text, headers = call(server, "GET", path)
    assert status == 200 and headers["Content-Type"].startswith(kind)
    assert "http://" not in text and "https://" not in text  # offline: no CDN, no remote script
    if kind == "text/html":
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert 'src="app.js"' in text and 'type="module"' in text
        for heading in ("Training curves", "Filters", "Feature maps", "Pooled maps"):
            assert f">{heading}</h2>" in text


# ----------------------------------------------------------------------------------------------- training

def test_a_run_advances_shows_views_and_ends_with_results_that_a_reload_still_sees(server):
    status, started, _ = call(server, "POST", "/api/train",
                              {"filters": 4, "filter_size": 5, "pool_size": 2, "learning_rate": 0.002, "epochs": 2,
                               "batch_size": 16})
    assert status == 200 and started["status"] == "running"
    run = started["run"]
    seen = []
    current = wait_for(server, lambda s: seen.append((s["epoch"], s["batch"])) or finished(s), timeout=60,
                       interval=0.01)
    assert current["status"] == "done", current["message"]
    assert any(batch > 0 for _, batch in seen[:-1]), "no progress was reported while running"
    assert len(set(seen)) > 2
    assert current["message"] == "finished 2 epochs" and not current["stopped"]
    assert (current["epoch"], current["batch"], current["batches"]) == (2, TRAIN_SIZE // 16, TRAIN_SIZE // 16)
    history = current["history"]
    assert history["epoch"] == [1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history[key]) == 2 and all(isinstance(v, float) for v in history[key])
    assert len(current["live"]["x"]) == 2 * (TRAIN_SIZE // 16) and current["live"]["x"][-1] == 2.0
    assert current["images_per_second"] > 0

    views = current["views"]
    assert views["snapshot"] == current["snapshot"] and views["sample"] == current["sample"] == 0
    assert (views["filters"]["width"], views["filters"]["height"]) == (2 * 5 + 1, 2 * 5 + 1)  # 2x2 tiles of 5x5
    assert views["feature_maps"]["shape"] == [4, 28, 28] and views["pooled_maps"]["shape"] == [4, 14, 14]
    for name in ("image", "filters", "feature_maps", "pooled_maps"):
        height, width, pixels = decode_png(views[name]["src"])
        assert (height, width) == (views[name]["height"], views[name]["width"])
        assert pixels.min() < pixels.max(), f"{name} is blank"
    assert views["label"] == int(demo_session.load_subset("mnist", TRAIN_SIZE, TEST_SIZE).y_test[0])
    assert len(views["prediction"]["probabilities"]) == 10

    results = current["results"]
    matrix = np.array(results["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == TEST_SIZE
    assert results["accuracy"] == pytest.approx(np.trace(matrix) / TEST_SIZE)
    assert results["accuracy"] > 0.5  # two epochs on 1024 images
    assert len(results["predictions"]) == 16
    assert {"image", "predicted", "true", "index", "confidence"} <= set(results["predictions"][0])

    # Another sample image, chosen by one page, is what every page now sees.
    status, answer, _ = call(server, "POST", "/api/sample", {"index": 7})
    assert status == 200 and answer["sample"] == 7 and answer["views"]["sample"] == 7
    assert answer["views"]["image"]["src"] != views["image"]["src"]
    status, answer, _ = call(server, "GET", "/api/views?sample=3")
    assert status == 200 and answer["views"]["sample"] == 3

    # A reload: a new connection finds the same run, its curves and its results.
    again = state(server)
    assert again["run"] == run and again["history"] == history and again["results"] == results
    assert again["sample"] == 7 and again["views"]["sample"] == 7


def test_a_second_train_is_refused_events_stream_and_stop_ends_the_run_within_a_second(server):
    status, _, _ = call(server, "POST", "/api/train", {"filters": 16, "epochs": 20, "batch_size": 8})
    assert status == 200
    wait_for(server, lambda s: s["batch"] > 0 or finished(s), timeout=30)

    status, answer, _ = call(server, "POST", "/api/train", {"epochs": 1})
    assert status == 409 and "already running" in answer["error"] and "Stop" in answer["error"]

    # The event stream: state updates at least twice a second while training.
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("GET", "/api/events")
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    events, started = [], time.monotonic()
    while len(events) < 4:
        line = response.fp.readline()
        if line.startswith(b"data: "):
            events.append(json.loads(line[6:]))
    elapsed = time.monotonic() - started
    connection.close()
    assert elapsed < 2.0, f"4 events took {elapsed:.2f} s"
    assert all(e["status"] == "running" for e in events)
    assert "views" in events[0]  # the first event carries the views; later ones only when they changed
    assert events[-1]["version"] > events[0]["version"]

    stop_sent = time.monotonic()
    status, answer, _ = call(server, "POST", "/api/stop", {})
    assert status == 200 and answer["status"] == "stopping"
    current = wait_for(server, finished, timeout=10, interval=0.01)
    took = time.monotonic() - stop_sent
    assert took < 1.0, f"training took {took:.2f} s to stop"
    assert current["status"] == "done" and current["stopped"] and current["message"].startswith("stopped during")
    assert current["results"] is not None  # still reported, from the weights reached
    status, answer, _ = call(server, "POST", "/api/stop")  # nothing runs: a no-op
    assert status == 200 and answer["status"] == "done"


# ---------------------------------------------------------------------------------------------- validation

INVALID = [
    {"filters": 0}, {"filters": 65}, {"filters": "many"}, {"filters": 2.5}, {"filters": True},
    {"filter_size": 4}, {"filter_size": 9}, {"pool_size": 0}, {"pool_size": 5},
    {"conv_layers": 3}, {"learning_rate": 0}, {"learning_rate": 2}, {"learning_rate": "fast"},
    {"learning_rate": [0.1]}, {"epochs": 0}, {"epochs": 21}, {"batch_size": 0}, {"batch_size": 5000},
]


@pytest.mark.parametrize("body", INVALID, ids=lambda body: "-".join(f"{k}={v}" for k, v in body.items()))
def test_each_invalid_value_is_refused_with_the_tables_message(server, body):
    with pytest.raises(ValueError) as expected:
        validate_hyperparameters(**body)
    before = state(server)["run"]
    status, answer, _ = call(server, "POST", "/api/train", body)
    assert (status, answer) == (400, {"error": str(expected.value)})
    assert state(server)["run"] == before  # nothing started


@pytest.mark.parametrize("body, message", [
    ({"dataset": "cifar10"}, "dataset must be one of 'mnist', 'fashion-mnist', 'digits'; got 'cifar10'"),
    ({"dataset": 5}, "dataset must be one of 'mnist', 'fashion-mnist', 'digits'; got 5"),
    ({"seed": 1}, "unknown parameter 'seed'; expected dataset or one of " + ", ".join(HYPERPARAMETERS)),
    ({"input_size": 8}, "unknown parameter 'input_size'"),
    ([1, 2], "the request body must be a JSON object"),
    ("filters", "the request body must be a JSON object"),
])
def test_the_dataset_unknown_names_and_non_objects_are_refused(server, body, message):
    status, answer, _ = call(server, "POST", "/api/train", body)
    assert status == 400 and answer["error"].startswith(message)


def test_pooling_that_leaves_nothing_of_the_dataset_images_is_refused_in_the_tables_words(server):
    with pytest.raises(ValueError) as expected:
        validate_hyperparameters(input_size=8, pool_size=4, conv_layers=2)
    status, answer, _ = call(server, "POST", "/api/train", {"dataset": "digits", "pool_size": 4, "conv_layers": 2})
    assert (status, answer["error"]) == (400, str(expected.value))
    assert "shrinks the 8x8 input to 0x0" in answer["error"]


@pytest.mark.parametrize("value", [TEST_SIZE, -1, "x", 1.5, None])
def test_a_sample_index_out_of_range_is_refused(server, value):
    status, answer, _ = call(server, "POST", "/api/sample", {"index": value})
    assert status == 400 and answer["error"] == f"sample must be an int between 0 and {TEST_SIZE - 1}; got {value!r}"
    status, answer, _ = call(server, "GET", f"/api/views?sample={value}")
    assert status == 400 and answer["error"].startswith("sample must be an int")


@pytest.mark.parametrize("raw, headers, code, message", [
    (b'{"filters": 8', {"Content-Type": "application/json"}, 400, "the request body is not valid JSON"),
    (b"\xff\xfe{}", {"Content-Type": "application/json"}, 400, "the request body is not UTF-8 text"),
    (b'{"filters": 8}', {"Content-Type": "text/plain"}, 415, "the request body must be JSON with Content-Type"),
    (b'{"filters": 8}', {"Content-Type": "application/json", "Content-Length": "abc"}, 400,
     "Content-Length must be a non-negative int"),
])
def test_malformed_bodies_are_refused(server, raw, headers, code, message):
    status, answer, _ = call(server, "POST", "/api/train", raw=raw, headers=headers)
    assert status == code and answer["error"].startswith(message)


def test_a_body_over_the_limit_is_refused_with_413(server):
    raw = json.dumps({"filters": 8, "padding": "x" * (demo_server.MAX_BODY_BYTES + 10)}).encode()
    status, answer, _ = call(server, "POST", "/api/train", raw=raw, headers={"Content-Type": "application/json"})
    assert status == 413 and f"over the limit of {demo_server.MAX_BODY_BYTES} bytes" in answer["error"]
    assert state(server)["status"] != "running"


# ------------------------------------------------------------------------------------------------ defences

@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1:1", "localhost.evil:{port}",
                                  "127.0.0.1:{port}@evil", ""])
def test_a_foreign_host_header_is_refused(server, host):
    status, answer, _ = call(server, "GET", "/api/state", headers={"Host": host.format(port=server.port)})
    assert status == 403 and "answers only requests for" in answer["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}"])
def test_the_servers_own_names_are_accepted(server, host):
    status, _, _ = call(server, "GET", "/api/state", headers={"Host": host.format(port=server.port)})
    assert status == 200


@pytest.mark.parametrize("origin, allowed", [
    ("http://evil.example", False), ("http://127.0.0.1:1", False), ("null", False),
    ("https://127.0.0.1:{port}", False), ("http://127.0.0.1:{port}", True), ("http://localhost:{port}", True),
])
def test_a_post_from_a_foreign_origin_is_refused(server, origin, allowed):
    status, answer, _ = call(server, "POST", "/api/stop", {}, headers={"Origin": origin.format(port=server.port)})
    if allowed:
        assert status == 200
    else:
        assert status == 403 and "cross-site request refused" in answer["error"]
        before = state(server)["run"]
        status, _, _ = call(server, "POST", "/api/train", {"epochs": 1},
                            headers={"Origin": origin.format(port=server.port)})
        assert status == 403 and state(server)["run"] == before


@pytest.mark.parametrize("method, path, code", [
    ("GET", "/api/nothing", 404), ("GET", "/etc/passwd", 404), ("GET", "/../setup.py", 404),
    ("GET", "/static/app.js", 404), ("GET", "/api/train", 405), ("POST", "/api/state", 405),
    ("DELETE", "/api/state", 405), ("PUT", "/", 405),
])
def test_unknown_paths_and_wrong_methods_answer_json_errors(server, method, path, code):
    status, answer, headers = call(server, method, path)
    assert status == code and isinstance(answer["error"], str)
    if code == 405:
        assert headers["Allow"]


def test_an_unexpected_error_is_a_500_without_a_traceback(server, monkeypatch, capsys):
    def broken(**kwargs):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(server.session, "state", broken)
    status, answer, _ = call(server, "GET", "/api/state")
    assert status == 500 and answer == {"error": "internal server error; the details are in the server's log"}
    monkeypatch.undo()
    assert "secret detail" in capsys.readouterr().err  # logged on the server's side only
    assert call(server, "GET", "/api/state")[0] == 200  # and the server goes on


def test_a_failing_run_reports_its_error_and_the_server_goes_on(mnist_subset, monkeypatch):
    def unavailable(*args, **kwargs):
        raise datasets.DatasetNotFoundError("load_mnist: no MNIST files found")

    monkeypatch.setattr(demo_session, "load_subset", unavailable)
    with serve(port=0, train_size=TRAIN_SIZE, test_size=TEST_SIZE) as demo:
        assert call(demo, "POST", "/api/train", {"epochs": 1})[0] == 200
        current = wait_for(demo, finished, timeout=10)
        assert (current["status"], current["message"]) == ("error", "load_mnist: no MNIST files found")
        assert call(demo, "GET", "/api/config")[0] == 200


# ---------------------------------------------------------------------------------------- serve and main

def test_serve_checks_its_arguments_and_reports_the_real_port():
    with pytest.raises(ValueError, match=r"serve: dataset must be one of .*; got 'cifar'"):
        serve(port=0, dataset="cifar")
    with pytest.raises(ValueError, match=r"serve: port must be an int between 0 and 65535; got -1"):
        serve(port=-1)
    demo = serve(port=0, dataset="fashion_mnist")
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:(\d+)/", demo.url).group(1) == str(demo.port) != "0"
        assert call(demo, "GET", "/api/config")[1]["default_dataset"] == "fashion-mnist"
    finally:
        demo.shutdown()
        demo.shutdown()  # twice is fine


def test_main_prints_the_url_first_serves_and_stops_on_ctrl_c():
    # `python -m fastcnn.demo --port 0 --no-browser`, with Python's Ctrl-C handler installed first: a shell that
    # runs this suite in the background starts it with SIGINT ignored, which the child would inherit.
    script = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
              "sys.argv = ['fastcnn.demo', '--port', '0', '--no-browser']; "
              "runpy.run_module('fastcnn.demo', run_name='__main__', alter_sys=True)")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "DISPLAY": "", "WAYLAND_DISPLAY": ""})
    try:
        first = []
        reader = threading.Thread(target=lambda: first.append(process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(30)
        assert first, "no line printed within 30 s"
        match = re.fullmatch(r"fastcnn demo: (http://127\.0\.0\.1:(\d+)/)\n", first[0])
        assert match, first[0]
        connection = http.client.HTTPConnection("127.0.0.1", int(match.group(2)), timeout=10)
        connection.request("GET", "/api/config")
        assert connection.getresponse().status == 200
        connection.close()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "fastcnn demo: stopped" in out and "Traceback" not in err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_main_reports_a_port_in_use(server, capsys):
    from fastcnn.demo import main

    assert main(["--port", str(server.port), "--no-browser"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"fastcnn demo: cannot listen on 127.0.0.1:{server.port}: ")
    assert "choose another --port" in captured.err


def test_png_bytes_writes_files_that_pillow_reads():
    image_module = pytest.importorskip("PIL.Image")
    import io

    gray = np.arange(35, dtype=np.uint8).reshape(5, 7) * 7
    rgb = np.stack([gray, 255 - gray, gray // 2], axis=2)
    for pixels in (gray, rgb):
        with image_module.open(io.BytesIO(png_bytes(pixels))) as image:
            np.testing.assert_array_equal(np.asarray(image), pixels)
    with pytest.raises(ValueError, match=r"png_bytes: expected a non-empty uint8 image"):
        png_bytes(np.zeros((2, 2), np.float32))

"""Fuzzing the demo server's API over real HTTP: malformed and hostile JSON, wrong types, out-of-range values, huge
bodies, garbage request lines, foreign Host and Origin headers. Every request must get a clear refusal (a 4xx with
a JSON {"error": ...} from the API, or the standard library's 400 for a broken request line) or a closed
connection, never a 500, and the server must keep serving after each one.

No dataset is needed: no fuzzed request is allowed to start a run (each /api/train body holds a value the table
refuses). FASTCNN_FUZZ_REQUESTS (default 300) sets the number of requests of each kind.
"""
import http.client
import json
import os
import socket

import numpy as np
import pytest

from fastcnn.demo import serve
from fastcnn.demo import server as demo_server
from fastcnn.models import HYPERPARAMETERS

FUZZ_REQUESTS = int(os.environ.get("FASTCNN_FUZZ_REQUESTS", "300"))
KEYS = list(HYPERPARAMETERS) + ["dataset", "index", "seed", "", "__proto__"]
# One value per key that the table always refuses, so a fuzzed /api/train never starts training.
ALWAYS_INVALID = [("filters", 0), ("filters", 10**30), ("filter_size", 4), ("pool_size", -1), ("conv_layers", 3),
                  ("learning_rate", 0), ("learning_rate", "fast"), ("epochs", 1e308), ("batch_size", [64]),
                  ("dataset", "../../etc/passwd"), ("epochs", {"$gt": 1}), ("filters", True)]


@pytest.fixture(scope="module")
def server():
    demo = serve(port=0, train_size=64, test_size=16)
    yield demo
    demo.shutdown()


def request(server, method, path, raw=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(method, path, body=raw, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def assert_still_serving(server):
    status, _, body = request(server, "GET", "/api/state")
    assert status == 200 and json.loads(body)["status"] == "idle", "nothing may have started a run"


def random_json_value(rng, depth=0):
    kind = rng.integers(12 if depth < 3 else 9)
    return [
        lambda: int(rng.integers(-10, 100)), lambda: int(rng.integers(-2**62, 2**62)) * 10**int(rng.integers(0, 40)),
        lambda: float(rng.standard_normal() * 10.0 ** rng.integers(-300, 300)), lambda: None, lambda: bool(rng.integers(2)),
        lambda: rng.bytes(int(rng.integers(0, 20))).decode("latin1"), lambda: "NaN", lambda: "",
        lambda: "x" * int(rng.integers(0, 2000)),
        lambda: [random_json_value(rng, depth + 1) for _ in range(rng.integers(0, 4))],
        lambda: {str(rng.choice(KEYS)): random_json_value(rng, depth + 1) for _ in range(rng.integers(0, 4))},
        lambda: [[[]]],
    ][kind]()


def random_body(rng, endpoint):
    """(raw bytes, headers): mostly JSON objects with known keys and random values, sometimes broken bytes."""
    choice = rng.integers(10)
    headers = {"Content-Type": "application/json"}
    if choice == 0:
        return rng.bytes(int(rng.integers(1, 200))), headers
    if choice == 1:
        text = json.dumps({"filters": 8, "epochs": 1})
        return text[:int(rng.integers(1, len(text)))].encode(), headers  # cut short
    if choice == 2:
        depth = int(rng.integers(1, 30000))
        return (b"[" * depth + b"]" * depth)[:demo_server.MAX_BODY_BYTES], headers
    if choice == 3:
        return b'{"filters": 1e400, "learning_rate": -Infinity, "epochs": NaN}', headers
    if choice == 4:
        return b'{"filters": ' + b"9" * 5000 + b"}", headers  # past Python's int-from-string limit
    if choice == 5:
        return json.dumps(random_json_value(rng)).encode(), {"Content-Type": str(rng.choice(
            ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "", "application/jsonp"]))}
    body = {str(rng.choice(KEYS)): random_json_value(rng) for _ in range(rng.integers(0, 6))}
    if endpoint == "/api/train":
        key, value = ALWAYS_INVALID[rng.integers(len(ALWAYS_INVALID))]
        body[key] = value
    if endpoint == "/api/sample" and rng.integers(2):
        body = {"index": random_json_value(rng)}
    return json.dumps(body).encode(), headers


@pytest.mark.parametrize("endpoint", ["/api/train", "/api/sample", "/api/stop"])
def test_fuzzed_json_bodies_are_refused_clearly_and_the_server_keeps_serving(server, endpoint):
    rng = np.random.default_rng(abs(hash(endpoint)) % 2**32)
    statuses = {}
    for i in range(FUZZ_REQUESTS):
        raw, headers = random_body(rng, endpoint)
        status, kind, body = request(server, "POST", endpoint, raw, headers)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (raw[:200], body[:300])
        if status != 200:
            assert status in (400, 413, 415) and kind.startswith("application/json"), (status, raw[:200])
            assert isinstance(json.loads(body)["error"], str) and json.loads(body)["error"]
        else:
            assert endpoint != "/api/train", f"a fuzzed body started a run: {raw[:200]!r}"
        if i % 50 == 0:
            assert_still_serving(server)
    print(f"\n{endpoint}: {FUZZ_REQUESTS} fuzzed requests -> statuses {dict(sorted(statuses.items()))}")
    assert_still_serving(server)


@pytest.mark.parametrize("length, sent", [(demo_server.MAX_BODY_BYTES + 1, "all"), (10 * 2**20, "all"),
                                          (2**62, "none"), (17 * 2**20, "none")])
def test_huge_bodies_are_refused_with_413_and_never_buffered(server, length, sent):
    """Over 64 KiB the body is refused unparsed; up to 16 MiB it is read and dropped (so the client can read the
    answer), past that the server answers at once and closes without waiting for it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(f"POST /api/train HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json"
                     f"\r\nContent-Length: {length}\r\n\r\n".encode())
        if sent == "all":
            chunk = b"[" * 2**16
            for start in range(0, length, len(chunk)):
                sock.sendall(chunk[:length - start])
        answer = b""
        while part := sock.recv(65536):  # the server closes the connection after a 413
            answer += part
        answer = answer.decode("latin1")
    assert answer.split(" ", 2)[1] == "413", answer[:200]
    assert f"over the limit of {demo_server.MAX_BODY_BYTES} bytes" in answer
    assert_still_serving(server)


GARBAGE = [b"\x00\x01\x02\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET /api/state HTTP/1.1\r\n" +
           b"X: " + b"a" * 70000 + b"\r\n\r\n", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
           b"POST /api/train HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"BREW /pot HTTP/1.1\r\n\r\n",
           b"GET /api/state HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(200)) + b"\r\n",
           b"\xff\xfe\xfd HTTP/1.1\r\n\r\n", b"GET /api/views?sample=" + b"9" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"]


@pytest.mark.parametrize("raw", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_on_the_socket_is_refused_or_closed_and_the_server_keeps_serving(server, raw):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw.replace(b"Host: x", f"Host: 127.0.0.1:{server.port}".encode()))
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:
            answer = b""
    if answer:  # a request line without a version gets the standard library's HTTP/0.9 answer: no status line
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else \
            int(answer.split(b"Error code: ", 1)[1][:3])
        # 4xx, or the standard library's 501 (unknown method) and 505 (HTTP version): refusals, not failures
        assert 400 <= status < 500 or status in (501, 505), answer[:300]
    assert_still_serving(server)


def test_fuzzed_host_and_origin_headers_are_refused_unless_they_name_this_server(server):
    rng = np.random.default_rng(11)
    port = server.port
    own = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    pieces = ["127.0.0.1", "localhost", "[::1]", "evil.example", "127.0.0.1.evil.example", "localhost.", "0.0.0.0",
              "127.0.0.2", "::1", "LOCALHOST", "", "@", "%00", " ", "127.0.0.1:80@evil", "xn--lcalhost"]
    ports = [f":{port}", "", ":80", f":{port + 1}", f":{port}0", f":{port}:{port}", f":{port}/", ":", ":-1", f": {port}"]
    refused = accepted = 0
    for _ in range(FUZZ_REQUESTS):
        host = str(rng.choice(pieces)) + str(rng.choice(ports))
        if rng.integers(4) == 0:
            host = host.upper() if rng.integers(2) else host + str(rng.choice(["", ".", " ", "\t"]))
        status, _, body = request(server, "GET", "/api/state", headers={"Host": host})
        if host.strip().lower() in own:
            assert status == 200, host
            accepted += 1
        else:
            assert status == 403 and b"answers only requests for" in body, host
            refused += 1
        origin = str(rng.choice(["http://", "https://", "", "null", "file://"])) + host
        status, _, body = request(server, "POST", "/api/stop", b"{}", {"Origin": origin,
                                                                      "Content-Type": "application/json"})
        if origin.lower().startswith("http://") and origin[7:].lower() in own:
            assert status == 200, origin
        else:
            assert status == 403 and b"cross-site request refused" in body, origin
    print(f"\nHost/Origin fuzz: {FUZZ_REQUESTS} x 2 requests, Host refused {refused}, accepted {accepted}")
    assert refused > FUZZ_REQUESTS // 2 and accepted > 0
    assert_still_serving(server)

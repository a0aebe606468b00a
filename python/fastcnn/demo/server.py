"""The demo's HTTP server: the standard library's ThreadingHTTPServer, static files and a small JSON API.

See `fastcnn.demo` for the API. Every answer is JSON (`{"error": "..."}` for a refused request) except the static
files and the event stream; no request can crash the server or show a traceback to the client (an unexpected error
is logged on the server's stderr and answered 500).

Defences, because a local server is reachable from any page the browser opens:
- DNS rebinding: the Host header must name the address and port the server listens on (localhost and 127.0.0.1
  are interchangeable on a loopback address; with a wildcard address such as 0.0.0.0, any IP literal or localhost
  with the right port), else 403.
- Cross-site requests: a POST whose Origin header is present must come from the server's own origin, else 403; a
  non-empty POST body must be `application/json` (so a foreign page cannot send it without a CORS preflight,
  which this server never grants), else 415.
- Bodies over `MAX_BODY_BYTES` (64 KiB) are refused with 413 before they are read into memory.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import socketserver
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from ..models import HYPERPARAMETERS
from .session import DATASETS, Busy, Session, hyperparameter_table

__all__ = ["DemoServer", "MAX_BODY_BYTES", "CONTROLS"]

MAX_BODY_BYTES = 64 * 1024
EVENT_INTERVAL = 0.25  # at most four events a second per stream
RUNNING_HEARTBEAT = 0.5  # while training, an event at least this often even when no batch ended
IDLE_HEARTBEAT = 15.0  # a comment line keeps idle streams (and proxies) open

# The page's controls: the label shown, the kind of input, and the slider's range where it is narrower than the
# table's (the rules themselves always come from HYPERPARAMETERS).
CONTROLS = (
    {"name": "filters", "label": "Number of filters", "kind": "range", "min": 1, "max": 32},
    {"name": "filter_size", "label": "Filter size", "kind": "select"},
    {"name": "pool_size", "label": "Pooling size", "kind": "range"},
    {"name": "conv_layers", "label": "Convolution layers", "kind": "select"},
    {"name": "learning_rate", "label": "Learning rate", "kind": "log-range"},
    {"name": "epochs", "label": "Epochs", "kind": "range"},
    {"name": "batch_size", "label": "Batch size", "kind": "number"},
)

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_LOOPBACK_NAMES = ("127.0.0.1", "localhost")


class _Refused(Exception):
    """A request answered with an error status and a message for the page."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def config(session: Session) -> dict:
    """GET /api/config: the hyper-parameter table, the page's controls, the datasets and the limits."""
    controls = []
    for control in CONTROLS:
        spec = HYPERPARAMETERS[control["name"]].as_dict()
        controls.append({**spec, **control, "table_min": spec["min"], "table_max": spec["max"]})
    return {
        "hyperparameters": hyperparameter_table(),
        "controls": controls,
        "datasets": [info.as_dict() for info in DATASETS.values()],
        "default_dataset": session.default_dataset,
        "train_size": session.train_size,
        "test_size": session.test_size,
        "max_body_bytes": MAX_BODY_BYTES,
    }


def _is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_host(value: str):
    """('name', port) from a Host header value 'name:port' or '[v6]:port' (port None when absent)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    else:
        name, _, port = value.partition(":")
    if port is not None and port != "" and not port.isdigit():
        return None, None
    return name, int(port) if port else None


class DemoServer(ThreadingHTTPServer):
    """The demo's server: `url` (the real port when 0 was asked) and `shutdown()`, which ends the training run,
    closes the event streams and releases the port. Usable as a context manager. Made by `fastcnn.demo.serve`."""

    daemon_threads = True  # event streams must not keep the process alive

    def __init__(self, host: str, port: int, session: Session, *, quiet: bool = True):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.session, self.quiet = session, quiet
        self._serving_thread = None
        self._closed = False
        super().__init__((host, port), _Handler)
        self.host, self.port = host, self.server_address[1]
        shown = host if not _is_wildcard(host) else ("127.0.0.1" if self.address_family == socket.AF_INET else "::1")
        self.url = f"http://[{shown}]:{self.port}/" if ":" in shown else f"http://{shown}:{self.port}/"

    def server_bind(self):
        # HTTPServer.server_bind looks the host name up (socket.getfqdn), which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def host_allowed(self, value: str | None) -> bool:
        """Whether a Host header (or an Origin without its scheme) names this server."""
        if not value:
            return False
        name, port = _split_host(value)
        if name is None or (port or 80) != self.port:
            return False
        bound = self.host.lower()
        if _is_wildcard(bound):
            if name == "localhost":
                return True
            try:
                ipaddress.ip_address(name)
                return True
            except ValueError:
                return False
        if name == bound:
            return True
        return _is_loopback(bound) and name in _LOOPBACK_NAMES + ("::1",) and _is_loopback(name)

    def origin_allowed(self, origin: str) -> bool:
        return origin.lower().startswith("http://") and "/" not in origin[7:] and self.host_allowed(origin[7:])

    def start(self) -> "DemoServer":
        self._serving_thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                                daemon=True, name="fastcnn-demo-server")
        self._serving_thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (or timeout); True when it has."""
        if self._serving_thread is None:
            return True
        self._serving_thread.join(timeout)
        return not self._serving_thread.is_alive()

    def shutdown(self) -> None:
        """Stop training, close the event streams and the socket. Safe to call twice; not from a request handler."""
        if self._closed:
            return
        self._closed = True
        self.session.close()
        if self._serving_thread is not None:
            super().shutdown()  # waits for serve_forever to return
            self._serving_thread.join()
        self.server_close()

    def __exit__(self, *exc):
        self.shutdown()


class _Handler(BaseHTTPRequestHandler):
    server: DemoServer
    server_version = "fastcnn-demo"
    sys_version = ""
    timeout = 30  # seconds a client may take to send its request

    # routes: path -> {method: handler name}
    _ROUTES = {
        "/api/config": {"GET": "_get_config"},
        "/api/state": {"GET": "_get_state"},
        "/api/views": {"GET": "_get_views"},
        "/api/events": {"GET": "_get_events"},
        "/api/train": {"POST": "_post_train"},
        "/api/stop": {"POST": "_post_stop"},
        "/api/sample": {"POST": "_post_sample"},
        **{path: {"GET": "_get_static"} for path in _STATIC},
    }

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_OPTIONS(self):
        self._dispatch("OPTIONS")

    # ------------------------------------------------------------------------------------------ plumbing

    def _dispatch(self, method: str) -> None:
        try:
            if not self.server.host_allowed(self.headers.get("Host")):
                raise _Refused(403, f"this server answers only requests for {self.server.url.rstrip('/')}; got "
                                    f"Host {self.headers.get('Host')!r}")
            url = urlsplit(self.path)
            route = self._ROUTES.get(url.path)
            if route is None:
                raise _Refused(404, f"no page or API endpoint at {url.path}; the API is under /api/ "
                                    f"(config, state, views, events, train, stop, sample)")
            name = route.get("GET" if method == "HEAD" else method)
            if name is None:
                allowed = ", ".join(route)
                raise _Refused(405, f"{url.path} accepts {allowed}; got {method}", {"Allow": allowed})
            origin = self.headers.get("Origin")
            if method == "POST" and origin is not None and not self.server.origin_allowed(origin):
                raise _Refused(403, f"cross-site request refused: Origin {origin!r} is not "
                                    f"{self.server.url.rstrip('/')}")
            getattr(self, name)(url)
        except _Refused as refusal:
            try:
                self._send_json(refusal.status, {"error": refusal.message}, refusal.headers)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                self.close_connection = True  # refused, and the client has already gone
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away; nothing to answer
        except Exception:  # noqa: BLE001 (any bug: log it here, never show it to the client)
            print(f"fastcnn demo: error while answering {method} {self.path!r}:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            try:
                self._send_json(500, {"error": "internal server error; the details are in the server's log"})
            except OSError:
                pass

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        if not self.server.quiet:
            sys.stderr.write(f"fastcnn demo: {self.address_string()} {format % args}\n")

    def _common_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")

    def _send_bytes(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload, headers: dict | None = None) -> None:
        body = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode("utf-8")
        self._send_bytes(status, body, "application/json; charset=utf-8", headers)

    def _read_json(self):
        """The request's JSON body ({} when empty), refused with 400, 411, 413 or 415 when it cannot be used."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise _Refused(411, "send the request body with a Content-Length header; chunked bodies are refused")
        text = self.headers.get("Content-Length")
        if text is None or text.strip() == "":
            return {}
        if not text.strip().isdigit():
            self.close_connection = True
            raise _Refused(400, f"Content-Length must be a non-negative int; got {text!r}")
        length = int(text)
        if length > MAX_BODY_BYTES:
            self._discard(length)
            raise _Refused(413, f"the request body has {length} bytes, over the limit of {MAX_BODY_BYTES} bytes")
        raw = self.rfile.read(length)
        if len(raw) < length:
            self.close_connection = True
            raise _Refused(400, f"the request body ended after {len(raw)} of the {length} bytes announced")
        if not raw.strip():
            return {}
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise _Refused(415, f"the request body must be JSON with Content-Type application/json; got "
                                f"{content_type or 'no Content-Type'!r}")
        try:
            return json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise _Refused(400, f"the request body is not UTF-8 text: {error}") from None
        except ValueError as error:  # json.JSONDecodeError; also numbers too long to convert
            raise _Refused(400, f"the request body is not valid JSON: {error}") from None
        except RecursionError:  # "[[[[...": 64 KiB of brackets nest deeper than the parser's stack
            raise _Refused(400, "the request body is not valid JSON: nested too deeply") from None

    def _discard(self, length: int) -> None:
        """Read (and drop) a refused body up to 16 MiB, so the client gets to read the answer instead of a reset
        connection; past that, close and let it fail."""
        self.close_connection = True
        if length > 16 * 2**20:
            return
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)

    # ------------------------------------------------------------------------------------------ endpoints

    def _get_static(self, url) -> None:
        name, content_type = _STATIC[url.path]
        body = resources.files(__package__).joinpath("static", name).read_bytes()
        headers = {"Content-Security-Policy": _CSP, "X-Frame-Options": "DENY"} if name.endswith(".html") else {}
        self._send_bytes(200, body, content_type, headers)

    def _get_config(self, url) -> None:
        self._send_json(200, config(self.server.session))

    def _get_state(self, url) -> None:
        self._send_json(200, self.server.session.state())

    def _sample_from_query(self, url):
        values = parse_qs(url.query, keep_blank_values=True).get("sample")
        if not values:
            return None
        try:
            return self.server.session.check_sample(values[-1])
        except ValueError as error:
            raise _Refused(400, str(error)) from None

    def _get_views(self, url) -> None:
        session = self.server.session
        sample = self._sample_from_query(url)
        self._send_json(200, {"sample": session.state(views=False)["sample"] if sample is None else sample,
                              "views": session.views(sample)})

    def _post_train(self, url) -> None:
        body = self._read_json()
        try:
            state = self.server.session.start(body)
        except ValueError as error:
            raise _Refused(400, str(error)) from None
        except Busy as error:
            raise _Refused(409, str(error)) from None
        self._send_json(200, state)

    def _post_stop(self, url) -> None:
        self._read_json()  # any body is ignored, but it must be a proper one
        self._send_json(200, self.server.session.stop())

    def _post_sample(self, url) -> None:
        body = self._read_json()
        value = body.get("index") if isinstance(body, dict) else None
        if not isinstance(body, dict) or "index" not in body:
            raise _Refused(400, 'the request body must be a JSON object such as {"index": 3}')
        try:
            index = self.server.session.set_sample(value)
        except ValueError as error:
            raise _Refused(400, str(error)) from None
        self._send_json(200, {"sample": index, "views": self.server.session.views(index)})

    def _get_events(self, url) -> None:
        """Server-Sent Events: one `data: <state JSON>` per change, at most every EVENT_INTERVAL seconds and at
        least every RUNNING_HEARTBEAT seconds while a run goes on. "views" is sent only when it changed since the
        stream's previous event (a new snapshot or another sample); otherwise the key is absent."""
        server, session = self.server, self.server.session
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self._common_headers()
        self.end_headers()
        if self.command == "HEAD":
            return
        self.wfile.write(b"retry: 1000\n\n")
        self.wfile.flush()
        version, sent_views = -1, None
        while not session.closed:
            state = session.state(views=False)
            if state["version"] == version and state["status"] not in ("running", "stopping"):
                self.wfile.write(b": idle\n\n")  # a comment: keeps the connection checked and open
            else:
                version = state["version"]
                key = session.views_key(state["sample"])
                if key != sent_views:
                    state["views"] = session.views(state["sample"])
                    sent_views = key
                self.wfile.write(b"data: " + json.dumps(state, allow_nan=False, separators=(",", ":")).encode()
                                 + b"\n\n")
            self.wfile.flush()
            # Throttle, then wait for the next change (or a heartbeat).
            time.sleep(EVENT_INTERVAL)
            running = state["status"] in ("running", "stopping")
            session.wait_for_change(version, RUNNING_HEARTBEAT if running else IDLE_HEARTBEAT)

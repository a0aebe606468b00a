"""fastcnn.demo: train the tutorial CNN from a browser and watch its curves, filters and feature maps live.

    fastcnn demo [--host 127.0.0.1] [--port 8000 | 0] [--dataset mnist] [--no-browser]
    python -m fastcnn.demo ...                         (the same)

The server is the standard library's `http.server`; the page (index.html, app.js, style.css) ships inside the
package and works offline: no framework, no CDN, charts drawn by its own Canvas code. Training runs in a background
thread on a fixed subset of 6000 training images (a quick epoch) and validates on the first 1000 test images; the
C++ kernels release the GIL, so the server answers while it trains. The state lives in the server: reloading the
page rejoins the run.

JSON API (every error is `{"error": "<message>"}` with the status shown):

    GET  /api/config   {"hyperparameters": [...], "controls": [...], "datasets": [...], "default_dataset",
                       "train_size", "test_size", "max_body_bytes"}: the table of valid values
                       (`fastcnn.models.HYPERPARAMETERS`: name, type, min, max, choices, default, rule, help), and
                       each page control's label ("Number of filters", ...) and slider range.
    POST /api/train    body {"filters", "filter_size", "pool_size", "conv_layers", "learning_rate", "epochs",
                       "batch_size", "dataset"}, each optional (missing or null: the table's default) -> 200 and
                       the state. 400 with `validate_hyperparameters`' message for a bad value, exactly as the CLI
                       prints it ("filter_size must be an odd int between 3 and 7; got 4"); 409 while a run is
                       running or stopping.
    POST /api/stop     -> 200 and the state: the run stops after its current batch (well within a second at the
                       default batch size), then validates and reports as after a last epoch; a no-op when idle.
    GET  /api/state    {"status": "idle" | "running" | "stopping" | "done" | "error", "message", "run",
                       "dataset", "params", "epoch" (from 1), "epochs", "batch" (done in this epoch), "batches"
                       (per epoch), "loss", "accuracy" (running means over the epoch), "images_per_second",
                       "elapsed", "stopped", "history" (per epoch: epoch, loss, accuracy, val_loss,
                       val_accuracy), "live" (per batch: x in epochs, loss, accuracy), "sample", "sample_count",
                       "snapshot", "version", "views" (as /api/views, or null before the first run), "results"
                       (null until a run ends: class_names, confusion_matrix [true][predicted], test_images,
                       accuracy, predictions: [{index, image, predicted, true, confidence}] for the first 16 test
                       images)}.
    GET  /api/events   Server-Sent Events: `data: <state>` on every change, at most 4 and (while running) at
                       least 2 a second; "views" only when it changed since the stream's previous event.
    POST /api/sample   body {"index": n} -> {"sample": n, "views": ...}: the sample image every page shows
                       (0 <= n < sample_count, else 400).
    GET  /api/views[?sample=n]  {"sample", "views": {"sample", "label", "label_name", "snapshot", "image",
                       "filters", "feature_maps", "pooled_maps", "prediction"} or null}; each picture is
                       {"src": "data:image/png;base64,...", "width", "height", ...}: the first convolution's
                       kernels (grey = 0), its output for the sample image (one tile per filter), and the maps
                       after the first pooling layer.

Other statuses: 404 for an unknown path, 405 for a wrong method, 413 for a body over 64 KiB, 415 for a body that
is not application/json, 403 for a Host header that is not this server's address (DNS rebinding) or a POST from
another Origin.

Views come from a snapshot: a twin of the model that the training callback refreshes (state_dict copied between
two optimizer steps, under a lock) every 0.4 s and at the end of every epoch; the model being trained is never
run by the server's threads.
"""
from __future__ import annotations

import argparse
import os
import sys
import webbrowser

from .server import DemoServer
from .session import DATASETS, Session, check_dataset

__all__ = ["serve", "main", "DemoServer"]


def serve(host: str = "127.0.0.1", port: int = 8000, dataset: str = "mnist", open_browser: bool = False, *,
          train_size: int = 6000, test_size: int = 1000, quiet: bool = True) -> DemoServer:
    """Start the demo server in a background thread and return it; `server.url` is its address (with the real port
    when port=0 asked for any free one), `server.shutdown()` stops it.

    Args:
        host: the address to listen on. Default: "127.0.0.1" (this machine only).
        port: the port; 0 picks a free one. Default: 8000.
        dataset: the dataset the page starts with: "mnist", "fashion-mnist" or "digits". Default: "mnist".
        open_browser: open the page with the `webbrowser` module. Default: False.
        train_size: training images per epoch (a fixed, seeded subset). Default: 6000.
        test_size: test images used for validation, the confusion matrix and the sample images. Default: 1000.
        quiet: do not log every request on stderr. Default: True.

    Raises:
        ValueError: an unknown dataset or a bad size or port.
        OSError: the address cannot be used (the port is taken, the host is not this machine's).

    Example:
        >>> server = serve(port=0)
        >>> server.url
        'http://127.0.0.1:40123/'
        >>> server.shutdown()
    """
    fn = "serve"
    try:
        check_dataset(dataset)
    except ValueError as error:
        raise ValueError(f"{fn}: {error}") from None
    for name, value in (("train_size", train_size), ("test_size", test_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{fn}: {name} must be a positive int; got {value!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{fn}: port must be an int between 0 and 65535; got {port!r}")
    session = Session(train_size=train_size, test_size=test_size, default_dataset=dataset)
    server = DemoServer(str(host), port, session, quiet=quiet).start()
    if open_browser:
        webbrowser.open(server.url)
    return server


def has_display() -> bool:
    """Whether a browser window can open here: macOS and Windows always, elsewhere with DISPLAY or WAYLAND_DISPLAY."""
    if sys.platform == "darwin" or sys.platform.startswith("win"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def build_parser(prog: str = "fastcnn demo") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Train a small CNN from your browser and watch its filters and feature maps learn.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default: 8000)")
    parser.add_argument("--dataset", default="mnist", choices=list(DATASETS),
                        help="dataset the page starts with (default: mnist)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser window")
    return parser


def main(argv=None, prog: str = "fastcnn demo") -> int:
    """`fastcnn demo`: serve the demo until Ctrl-C. The first line printed is `fastcnn demo: <url>`.

    Returns the exit status: 0 after Ctrl-C, 1 when the server cannot start (the reason on stderr).
    """
    args = build_parser(prog).parse_args(argv)
    try:
        server = serve(args.host, args.port, args.dataset, open_browser=False)
    except (OSError, ValueError) as error:
        print(f"fastcnn demo: cannot listen on {args.host}:{args.port}: {error}"
              + ("; choose another --port (0 picks a free one)" if isinstance(error, OSError) else ""),
              file=sys.stderr)
        return 1
    try:  # from here on Ctrl-C, whenever it comes, stops the server cleanly
        print(f"fastcnn demo: {server.url}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        if not args.no_browser and has_display():
            webbrowser.open(server.url)
        while not server.wait(0.5):
            pass
    except KeyboardInterrupt:
        print("fastcnn demo: stopped", flush=True)
    finally:
        server.shutdown()
    return 0

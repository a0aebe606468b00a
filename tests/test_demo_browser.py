"""The browser demo end to end, in real headless Chromium driven by Playwright: set every control, train, watch the
curves and pictures appear and change, pick a sample image, stop, see the results, reload, and see an API error.

Needs Debian's chromium (/usr/bin/chromium) and `pip install playwright` (its own browser downloads are never
used); without them, or without MNIST, the test skips with the reason. The page runs under its real Content
Security Policy: the test reads the page with page.evaluate (which the CSP does not govern) and polls from Python,
because Playwright's wait_for_function would need the page to allow eval.
"""
import os
import shutil
import time

import pytest

from fastcnn import datasets
from fastcnn.demo import serve
from fastcnn.demo import session as demo_session

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TRAIN_SIZE, TEST_SIZE = 6000, 200
SCREENSHOT_COPY = "/tmp/fastcnn-demo.png"  # for people looking at the page after a run

# Counts the pixels of a chart close to a colour (the training line is #1f77b4, validation #d95f02).
COLOURED_PIXELS = """([id, r, g, b]) => {
  const canvas = document.getElementById(id);
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let count = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 60) count += 1;
  }
  return count;
}"""

# An <img>'s decoded size and the spread of its pixels, drawn onto a scratch canvas.
IMAGE_PIXELS = """(id) => {
  const image = document.getElementById(id);
  if (image.hidden || !image.complete || image.naturalWidth === 0) return null;
  const canvas = document.createElement('canvas');
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(image, 0, 0);
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let low = 255, high = 0;
  for (let i = 0; i < data.length; i += 4) { low = Math.min(low, data[i]); high = Math.max(high, data[i]); }
  return { width: image.naturalWidth, height: image.naturalHeight, low, high, src: image.src };
}"""

STATUS = """() => { const s = document.getElementById('status');
  return { state: s.dataset.state, epoch: Number(s.dataset.epoch), batch: Number(s.dataset.batch),
           text: s.textContent }; }"""


def poll(check, timeout, what, interval=0.05):
    """check()'s first truthy value, or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is missing: pip install playwright")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def demo():
    try:
        demo_session.load_subset("mnist", TRAIN_SIZE, TEST_SIZE, download=False)
    except datasets.DatasetNotFoundError as error:
        pytest.skip(f"MNIST is not installed here: {error}")
    server = serve(port=0, train_size=TRAIN_SIZE, test_size=TEST_SIZE)
    yield server
    server.shutdown()


def test_the_page_trains_a_cnn_and_shows_it_learning(browser, demo, tmp_path):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1200, "height": 1800})
    page = context.new_page()
    problems = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(demo.url)
    status = lambda: page.evaluate(STATUS)  # noqa: E731

    def shown(control_id):
        return page.locator(f'output[for="{control_id}"]')

    # Every control: found by its visible label, and its displayed value follows it.
    filters = page.get_by_label("Number of filters", exact=True)
    expect(filters).to_be_visible()
    expect(shown("control-filters")).to_have_text("32")
    filters.focus()
    page.keyboard.press("Home")
    expect(shown("control-filters")).to_have_text("1")
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    expect(shown("control-filters")).to_have_text("6")
    assert filters.get_attribute("max") == "32"

    page.get_by_label("Filter size", exact=True).select_option("5")
    expect(shown("control-filter_size")).to_have_text("5")

    page.get_by_label("Pooling size", exact=True).focus()
    page.keyboard.press("End")
    expect(shown("control-pool_size")).to_have_text("4")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    expect(shown("control-pool_size")).to_have_text("2")

    layers = page.get_by_label("Convolution layers", exact=True)
    layers.select_option("2")
    expect(shown("control-conv_layers")).to_have_text("2")
    layers.select_option("1")
    expect(shown("control-conv_layers")).to_have_text("1")

    expect(shown("control-learning_rate")).to_have_text("0.001")
    page.get_by_label("Learning rate", exact=True).focus()
    page.keyboard.press("Home")
    expect(shown("control-learning_rate")).to_have_text("0.0001")
    page.keyboard.press("End")
    expect(shown("control-learning_rate")).to_have_text("1")
    for _ in range(8):  # from 1: 0.5 0.2 0.1 0.05 0.02 0.01 0.005 0.002
        page.keyboard.press("ArrowLeft")
    expect(shown("control-learning_rate")).to_have_text("0.002")

    page.get_by_label("Epochs", exact=True).focus()
    page.keyboard.press("End")
    expect(shown("control-epochs")).to_have_text("20")

    page.get_by_label("Batch size", exact=True).fill("8")  # small batches: a slower run, stopped before it ends
    expect(shown("control-batch_size")).to_have_text("8")

    dataset = page.get_by_label("Dataset", exact=True)
    dataset.select_option("fashion-mnist")
    expect(dataset).to_have_value("fashion-mnist")
    dataset.select_option("mnist")
    expect(dataset).to_have_value("mnist")

    # Train: the status advances, and the curves and pictures are drawn.
    page.get_by_role("button", name="Train", exact=True).click()
    first = poll(lambda: (s := status())["state"] == "running" and s["batch"] > 0 and s, 30, "the first batches")
    assert first["text"].startswith("Training: Epoch 1 of 20 · batch ")
    expect(page.get_by_role("button", name="Train", exact=True)).to_be_disabled()
    poll(lambda: page.evaluate(COLOURED_PIXELS, ["loss-chart", 31, 119, 180]) > 30, 15, "the training loss curve")
    poll(lambda: page.evaluate(COLOURED_PIXELS, ["accuracy-chart", 31, 119, 180]) > 30, 15,
         "the training accuracy curve")
    pictures = {}
    for image_id in ("filters", "feature-maps", "pooled-maps", "sample-image"):
        pictures[image_id] = poll(lambda i=image_id: page.evaluate(IMAGE_PIXELS, i), 15, f"the {image_id} picture")
        assert pictures[image_id]["high"] > pictures[image_id]["low"], f"{image_id} is blank"
    assert (pictures["filters"]["width"], pictures["filters"]["height"]) == (3 * 5 + 2, 2 * 5 + 1)  # 6 tiles
    assert pictures["sample-image"]["width"] == 28
    assert pictures["pooled-maps"]["width"] < pictures["feature-maps"]["width"]  # 14x14 tiles next to 28x28

    # ...and they change as the network learns; after the first epoch the validation points appear.
    for image_id in ("filters", "feature-maps", "pooled-maps"):
        poll(lambda i=image_id: (p := page.evaluate(IMAGE_PIXELS, i)) and p["src"] != pictures[i]["src"], 15,
             f"the {image_id} picture to change")
    poll(lambda: status()["epoch"] >= 2, 40, "the second epoch")
    poll(lambda: page.evaluate(COLOURED_PIXELS, ["accuracy-chart", 217, 95, 2]) > 30, 10, "the validation curve")
    later = status()
    assert (later["epoch"], later["batch"]) != (first["epoch"], first["batch"])

    # Another sample image.
    page.get_by_role("button", name="Next sample image").click()
    expect(page.get_by_role("spinbutton", name="Sample image", exact=True)).to_have_value("1")
    poll(lambda: page.evaluate(IMAGE_PIXELS, "sample-image")["src"] != pictures["sample-image"]["src"], 10,
         "the next sample image")
    expect(page.locator("#sample-label")).to_contain_text("Test image 1:")

    # Stop: the run ends, the status stays put, and the results appear.
    page.get_by_role("button", name="Stop", exact=True).click()
    stopped = poll(lambda: (s := status())["state"] == "done" and s, 3, "the run to stop")
    assert stopped["text"].startswith("Stopped: stopped during epoch ")
    time.sleep(0.8)
    assert status() == stopped
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_disabled()
    expect(page.locator("#confusion tbody tr")).to_have_count(10)
    expect(page.locator("#predictions li")).to_have_count(16)
    assert problems == []

    screenshot = tmp_path / "fastcnn-demo.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    try:
        shutil.copyfile(screenshot, SCREENSHOT_COPY)
    except OSError:
        pass  # the copy is a convenience

    # A reload rejoins the session: the same status, settings and results.
    page.reload()
    poll(lambda: status()["state"] == "done", 10, "the state after a reload")
    assert status()["text"] == stopped["text"]
    expect(shown("control-filters")).to_have_text("6")
    expect(shown("control-learning_rate")).to_have_text("0.002")
    expect(page.locator("#predictions li")).to_have_count(16)

    # An error from the API is shown on the page, in the table's words.
    page.get_by_label("Batch size", exact=True).fill("5000")
    page.get_by_role("button", name="Train", exact=True).click()
    message = page.get_by_role("alert")
    expect(message).to_be_visible()
    expect(message).to_have_text("batch_size must be an int between 1 and 4096; got 5000")
    assert status()["state"] == "done"
    # Chromium logs the refused request itself; nothing else went wrong.
    assert all("status of 400" in problem for problem in problems), problems
    context.close()

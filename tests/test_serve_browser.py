"""The browser page of `keras-maskrcnn serve` (keras_maskrcnn/serving/static/index.html) in a
real headless Chromium, driven by selenium: it shows what the :detect API answers.

Needs Debian's `chromium` and `chromium-driver` (`make test` installs them when missing). The
last screenshot is kept at SCREENSHOT (outputs/ is ignored by git).
"""

import base64
import io
import json
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serve_process import MODEL_NAME, running_server

pytestmark = pytest.mark.slow

SCREENSHOT = Path(__file__).resolve().parents[1] / "outputs" / "tests" / "serve_browser.png"
# What the page asks the server for (index.html's REQUEST_SCORE_THRESHOLD and MAX_DETECTIONS),
# and the slider's starting score, the API's default.
PAGE_REQUEST = {"score_threshold": 0.05, "max_detections": 100, "mask_format": "png"}
DEFAULT_SCORE = 0.5
ANSWER_SECONDS = 60
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _detect(base_url, image_bytes, **query):
    """The :detect API's answer for a PNG file's bytes (query: its parameters)."""
    url = f"{base_url}/v1/models/{MODEL_NAME}:detect?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, data=image_bytes, headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(request, timeout=ANSWER_SECONDS) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def server(tiny_saved_model):
    """`keras-maskrcnn serve` on the random-init tiny model (which detects something in any
    image), on a free port of 127.0.0.1 → its base URL; stopped after."""
    with running_server(tiny_saved_model) as running:
        yield f"http://127.0.0.1:{running.port}"


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through chromedriver."""
    from selenium import webdriver

    assert shutil.which("chromium") and shutil.which("chromedriver"), (
        "the browser test needs Debian's chromium and chromium-driver: `make test` installs them "
        "(apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: Chromium's sandbox cannot start as root, which is how containers run tests.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1000,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _state(browser):
    return browser.find_element("tag name", "body").get_attribute("data-state")


def _wait_for_answer(browser):
    """Wait until the page has drawn an answer or shown an error → the state it reached."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, ANSWER_SECONDS).until(lambda b: _state(b) in ("drawn", "error"))
    return _state(browser)


def _set(browser, element_id, **properties):
    """Set properties of an input (value, checked) as a user would: then fire its input event."""
    browser.execute_script(
        "const element = document.getElementById(arguments[0]);"
        "Object.assign(element, arguments[1]);"
        "element.dispatchEvent(new Event('input'));", element_id, properties)


def _count(browser):
    return int(browser.find_element("id", "count").text)


def _canvas(browser):
    """The page's canvas as an RGB uint8 array."""
    data_url = browser.execute_script("return document.getElementById('canvas').toDataURL('image/png')")
    with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))) as canvas:
        return np.asarray(canvas.convert("RGB"))


def _mask(detection):
    with Image.open(io.BytesIO(base64.b64decode(detection["mask"]))) as mask:
        return np.asarray(mask.convert("L")) > 0


def _splitting_threshold(scores):
    """A slider value (a multiple of 0.01 above the page's request threshold) that leaves as
    close to half of `scores` above it as one can."""
    grid = np.round(np.arange(PAGE_REQUEST["score_threshold"] + 0.01, 1.0, 0.01), 2)
    kept = np.array([(np.asarray(scores) >= t).sum() for t in grid])
    return float(grid[np.argmin(np.abs(kept - len(scores) / 2))])


def test_the_page_draws_what_the_api_answers(server, browser, shapes, tmp_path):
    image_path = sorted((shapes / "val" / "images").glob("*.png"))[0]
    image_bytes = image_path.read_bytes()
    everything = _detect(server, image_bytes, **PAGE_REQUEST)["detections"]
    assert everything, "the model detects nothing in the image: this test would check nothing"

    browser.get(f"{server}/")
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, 30).until(
        lambda b: "AVAILABLE" in b.find_element("id", "status").text)
    assert MODEL_NAME in browser.find_element("id", "model-label").text
    browser.find_element("id", "file").send_keys(str(image_path))
    assert _wait_for_answer(browser) == "drawn", browser.find_element("id", "error").text
    assert "round trip" in browser.find_element("id", "latency").text

    # The slider starts at the API's default score: the page shows what a plain :detect finds.
    default_answer = _detect(server, image_bytes, mask_format="none")["detections"]
    assert _count(browser) == len(default_answer)
    # The slider filters on the page as the server's score_threshold filters.
    threshold = _splitting_threshold([d["score"] for d in everything])
    at_threshold = _detect(server, image_bytes, **dict(PAGE_REQUEST, score_threshold=threshold))
    assert 0 < len(at_threshold["detections"]) < len(everything) or len(everything) == 1
    _set(browser, "score", value=str(threshold))
    assert _count(browser) == len(at_threshold["detections"])
    assert len(browser.find_elements("css selector", "#detections tbody tr")) == _count(browser)
    _set(browser, "score", value=str(PAGE_REQUEST["score_threshold"]))
    assert _count(browser) == len(everything)

    # With masks alone drawn, a pixel differs from the image exactly where an answered mask is
    # (the canvas enlarges the image without smoothing: sample each pixel's centre).
    _set(browser, "show-boxes", checked=False)
    _set(browser, "show-labels", checked=False)
    canvas = _canvas(browser)
    with Image.open(image_path) as opened:
        image = np.asarray(opened.convert("RGB"))
    height, width = image.shape[:2]
    rows = ((np.arange(height) + 0.5) * canvas.shape[0] / height).astype(int)
    columns = ((np.arange(width) + 0.5) * canvas.shape[1] / width).astype(int)
    changed = np.any(canvas[rows][:, columns] != image, axis=-1)
    masks = np.any([_mask(d) for d in everything], axis=0)
    assert masks.any()
    assert np.mean(changed == masks) >= 0.99, (changed.sum(), masks.sum())
    _set(browser, "show-boxes", checked=True)
    _set(browser, "show-labels", checked=True)
    _set(browser, "score", value=str(threshold))
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))

    # An image dropped on the page (a portrait one, another size) replaces the first.
    portrait = np.concatenate([image, image[::-1]], axis=0)
    encoded = io.BytesIO()
    Image.fromarray(portrait).save(encoded, "PNG")
    dropped = _detect(server, encoded.getvalue(), **dict(PAGE_REQUEST, score_threshold=threshold))
    browser.execute_script("document.body.dataset.state = 'idle';")
    browser.execute_script(
        "const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));"
        "const transfer = new DataTransfer();"
        "transfer.items.add(new File([bytes], 'portrait.png', {type: 'image/png'}));"
        "document.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true}));",
        base64.b64encode(encoded.getvalue()).decode())
    assert _wait_for_answer(browser) == "drawn", browser.find_element("id", "error").text
    assert _count(browser) == len(dropped["detections"])
    assert dropped["image"] == {"height": 2 * height, "width": width}
    drawn_height, drawn_width = _canvas(browser).shape[:2]
    assert abs(drawn_height - 2 * drawn_width) <= 1

    # Text sent as an image: the page shows the server's 400 and its message.
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    browser.execute_script("document.body.dataset.state = 'idle';")
    browser.find_element("id", "file").send_keys(str(text_file))
    assert _wait_for_answer(browser) == "error"
    assert browser.find_element("id", "error").text.startswith("400: ")

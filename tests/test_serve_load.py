"""`keras-maskrcnn serve` under a burst and a SIGTERM: a small queue answers only 200s and
503s, and a stopped server answers the request in flight and exits 0 (one server for the
module; the SIGTERM test, last, stops it)."""

import re
import signal
import threading
import time

import pytest

import serve_images
from serve_process import MODEL_NAME, running_server

pytestmark = pytest.mark.slow  # starts a server process: see pytest.ini

MAX_QUEUE = 2
MAX_BATCH_SIZE = 2
BURST = 16
SHUTDOWN_TIMEOUT_S = 60
DETECT = f"/v1/models/{MODEL_NAME}:detect?score_threshold=0.01"


@pytest.fixture(scope="module")
def server(tiny_saved_model):
    with running_server(tiny_saved_model, "--max-queue", MAX_QUEUE, "--max-batch-size",
                        MAX_BATCH_SIZE, "--shutdown-timeout", SHUTDOWN_TIMEOUT_S) as running:
        yield running


@pytest.fixture(scope="module")
def image_file():
    return serve_images.encode(serve_images.picture(96, 128, 7), "PNG")


def _burst(server, data, count):
    """`count` :detect requests released together → their (status, headers, answer)."""
    start = threading.Barrier(count)
    answers = [None] * count

    def send(index):
        start.wait()
        answers[index] = server.request("POST", DETECT, data, {"Content-Type": "image/png"})
    threads = [threading.Thread(target=send, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_a_burst_against_a_small_queue_gets_only_200s_and_503s(server, image_file):
    answers = _burst(server, image_file, BURST)
    statuses = [status for status, _, _ in answers]
    assert set(statuses) == {200, 503}, statuses
    for status, headers, answer in answers:
        if status == 503:
            assert headers["retry-after"] == "1"
            assert "queue" in answer["error"] and "--max-queue 2" in answer["error"]
        else:
            assert answer["detections"]
    status, _, answer = server.request("POST", DETECT, image_file)
    assert status == 200, answer
    status, _, metrics = server.request("GET", "/metrics")
    text = metrics.decode()
    batches = float(re.search(r"^keras_maskrcnn_batch_size_count (\S+)$", text, re.M).group(1))
    single = float(re.search(r'^keras_maskrcnn_batch_size_bucket\{le="1.0"\} (\S+)$', text,
                             re.M).group(1))
    served = statuses.count(200) + 2  # with the warm-up-free request above and this one's
    assert batches < served - 1, "no two requests of the burst shared a model call"
    assert single < batches


def test_sigterm_answers_the_request_in_flight_and_exits_0(server):
    # A large image takes seconds to decode, run and encode: it is in flight when the signal
    # comes.
    large = serve_images.smooth_jpeg(2000, 3000)
    answer = {}

    def send():
        answer["value"] = server.request("POST", DETECT + "&mask_format=png", large)
    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.5)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    sender.join(SHUTDOWN_TIMEOUT_S)
    status, _, detections = answer["value"]
    assert status == 200, detections
    assert detections["image"] == {"height": 2000, "width": 3000} and detections["detections"]
    assert server.process.wait(SHUTDOWN_TIMEOUT_S) == 0, server.log()
    assert time.monotonic() - signalled < SHUTDOWN_TIMEOUT_S
    with pytest.raises(OSError):
        server.request("GET", f"/v1/models/{MODEL_NAME}", timeout=5)

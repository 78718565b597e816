"""`keras-maskrcnn serve` under a burst and a SIGTERM: a small queue answers only 200s and
503s, and a stopped server answers the request in flight and exits 0 (one server for the
module; the SIGTERM test, last, stops it)."""

import http.client
import json
import re
import signal
import socket
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
    """A server with a small queue and two model workers of one TensorFlow thread each, so
    that the burst and the shutdown run two model calls at once."""
    with running_server(tiny_saved_model, "--max-queue", MAX_QUEUE, "--max-batch-size",
                        MAX_BATCH_SIZE, "--shutdown-timeout", SHUTDOWN_TIMEOUT_S,
                        "--model-workers", 2, "--intra-op-threads", 1) as running:
        assert "model workers: 2, TensorFlow threads per op: 1" in running.log()
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


def test_sigterm_answers_the_request_in_flight_and_exits_0(server, image_file):
    # The request is in flight for sure: half its body is sent before the signal, the rest
    # after it.
    head = (f"POST {DETECT} HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(image_file)}\r\n\r\n").encode()
    half = len(image_file) // 2
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as connection:
        connection.sendall(head + image_file[:half])
        time.sleep(0.5)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        with pytest.raises(OSError):  # no longer accepting
            server.request("GET", f"/v1/models/{MODEL_NAME}", timeout=5)
        connection.sendall(image_file[half:])
        response = http.client.HTTPResponse(connection)
        response.begin()
        status, answer = response.status, json.loads(response.read())
    assert status == 200, answer
    assert answer["image"] == {"height": 96, "width": 128} and answer["detections"]
    assert server.process.wait(SHUTDOWN_TIMEOUT_S) == 0, server.log()
    assert time.monotonic() - signalled < SHUTDOWN_TIMEOUT_S

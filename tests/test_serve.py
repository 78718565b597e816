"""`keras-maskrcnn serve` in a subprocess: TF Serving's REST API, `:detect` against `predict`,
hostile requests, the API key and /metrics (one server for the module)."""

import base64
import concurrent.futures
import http.client
import io
import json
import re
import socket

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pycocotools import mask as mask_utils

import serve_images
from reference_polygons import even_odd_fill
from keras_maskrcnn import commands
from keras_maskrcnn.data.images import decode_image
from serve_process import MODEL_NAME, running_server

pytestmark = pytest.mark.slow  # starts a server process: see pytest.ini

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_BODY_MB = 1
TIMEOUT_S = 5  # what a request may take: its body's upload included
THRESHOLD = 0.01  # the random model's scores are low
MODEL = f"/v1/models/{MODEL_NAME}"


@pytest.fixture(scope="module")
def server(tiny_saved_model):
    with running_server(tiny_saved_model, "--api-key", API_KEY, "--max-body-mb", MAX_BODY_MB,
                        "--timeout-s", TIMEOUT_S) as running:
        yield running


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """A landscape PNG, a portrait JPEG and an EXIF-rotated JPEG (stored 60 × 100, shown
    100 × 60)."""
    root = tmp_path_factory.mktemp("pictures")
    files = {"landscape.png": serve_images.encode(serve_images.picture(80, 120, 1), "PNG"),
             "portrait.jpg": serve_images.encode(serve_images.picture(130, 70, 2), "JPEG",
                                                 quality=95),
             "rotated.jpg": serve_images.exif_rotated_jpeg(serve_images.picture(60, 100, 3))}
    paths = []
    for name, data in files.items():
        (root / name).write_bytes(data)
        paths.append(root / name)
    return paths


def _detect(server, data, query=f"score_threshold={THRESHOLD}", headers=AUTH):
    return server.request("POST", f"{MODEL}:detect?{query}", data,
                          {"Content-Type": "image/jpeg", **headers})


def _good_request(server, pictures):
    status, _, answer = _detect(server, pictures[0].read_bytes())
    assert status == 200, answer
    assert answer["detections"]


def test_status_needs_no_key_and_metadata_lists_the_signatures(server):
    assert "precision: float32\n" in server.log()  # what serve says it runs
    status, headers, answer = server.request("GET", MODEL)
    assert status == 200 and headers["content-type"] == "application/json"
    assert answer == {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {
        "error_code": "OK", "error_message": ""}}]}
    assert server.request("GET", f"{MODEL}/versions/1")[0] == 200
    status, _, answer = server.request("GET", f"{MODEL}/metadata")
    assert status == 401 and "API key" in answer["error"]
    status, _, answer = server.request("GET", f"{MODEL}/metadata", headers=AUTH)
    assert status == 200
    assert answer["model_spec"] == {"name": MODEL_NAME, "signature_name": "", "version": "1"}
    signatures = answer["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "serve_images", "serve_padded"} <= set(signatures)
    images = signatures["serving_default"]["inputs"]["images"]
    assert images["dtype"] == "DT_STRING" and images["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_predict_with_b64_instances_equals_the_signature_called_directly(server, tiny_saved_model,
                                                                         pictures):
    encoded = [path.read_bytes() for path in pictures[:2]]
    loaded = tf.saved_model.load(str(tiny_saved_model / "1"))
    direct = loaded.signatures["serving_default"](images=tf.constant(encoded))
    status, _, answer = server.request("POST", f"{MODEL}:predict", {"instances": [
        {"b64": base64.b64encode(data).decode()} for data in encoded]}, AUTH)
    assert status == 200, answer
    assert len(answer["predictions"]) == 2
    for index, prediction in enumerate(answer["predictions"]):
        assert set(prediction) == set(direct)
        for name, value in direct.items():
            np.testing.assert_array_equal(
                np.asarray(prediction[name], value.dtype.as_numpy_dtype), value.numpy()[index])
    # The columnar form on the uint8 signature: "inputs" in, "outputs" out.
    image = serve_images.picture(40, 56, 4)[None]
    direct = loaded.signatures["serve_images"](images=tf.constant(image))
    status, _, answer = server.request("POST", f"{MODEL}/versions/1:predict", {
        "signature_name": "serve_images", "inputs": {"images": image.tolist()}}, AUTH)
    assert status == 200, answer
    for name, value in direct.items():
        np.testing.assert_array_equal(np.asarray(answer["outputs"][name], value.dtype.as_numpy_dtype),
                                      value.numpy())


def _box_of(result):
    x, y, width, height = result["bbox"]
    return np.array([x, y, x + width, y + height])


def _mask_iou(rle, other):
    """IoU of two COCO RLEs; 1 for two empty masks."""
    if mask_utils.area(rle) == mask_utils.area(other) == 0:
        return 1.0
    return mask_utils.iou([rle], [other], [0])[0, 0]


def test_detect_matches_predict_on_landscape_portrait_and_exif_rotated_images(
        server, tiny_saved_model, pictures, tmp_path):
    run = commands.predict(tiny_saved_model / "1", pictures, tmp_path, score_threshold=THRESHOLD)
    # Sent at once, so that the server may batch images of different sizes together.
    with concurrent.futures.ThreadPoolExecutor(len(pictures)) as pool:
        answers = list(pool.map(lambda path: _detect(server, path.read_bytes()), pictures))
    for path, (status, _, answer) in zip(pictures, answers):
        assert status == 200, answer
        height, width = decode_image(str(path)).shape[:2]
        assert answer["image"] == {"height": height, "width": width}
        expected = [result for result in run.results if result["file_name"] == str(path)]
        found = answer["detections"]
        assert len(found) == len(expected) > 0
        for detection in found:
            # Class-wise NMS may keep one box for both classes, with each class's own mask.
            candidates = [result for result in expected
                          if result["category_id"] == detection["category_id"]]
            distances = [np.abs(_box_of(result) - detection["box"]).max() for result in candidates]
            match = candidates[int(np.argmin(distances))]
            assert min(distances) <= 0.5
            assert detection["label"] == str(match["category_id"])  # the model has no names
            assert detection["score"] == pytest.approx(match["score"], abs=1e-4)
            assert _mask_iou(detection["mask"], match["segmentation"]) >= 0.98
    assert answers[2][2]["image"] == {"height": 100, "width": 60}  # turned by its EXIF


def test_every_mask_format_encodes_the_same_pasted_masks(server, pictures):
    data = pictures[1].read_bytes()
    answers = {}
    for mask_format in ("rle", "png", "polygon", "box", "none"):
        status, _, answer = _detect(server, data, f"score_threshold={THRESHOLD}&max_detections=5"
                                    f"&mask_format={mask_format}")
        assert status == 200, answer
        assert len(answer["detections"]) == 5
        answers[mask_format] = answer["detections"]
    height, width = 130, 70
    for index, detection in enumerate(answers["rle"]):
        mask = mask_utils.decode(detection["mask"]).astype(bool)
        png = Image.open(io.BytesIO(base64.b64decode(answers["png"][index]["mask"])))
        assert png.size == (width, height)
        np.testing.assert_array_equal(np.asarray(png.convert("L")) == 255, mask)
        np.testing.assert_array_equal(
            even_odd_fill(answers["polygon"][index]["mask"], height, width), mask)
        assert np.asarray(answers["box"][index]["mask"]).shape == (28, 28)
        assert "mask" not in answers["none"][index]
        assert answers["none"][index]["box"] == detection["box"]


def _raw_request(server, head, body_parts):
    """Send a request's head and body parts on a socket, then read the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as connection:
        connection.sendall(head.encode())
        for part in body_parts:
            connection.sendall(part)
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, dict(response.getheaders()), json.loads(response.read())


MB = 1 << 20


def _oversized_with_length(server):
    # Content-Length says 50 MB; only 64 kB follow: the answer must not wait for the rest.
    head = (f"POST {MODEL}:detect HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Length: {50 * MB}\r\n\r\n")
    return _raw_request(server, head, [b"\xff" * 65536])


def _oversized_chunked(server):
    head = (f"POST {MODEL}:detect HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
            f"Authorization: Bearer {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"\xff" * 65536
    parts = [b"%x\r\n" % len(chunk) + chunk + b"\r\n"] * (MAX_BODY_MB * 16 + 1)
    return _raw_request(server, head, parts)


def _slow_upload(server):
    # A client that sends 10 of the 1000 bytes it announced, then nothing (slowloris).
    head = (f"POST {MODEL}:detect HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Length: 1000\r\n\r\n")
    return _raw_request(server, head, [b"\xff" * 10])


def _b64_instance(data):
    return {"instances": [{"b64": base64.b64encode(data).decode()}]}


HOSTILE = {
    "body over --max-body-mb, by Content-Length": (_oversized_with_length, 413, "--max-body-mb"),
    "body over --max-body-mb, chunked": (_oversized_chunked, 413, "--max-body-mb"),
    "empty body": (lambda server: _detect(server, b""), 400, "empty"),
    "text sent as an image": (lambda server: _detect(server, b"hello, I am text" * 20), 400,
                              "cannot read image"),
    "truncated JPEG": (lambda server: _detect(server, serve_images.encode(
        serve_images.picture(120, 160, 5), "JPEG")[:1500]), 400, "truncated"),
    "PNG header claiming 60000 x 60000": (
        lambda server: _detect(server, serve_images.png_claiming(60000, 60000)), 400,
        "over the limit of 89,478,485"),
    "predict b64 PNG claiming 60000 x 60000": (
        lambda server: server.request("POST", f"{MODEL}:predict", _b64_instance(
            serve_images.png_claiming(60000, 60000)), AUTH), 400,
        "over the limit of 89,478,485"),
    "unknown model": (lambda server: server.request(
        "POST", "/v1/models/nope:predict", {"instances": [1]}, AUTH), 404,
        "Servable not found for request: Latest(nope)"),
    "unknown version": (lambda server: server.request("POST", f"{MODEL}/versions/7:detect", b"x",
                                                      AUTH), 404,
                        f"Servable not found for request: Specific({MODEL_NAME}, 7)"),
    "unknown model's status": (lambda server: server.request("GET", "/v1/models/nope"), 404,
                               "Could not find any versions of model nope"),
    "unknown signature": (lambda server: server.request(
        "POST", f"{MODEL}:predict", {"signature_name": "nope", "instances": [1]}, AUTH), 400,
        'Serving signature name: "nope" not found in signature def'),
    "malformed JSON": (lambda server: server.request(
        "POST", f"{MODEL}:predict", b"{instances: ", AUTH), 400, "JSON Parse error"),
    "instances and inputs": (lambda server: server.request(
        "POST", f"{MODEL}:predict", {"instances": [1], "inputs": [1]}, AUTH), 400,
        "expecting only one of 'inputs' or 'instances'"),
    "unknown mask format": (lambda server: _detect(server, b"x", "mask_format=gif"), 400,
                            "mask_format must be one of"),
    "no API key": (lambda server: _detect(server, b"x", headers={}), 401, "API key"),
    "wrong API key": (lambda server: _detect(server, b"x", headers={
        "Authorization": "Bearer guess"}), 401, "API key"),
    "over --timeout-s": (_slow_upload, 504, "Deadline Exceeded"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_request_gets_its_json_error_and_the_next_request_is_served(server, pictures,
                                                                             case):
    send, expected_status, message = HOSTILE[case]
    status, headers, answer = send(server)
    assert status == expected_status, answer
    assert headers.get("content-type", headers.get("Content-Type")) == "application/json"
    assert set(answer) == {"error"} and message in answer["error"], answer
    _good_request(server, pictures)


def _metric(text, name, **labels):
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = "^" + re.escape(f"{name}{{{wanted}}}" if labels else name) + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return None if found is None else float(found.group(1))


def test_metrics_count_requests_by_endpoint_and_code(server, pictures):
    _good_request(server, pictures)
    _detect(server, b"not an image")
    assert server.request("GET", "/metrics")[0] == 401
    status, headers, text = server.request("GET", "/metrics", headers=AUTH)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = text.decode()
    assert _metric(text, "keras_maskrcnn_requests_total", endpoint="detect", code=200) >= 1
    assert _metric(text, "keras_maskrcnn_requests_total", endpoint="detect", code=400) >= 1
    assert _metric(text, "keras_maskrcnn_request_seconds_count", endpoint="detect") >= 2
    assert _metric(text, "keras_maskrcnn_queue_depth") == 0
    assert _metric(text, "keras_maskrcnn_batch_size_count") >= 1
    assert "# TYPE keras_maskrcnn_request_seconds histogram" in text

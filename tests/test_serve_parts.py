"""The serving package's parts without a server: mask encodings, TF Serving's JSON, the
micro-batcher, the metrics text and finding the version to serve."""

import base64
import io
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pycocotools import mask as mask_utils

from reference_polygons import even_odd_fill
from keras_maskrcnn.serving import masks, tf_serving_api as api
from keras_maskrcnn.serving.batching import MicroBatcher, QueueFull
from keras_maskrcnn.serving.metrics import Metrics
from keras_maskrcnn.serving.model import find_version, graph_precision, read_meta_graph


def test_polygons_filled_even_odd_give_back_random_masks_holes_and_diagonal_touches():
    rng = np.random.default_rng(0)
    cases = [rng.random((rng.integers(1, 25), rng.integers(1, 25))) < rng.random()
             for _ in range(100)]
    ring = np.ones((7, 7), bool)
    ring[2:5, 2:5] = False  # a hole
    diagonal = np.array([[1, 0], [0, 1]], bool)  # two pixels touching at a corner
    for mask in cases + [ring, diagonal]:
        np.testing.assert_array_equal(even_odd_fill(masks.encode_polygon(mask), *mask.shape), mask)
    assert masks.encode_polygon(np.zeros((4, 5), bool)) == []
    # A rectangle is four corners, the outer ring clockwise on the screen (y down).
    rectangle = np.zeros((6, 8), bool)
    rectangle[1:4, 2:7] = True
    assert masks.encode_polygon(rectangle) == [[2, 1, 7, 1, 7, 4, 2, 4]]


def test_rle_and_png_give_back_the_mask():
    mask = np.random.default_rng(1).random((33, 47)) < 0.3
    rle = masks.encode_rle(mask)
    assert rle["size"] == [33, 47] and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)
    png = Image.open(io.BytesIO(base64.b64decode(masks.encode_png(mask))))
    assert png.format == "PNG" and png.size == (47, 33)
    np.testing.assert_array_equal(np.asarray(png.convert("L")) == 255, mask)
    assert masks.encode_box(np.full((2, 2), 0.12345)) == [[0.123, 0.123], [0.123, 0.123]]


SPECS = {"images": tf.TensorSpec([None], tf.string)}
TWO_SPECS = {"images": tf.TensorSpec([None, None, None, 3], tf.uint8),
             "image_sizes": tf.TensorSpec([None, 2], tf.int32)}


def _parse(document, specs=SPECS):
    body = document if isinstance(document, bytes) else api.to_json(document).encode()
    return api.parse_predict_request(body, lambda name: specs)


def test_predict_requests_in_row_and_columnar_form():
    name, tensors, row = _parse({"instances": [{"b64": base64.b64encode(b"ab").decode()}, "cd"]})
    assert name == "serving_default" and row
    assert tensors["images"].tolist() == [b"ab", b"cd"]
    name, tensors, row = _parse({"signature_name": "serve_padded", "inputs": {
        "images": np.zeros((1, 2, 2, 3), int).tolist(), "image_sizes": [[2, 2]]}}, TWO_SPECS)
    assert name == "serve_padded" and not row
    assert tensors["images"].dtype == np.uint8 and tensors["images"].shape == (1, 2, 2, 3)
    assert tensors["image_sizes"].dtype == np.int32
    _, tensors, _ = _parse({"instances": [{"images": np.zeros((2, 2, 3), int).tolist(),
                                           "image_sizes": [2, 2]}] * 3}, TWO_SPECS)
    assert tensors["images"].shape == (3, 2, 2, 3) and tensors["image_sizes"].shape == (3, 2)


@pytest.mark.parametrize("document, specs, message", [
    (b"", SPECS, "JSON Parse error: The document is empty"),
    (b"[1]", SPECS, "Is not object"),
    ({"instances": [], "inputs": []}, SPECS, "expecting only one of 'inputs' or 'instances'"),
    ({"instances": []}, SPECS, "No values in 'instances' array"),
    ({"instances": {"a": 1}}, SPECS, "Expecting 'instances' to be an list/array"),
    ({"signature_name": 3, "instances": [1]}, SPECS, "'signature_name' key must be a string"),
    ({}, SPECS, "Missing 'inputs' or 'instances' key"),
    ({"instances": [{"b64": "%%%"}]}, SPECS, "Unable to base64 decode"),
    ({"instances": [[1, 2]]}, TWO_SPECS, "instances is a plain list, but expecting list of objects"),
    ({"inputs": {"images": [[[[1, 2, 3]]]]}}, TWO_SPECS, "Missing named input: image_sizes"),
    ({"inputs": [[[[1, 2, 3]], [[1, 2]]]]}, {"images": TWO_SPECS["images"]}, "cannot be read as a uint8"),
    ({"inputs": [[[[1, 2, 300]]]]}, {"images": TWO_SPECS["images"]}, "cannot be read as a uint8"),
    ({"inputs": [[1, 2, 3]]}, {"images": TWO_SPECS["images"]}, "has shape [1, 3]"),
])
def test_malformed_predict_requests_get_tf_servings_errors(document, specs, message):
    with pytest.raises(api.ServingError) as raised:
        _parse(document, specs)
    assert raised.value.status == 400 and message in raised.value.message


def test_predict_answers_name_outputs_unless_there_is_one():
    outputs = {"scores": np.array([[0.5, 0.25]], np.float32), "count": np.array([2], np.int32)}
    assert api.predict_response(outputs, row_format=True) == {
        "predictions": [{"count": 2, "scores": [0.5, 0.25]}]}
    assert api.predict_response(outputs, row_format=False) == {
        "outputs": {"count": [2], "scores": [[0.5, 0.25]]}}
    assert api.predict_response({"count": np.array([2, 3])}, row_format=True) == {"predictions": [2, 3]}
    with pytest.raises(api.ServingError, match="inconsistent batch size: 1 expecting: 2"):
        api.predict_response({"a": np.zeros(2), "b": np.zeros(1)}, row_format=True)
    assert api.to_json({"x": float("nan")}) == '{"x":NaN}'


def test_the_batcher_joins_queued_items_of_one_key_and_refuses_past_its_queue():
    release = threading.Event()
    calls = []

    def run_batch(key, items):
        release.wait(10)
        calls.append((key, list(items)))
        return [f"{key}:{item}" for item in items]

    batcher = MicroBatcher(run_batch, max_batch_size=3, batch_timeout_s=0, max_queue=5)
    try:
        first = batcher.submit("a", 0)
        time.sleep(0.2)  # the worker now holds item 0 and waits for `release`
        futures = [batcher.submit(key, item) for key, item in
                   [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("a", 5)]]
        assert batcher.queue_depth == 5
        with pytest.raises(QueueFull):
            batcher.submit("a", 6)
        futures[3].cancel()  # item 4's request timed out while queued
        release.set()
        assert [future.result(10) for future in [first] + futures[:3] + futures[4:]] == [
            "a:0", "a:1", "b:2", "a:3", "a:5"]
    finally:
        batcher.close(10)
    # a's queued items 1, 3, 5 ran in one call (4 was dropped); b ran alone.
    assert calls == [("a", [0]), ("a", [1, 3, 5]), ("b", [2])]


def test_places_held_for_items_being_prepared_count_toward_the_queue():
    batcher = MicroBatcher(lambda key, items: [item * 10 for item in items], max_batch_size=2,
                           batch_timeout_s=0, max_queue=2)
    try:
        with batcher.reserved() as first_submit:
            with batcher.reserved():
                assert batcher.queue_depth == 2
                with pytest.raises(QueueFull):  # refused before its item exists
                    with batcher.reserved():
                        pass
                with pytest.raises(QueueFull):
                    batcher.submit("k", 0)
            # The second block ended without submitting: its place is free again.
            assert batcher.queue_depth == 1
            future = first_submit("k", 4)
            with pytest.raises(RuntimeError, match="filled already"):
                first_submit("k", 5)
        assert future.result(10) == 40
        assert batcher.queue_depth == 0
        with pytest.raises(ValueError):  # an error while preparing frees the place too
            with batcher.reserved():
                raise ValueError("undecodable")
        assert batcher.queue_depth == 0
    finally:
        batcher.close(10)
    with pytest.raises(RuntimeError, match="closed"):
        with batcher.reserved():
            pass


def test_two_workers_run_two_batches_at_once():
    both_running = threading.Barrier(2, timeout=10)  # broken unless two batches meet in it

    def run_batch(key, items):
        both_running.wait()
        return [item * 10 for item in items]

    batcher = MicroBatcher(run_batch, max_batch_size=1, batch_timeout_s=0, max_queue=4,
                           workers=2)
    try:
        futures = [batcher.submit("k", item) for item in (1, 2)]
        assert [future.result(20) for future in futures] == [10, 20]
    finally:
        batcher.close(10)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        MicroBatcher(run_batch, max_batch_size=1, batch_timeout_s=0, max_queue=4, workers=0)


def test_a_failing_batch_is_rerun_item_by_item_so_only_the_bad_item_fails():
    def run_batch(key, items):
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]

    sizes = []
    batcher = MicroBatcher(run_batch, max_batch_size=4, batch_timeout_s=0.5, max_queue=4,
                           on_batch=lambda size, seconds: sizes.append(size))
    try:
        futures = [batcher.submit("k", item) for item in ("x", "bad", "y")]
        assert futures[0].result(10) == "X" and futures[2].result(10) == "Y"
        with pytest.raises(ValueError, match="bad item"):
            futures[1].result(10)
    finally:
        batcher.close(10)
    assert sizes == [3]  # the batch timeout gathered all three into one batch


def test_metrics_text_counts_requests_and_batches():
    metrics = Metrics(queue_depth=lambda: 3, max_batch_size=2)
    metrics.request("detect", 200, 0.02)
    metrics.request("detect", 200, 0.3)
    metrics.request("predict", 503, 0.001)
    metrics.batch(2, 0.05)
    text = metrics.text()
    assert 'keras_maskrcnn_requests_total{endpoint="detect",code="200"} 2\n' in text
    assert 'keras_maskrcnn_requests_total{endpoint="predict",code="503"} 1\n' in text
    assert 'keras_maskrcnn_request_seconds_bucket{endpoint="detect",le="0.025"} 1\n' in text
    assert 'keras_maskrcnn_request_seconds_bucket{endpoint="detect",le="+Inf"} 2\n' in text
    assert "keras_maskrcnn_queue_depth 3\n" in text
    assert 'keras_maskrcnn_batch_size_bucket{le="1.0"} 0\n' in text
    assert 'keras_maskrcnn_batch_size_bucket{le="2.0"} 1\n' in text


def test_the_highest_numbered_version_is_served(tmp_path):
    for version in ("1", "10", "9", "notes"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "saved_model.pb").write_bytes(b"")
    assert find_version(tmp_path) == (str(tmp_path / "10"), 10)
    assert find_version(tmp_path / "9") == (str(tmp_path / "9"), 9)
    assert find_version(tmp_path / "notes") == (str(tmp_path / "notes"), 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds neither saved_model.pb nor numbered"):
        find_version(tmp_path / "empty")
    with pytest.raises(ValueError, match="no such folder"):
        find_version(tmp_path / "missing")


@pytest.mark.parametrize("conv_dtype, precision", [
    (tf.float32, "float32"), (tf.bfloat16, "bfloat16"), (tf.float16, "float16")])
def test_the_precision_served_is_read_from_the_graphs_convolutions(tmp_path, conv_dtype, precision):
    """float32 variables, inputs and outputs as a mixed-precision export has them; the
    convolution's dtype names the precision (`serve` prints it with precision_line)."""
    module = tf.Module()
    module.kernel = tf.Variable(tf.ones([3, 3, 3, 4]))

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
    def run(images):
        features = tf.nn.conv2d(tf.cast(images, conv_dtype), tf.cast(module.kernel, conv_dtype),
                                1, "SAME")
        return {"features": tf.cast(features, tf.float32)}
    module.run = run
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": run})
    assert graph_precision(read_meta_graph(str(tmp_path))) == precision

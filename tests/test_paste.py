"""Tests for keras_maskrcnn.ops.paste against the numpy reference, box by box."""

import numpy as np
import pytest
import reference_paste
import tensorflow as tf

from keras_maskrcnn.config import PASTE_METHODS
from keras_maskrcnn.ops import paste

# Per image of a batch of two, five boxes for a 40×60 image: inside, across the border, thin,
# sub-pixel and an empty padding box.
BOXES = np.array([[[3.2, 5.7, 30.1, 22.4], [-4.0, 10.5, 12.25, 45.0], [10, 20, 11, 21],
                   [35.5, 50.5, 70.0, 90.0], [0, 0, 0, 0]],
                  [[0, 0, 40, 60], [20.9, -7.3, 39.99, 12.01], [5.5, 5.5, 5.7, 30.2],
                   [1.0, 2.0, 39.0, 58.0], [12.3, 40.1, 33.3, 59.9]]], np.float32)
# Landscape, portrait (boxes transposed), square, and a strip smaller than most boxes.
IMAGE_SIZES = [(40, 60, False), (60, 40, True), (48, 48, False), (7, 90, False)]


def _case(height, width, transposed):
    masks = np.random.default_rng(0).uniform(size=(2, 5, 28, 28)).astype(np.float32)
    boxes = BOXES[..., [1, 0, 3, 2]] if transposed else BOXES
    return masks, boxes


@pytest.mark.parametrize("method", PASTE_METHODS)
@pytest.mark.parametrize("height, width, transposed", IMAGE_SIZES)
def test_paste_masks_equals_the_reference(method, height, width, transposed):
    masks, boxes = _case(height, width, transposed)
    got = paste.paste_masks(masks, boxes, height, width, method=method).numpy()
    assert got.shape == (2, 5, height, width) and got.dtype == bool
    for image in range(len(masks)):
        want = reference_paste.paste_masks(masks[image], boxes[image], (height, width), method=method)
        assert want.any()
        np.testing.assert_array_equal(got[image], want)


@pytest.mark.parametrize("method", PASTE_METHODS)
@pytest.mark.parametrize("height, width, transposed", IMAGE_SIZES)
def test_paste_mask_probabilities_equals_the_reference(method, height, width, transposed):
    masks, boxes = _case(height, width, transposed)
    got = paste.paste_mask_probabilities(masks, boxes, height, width, method=method).numpy()
    for image in range(len(masks)):
        want = reference_paste.paste_mask_probabilities(masks[image], boxes[image], (height, width),
                                                        method=method)
        # float32 here, float64 in the reference; 0 exactly where the method leaves pixels out.
        np.testing.assert_allclose(got[image], want, atol=1e-5)
        np.testing.assert_array_equal(got[image] == 0, want == 0)


def test_the_methods_differ():
    masks, boxes = _case(40, 60, False)
    pasted = [paste.paste_masks(masks, boxes, 40, 60, method=method).numpy() for method in PASTE_METHODS]
    assert not np.array_equal(*pasted)


def test_traced_for_any_image_size_and_detection_count():
    function = tf.function(paste.paste_masks, input_signature=[
        tf.TensorSpec([None, None, 28, 28]), tf.TensorSpec([None, None, 4]),
        tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
    masks, boxes = _case(40, 60, False)
    for count, (height, width) in ((5, (40, 60)), (2, (13, 21)), (0, (9, 4))):
        got = function(masks[:, :count], boxes[:, :count], height, width).numpy()
        assert got.shape == (2, count, height, width)
        for image in range(len(masks)):
            np.testing.assert_array_equal(got[image], reference_paste.paste_masks(
                masks[image, :count], boxes[image, :count], (height, width)))


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown paste method 'nearest'"):
        paste.paste_masks(np.zeros((1, 28, 28)), np.zeros((1, 4)), 5, 5, method="nearest")

"""Box coder: (dy, dx, dh, dw) deltas with weights, and the decode clip."""

import math

import numpy as np
import pytest

from keras_maskrcnn.ops.box_coder import BBOX_XFORM_CLIP, decode_boxes, encode_boxes


def _random_boxes(rng, shape, min_side=2.0, max_side=300.0):
    y1x1 = rng.uniform(-50, 400, size=shape + (2,))
    hw = np.exp(rng.uniform(np.log(min_side), np.log(max_side), size=shape + (2,)))
    return np.concatenate([y1x1, y1x1 + hw], -1).astype(np.float32)


def _boxes_and_references(rng, shape):
    """Random boxes and references whose sizes differ by less than the 62.5× decode clip."""
    return _random_boxes(rng, shape, 4.0, 200.0), _random_boxes(rng, shape, 4.0, 200.0)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_round_trip(weights):
    rng = np.random.default_rng(1)
    boxes, references = _boxes_and_references(rng, (2, 50))
    deltas = encode_boxes(boxes, references, weights)
    assert deltas.shape == (2, 50, 4)
    decoded = decode_boxes(deltas, references, weights).numpy()
    np.testing.assert_allclose(decoded, boxes, rtol=1e-5, atol=1e-3)


def test_round_trip_broadcasts_references():
    rng = np.random.default_rng(2)
    boxes, _ = _boxes_and_references(rng, (3, 7))
    _, anchors = _boxes_and_references(rng, (7,))
    deltas = encode_boxes(boxes, anchors[None], (1.0, 1.0, 1.0, 1.0))
    np.testing.assert_allclose(decode_boxes(deltas, anchors[None], (1.0, 1.0, 1.0, 1.0)).numpy(),
                               boxes, rtol=1e-5, atol=1e-3)


def test_hand_computed_delta():
    reference = np.array([[0, 0, 10, 10]], np.float32)   # centre (5, 5), size 10 × 10
    box = np.array([[2, 4, 22, 9]], np.float32)           # centre (12, 6.5), size 20 × 5
    want = np.array([[0.7, 0.15, math.log(2.0), math.log(0.5)]])
    np.testing.assert_allclose(encode_boxes(box, reference, (1, 1, 1, 1)).numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(encode_boxes(box, reference, (10, 10, 5, 5)).numpy(),
                               want * [10, 10, 5, 5], rtol=1e-6)
    np.testing.assert_allclose(decode_boxes(want * [10, 10, 5, 5], reference, (10, 10, 5, 5)).numpy(),
                               box, atol=1e-5)


def test_identity_delta_is_zero():
    boxes = _random_boxes(np.random.default_rng(4), (10,))
    np.testing.assert_allclose(encode_boxes(boxes, boxes, (10, 10, 5, 5)).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(decode_boxes(np.zeros((10, 4), np.float32), boxes, (10, 10, 5, 5)).numpy(),
                               boxes, atol=1e-4)


def test_clip_constant():
    assert BBOX_XFORM_CLIP == pytest.approx(math.log(1000.0 / 16))


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_decode_clips_log_scale(weights):
    reference = np.array([[100, 200, 116, 208]], np.float32)   # centre (108, 204), 16 × 8
    # Huge dh/dw (after dividing by the weights) clip to log(1000/16): at most 62.5× growth.
    deltas = np.array([[0.0, 0.0, 20.0 * weights[2], 50.0 * weights[3]]], np.float32)
    got = decode_boxes(deltas, reference, weights).numpy()[0]
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got[2] - got[0], 16 * 62.5, rtol=1e-5)
    np.testing.assert_allclose(got[3] - got[1], 8 * 62.5, rtol=1e-5)
    np.testing.assert_allclose([(got[0] + got[2]) / 2, (got[1] + got[3]) / 2], [108, 204], rtol=1e-6)
    # A delta just under the clip is not clipped.
    deltas = np.array([[0.0, 0.0, 4.0 * weights[2], -3.0 * weights[3]]], np.float32)
    got = decode_boxes(deltas, reference, weights).numpy()[0]
    np.testing.assert_allclose(got[2] - got[0], 16 * math.exp(4.0), rtol=1e-5)
    np.testing.assert_allclose(got[3] - got[1], 8 * math.exp(-3.0), atol=1e-4)


def test_encode_degenerate_boxes_is_finite():
    # Padded entries are all-zero boxes; their (masked) targets must not poison the loss with NaN.
    zeros = np.zeros((3, 4), np.float32)
    boxes = np.array([[0, 0, 0, 0], [1, 1, 5, 5], [2, 2, 2, 9]], np.float32)
    assert np.all(np.isfinite(encode_boxes(boxes, zeros, (10, 10, 5, 5)).numpy()))
    assert np.all(np.isfinite(encode_boxes(zeros, boxes, (1, 1, 1, 1)).numpy()))

"""Tests for keras_maskrcnn.inference.Predictor: what every kind of predictor shares."""

import numpy as np
import pytest
import reference_paste

from keras_maskrcnn.config import PASTE_METHODS, DetectionConfig, tiny
from keras_maskrcnn.inference import Predictor, predict_in_batches

MASKS = np.random.default_rng(0).uniform(size=(2, 28, 28)).astype(np.float32)
BOXES = np.array([[3.2, 5.7, 30.1, 22.4], [10.5, -4.0, 39.0, 59.5]], np.float32)


class _FixedPredictor(Predictor):
    """Detects the same two objects in every image."""

    def __init__(self, paste_method):
        self.config = tiny(detection=DetectionConfig(paste_method=paste_method))

    def detect(self, images):
        return [{"boxes": BOXES, "scores": np.array([0.9, 0.8], np.float32),
                 "category_ids": np.array([1, 2]), "masks": MASKS} for _ in images]


@pytest.mark.parametrize("method", PASTE_METHODS)
def test_full_masks_are_pasted_by_the_models_method(method):
    images = [np.zeros((40, 60, 3), np.uint8), np.zeros((50, 30, 3), np.uint8)]
    detections = _FixedPredictor(method).predict(images, full_masks=True)
    for image, found in zip(images, detections):
        want = reference_paste.paste_masks(MASKS, BOXES, image.shape[:2], method=method)
        assert want.any()
        np.testing.assert_array_equal(found["full_masks"], want)


def test_full_masks_only_when_asked():
    images = [np.zeros((40, 60, 3), np.uint8)] * 3
    assert "full_masks" not in _FixedPredictor("centres").predict(images)[0]
    found = list(predict_in_batches(_FixedPredictor("centres"), images, 2, full_masks=True))
    assert len(found) == 3 and all(f["full_masks"].shape == (2, 40, 60) for f in found)

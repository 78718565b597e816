"""Tests for keras_maskrcnn.visualize."""

import numpy as np
from PIL import Image

from keras_maskrcnn import visualize


def _scene():
    image = np.full((80, 100, 3), 128, np.uint8)
    boxes = np.array([[30, 40, 60, 80]], np.float32)
    masks = np.zeros((1, 80, 100), bool)
    masks[0, 35:55, 45:75] = True
    return image, boxes, masks


def test_draw_detections_changes_mask_and_leaves_the_rest():
    image, boxes, masks = _scene()
    drawn = visualize.draw_detections(image, boxes, [3], [0.93], masks, {3: "cat"})
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (drawn[masks[0]] != image[masks[0]]).any(axis=-1).all()
    # Below the box and to its left: outside mask, box and the label above the box.
    np.testing.assert_array_equal(drawn[61:], image[61:])
    np.testing.assert_array_equal(drawn[:, :39], image[:, :39])
    assert (drawn[20:30, 40:80] != image[20:30, 40:80]).any()
    np.testing.assert_array_equal(image, np.full((80, 100, 3), 128, np.uint8))


def test_draw_detections_without_masks_or_names():
    image, boxes, _ = _scene()
    drawn = visualize.draw_detections(image, boxes, ["person"], None, None, None)
    assert (drawn[30, 40:80] != image[30, 40:80]).any(axis=-1).all()
    np.testing.assert_array_equal(drawn[40:50, 50:70], image[40:50, 50:70])
    empty = visualize.draw_detections(image, np.zeros((0, 4)), [], [], np.zeros((0, 80, 100), bool))
    np.testing.assert_array_equal(empty, image)


def test_save_png_round_trips(tmp_path):
    image, boxes, masks = _scene()
    drawn = visualize.draw_detections(image, boxes, [1], [0.5], masks)
    path = tmp_path / "out" / "detections.png"
    visualize.save_png(drawn, path)
    with Image.open(path) as loaded:
        assert loaded.format == "PNG"
        np.testing.assert_array_equal(np.asarray(loaded), drawn)

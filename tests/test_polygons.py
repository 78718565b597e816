"""Masks as COCO polygons (keras_maskrcnn.data.polygons): exact round trips through pycocotools."""

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from keras_maskrcnn.data.polygons import exact_polygons, mask_outlines


def _decode(polygons, shape):
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, *shape))).astype(bool)


def test_rectangle_outline_is_its_four_corners():
    mask = np.zeros((10, 12), bool)
    mask[2:6, 3:8] = True
    assert mask_outlines(mask) == [[3.0, 2.0, 8.0, 2.0, 8.0, 6.0, 3.0, 6.0]]
    np.testing.assert_array_equal(_decode(exact_polygons(mask), mask.shape), mask)


def test_occluded_shapes_round_trip_exactly():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(60):
        masks = []
        for kind in range(3):
            canvas = Image.new("L", (48, 48))
            size = rng.uniform(4, 30)
            cx, cy = rng.uniform(size / 2, 48 - size / 2, size=2)
            box = [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]
            (ImageDraw.Draw(canvas).ellipse if kind % 2 else ImageDraw.Draw(canvas).rectangle)(box, fill=1)
            masks.append(np.asarray(canvas, bool))
        visible = masks[0] & ~masks[1] & ~masks[2]  # cut by the two in front, maybe in parts
        polygons = exact_polygons(visible)
        if visible.any() and polygons is not None:
            np.testing.assert_array_equal(_decode(polygons, visible.shape), visible)
            checked += 1
    assert checked > 40


def test_parts_touching_at_a_corner_and_separate_parts():
    mask = np.zeros((8, 8), bool)
    mask[1:3, 1:3] = True
    mask[3:5, 3:5] = True  # touches the first only at the corner (3, 3)
    mask[6, 6] = True
    polygons = mask_outlines(mask)
    assert len(polygons) == 3
    np.testing.assert_array_equal(_decode(exact_polygons(mask), mask.shape), mask)


def test_a_hole_cannot_be_written_as_polygons():
    ring = np.zeros((9, 9), bool)
    ring[1:8, 1:8] = True
    ring[3:6, 3:6] = False
    assert len(mask_outlines(ring)) == 2  # the outer outline and the hole's
    assert exact_polygons(ring) is None
    assert exact_polygons(np.zeros((4, 4), bool)) is None

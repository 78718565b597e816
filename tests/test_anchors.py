"""Anchors: counts, aspect-ratio convention, rounding, centres and ordering."""

import numpy as np
import pytest

from keras_maskrcnn.ops.anchors import base_anchors, level_anchors, multilevel_anchors

RATIOS = (0.5, 1.0, 2.0)


def test_base_anchors_hand_rounded():
    # Size 32: ratio 0.5 → h = 32·√0.5 = 22.63, w = 32/√0.5 = 45.25 → half-extents 11.31, 22.63
    # round to 11, 23. Ratio 2 swaps them; ratio 1 is ±16.
    got = base_anchors([32], RATIOS)
    np.testing.assert_array_equal(got, [[-11, -23, 11, 23], [-16, -16, 16, 16], [-23, -11, 23, 11]])
    assert got.dtype == np.float32


def test_aspect_ratio_is_height_over_width():
    anchors = base_anchors([64], [2.0])[0]
    height, width = anchors[2] - anchors[0], anchors[3] - anchors[1]
    assert height > width
    assert height / width == np.float32(90) / np.float32(46)  # 64√2 = 90.5 → ±45; 64/√2 = 45.25 → ±23


def test_base_anchor_order_ratio_major_then_size():
    got = base_anchors([32, 64], RATIOS)
    assert got.shape == (6, 4)
    heights = got[:, 2] - got[:, 0]
    widths = got[:, 3] - got[:, 1]
    # index = ratio_index · len(sizes) + size_index
    np.testing.assert_array_equal(heights, [22, 46, 32, 64, 46, 90])
    np.testing.assert_array_equal(widths, [46, 90, 32, 64, 22, 46])


def test_level_anchors_centres_and_row_major_order():
    stride, feature_hw = 8, (2, 3)
    anchors = level_anchors(feature_hw, stride, [32, 64], RATIOS)
    per_location = 6
    assert anchors.shape == (2 * 3 * per_location, 4)
    base = base_anchors([32, 64], RATIOS)
    for i in range(2):
        for j in range(3):
            block = anchors[(i * 3 + j) * per_location:(i * 3 + j + 1) * per_location]
            np.testing.assert_array_equal(block, base + [i * stride, j * stride, i * stride, j * stride])
    centres_y = (anchors[:, 0] + anchors[:, 2]) / 2
    centres_x = (anchors[:, 1] + anchors[:, 3]) / 2
    assert np.all(centres_y % stride == 0) and np.all(centres_x % stride == 0)
    assert centres_y.max() == stride and centres_x.max() == 2 * stride


def test_multilevel_counts_and_order():
    image_size = (64, 96)
    strides = (4, 8, 16, 32, 64)
    sizes = ((32,), (64,), (128,), (256,), (512,))
    levels = multilevel_anchors(image_size, strides, sizes, RATIOS)
    assert len(levels) == 5
    counts = [len(a) for a in levels]
    assert counts == [16 * 24 * 3, 8 * 12 * 3, 4 * 6 * 3, 2 * 3 * 3, 1 * 2 * 3]
    for anchors, stride, (size,) in zip(levels, strides, sizes):
        assert anchors.dtype == np.float32
        np.testing.assert_array_equal(anchors[:3], base_anchors([size], RATIOS))
        # The last anchor sits at the bottom-right location, torchvision's side // cells apart.
        last_centre = ((anchors[-1, 0] + anchors[-1, 2]) / 2, (anchors[-1, 1] + anchors[-1, 3]) / 2)
        rows, cols = -(-image_size[0] // stride), -(-image_size[1] // stride)
        assert last_centre == ((rows - 1) * (image_size[0] // rows), (cols - 1) * (image_size[1] // cols))


def test_spacing_follows_torchvision_where_the_stride_does_not_divide_the_canvas():
    # r50_fpn's 800 × 1344 canvas: P6 is 13 × 21, so torchvision spaces its rows 800 // 13 = 61
    # apart while its columns keep 1344 // 21 = 64.
    p5, p6 = multilevel_anchors((800, 1344), (32, 64), ((256,), (512,)), (1.0,))
    centres = (p6[:, :2] + p6[:, 2:]) / 2
    assert len(p6) == 13 * 21
    np.testing.assert_array_equal(centres[-1], [12 * 61, 20 * 64])
    np.testing.assert_array_equal(((p5[:, :2] + p5[:, 2:]) / 2)[-1], [24 * 32, 41 * 32])


def test_multilevel_rounds_feature_size_up():
    (anchors,) = multilevel_anchors((65, 90), (32,), ((64,),), (1.0,))
    assert len(anchors) == 3 * 3  # ceil(65/32) × ceil(90/32)


@pytest.mark.parametrize("canvas_hw", [(800, 1344), (800, 1088), (1088, 800), (96, 160), (65, 90)])
def test_anchors_in_graph_equal_the_numpy_ones(canvas_hw):
    import tensorflow as tf

    from keras_maskrcnn.ops.anchors import multilevel_anchors_in_graph

    strides, sizes = (4, 8, 16, 32, 64), ((32,), (64,), (128,), (256,), (512,))
    want = multilevel_anchors(canvas_hw, strides, sizes, RATIOS)
    got = multilevel_anchors_in_graph(tf.constant(canvas_hw), strides, sizes, RATIOS)
    for level_want, level_got in zip(want, got):
        np.testing.assert_array_equal(level_got.numpy(), level_want)

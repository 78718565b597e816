"""RoIAlign (crop_and_resize version) against the loop-based numpy reference."""

import numpy as np
import pytest
import tensorflow as tf

from keras_maskrcnn.ops.roi_align import (assign_levels, multilevel_roi_align,
                                          multilevel_roi_align_by_level, multilevel_roi_align_gather,
                                          roi_align)
from reference_roi_align import assign_level_reference, roi_align_reference

ATOL = 1e-4


def _boxes_for_map(rng, map_hw, stride):
    """Boxes in input pixels covering the awkward cases for a map of `map_hw` cells.

    Coordinates carry random fractions so that no sample lands exactly on the −1 / H
    cut-off, where float32 and float64 may legitimately disagree.
    """
    img_h, img_w = map_hw[0] * stride, map_hw[1] * stride

    def jitter():
        return rng.uniform(0.01, 0.99)

    boxes = []
    for _ in range(2):  # ordinary boxes inside the image
        y1, x1 = rng.uniform(0, img_h * 0.6), rng.uniform(0, img_w * 0.6)
        boxes.append([y1, x1, y1 + rng.uniform(stride, img_h * 0.4), x1 + rng.uniform(stride, img_w * 0.4)])
    # Partly outside: over the top-left and over the bottom-right corner.
    boxes.append([-1.3 * stride - jitter(), -0.7 * stride - jitter(), img_h * 0.5 + jitter(), img_w * 0.4 + jitter()])
    boxes.append([img_h * 0.5 + jitter(), img_w * 0.6 + jitter(), img_h + 2.2 * stride + jitter(), img_w + 0.6 * stride + jitter()])
    # Fully outside: far away (reads zeros) and within one cell of the border (clamps).
    boxes.append([img_h + 3 * stride + jitter(), 2.0 + jitter(), img_h + 6 * stride + jitter(), 9.0 + jitter()])
    boxes.append([-0.9 * stride + 0.1 * jitter(), 3.0 + jitter(), -0.2 * stride + 0.1 * jitter(), 3.0 * stride + jitter()])
    # Tiny: smaller than one cell (exercises the min-size-1 rule when not aligned).
    y1, x1 = rng.uniform(0, img_h - stride), rng.uniform(0, img_w - stride)
    boxes.append([y1, x1, y1 + 0.3 * stride, x1 + 0.55 * stride])
    # Large: bigger than the whole image.
    boxes.append([-0.37 * img_h, -0.21 * img_w, 1.43 * img_h, 1.18 * img_w])
    return np.asarray(boxes, np.float32)


def _case(seed, map_hw, stride, channels=3, batch=2):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(batch, map_hw[0], map_hw[1], channels)).astype(np.float32)
    boxes = np.stack([_boxes_for_map(rng, map_hw, stride) for _ in range(batch)])
    return features, boxes


def _reference_batch(features, boxes, output_size, spatial_scale, sampling_ratio, aligned):
    return np.stack([
        roi_align_reference(features[b], boxes[b], output_size, spatial_scale, sampling_ratio, aligned)
        for b in range(features.shape[0])])


@pytest.mark.parametrize("output_size", [7, 14])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("stride,map_hw", [(4, (9, 11)), (16, (5, 6))])
def test_roi_align_matches_reference(output_size, sampling_ratio, aligned, stride, map_hw):
    features, boxes = _case(1000 * stride + 10 * sampling_ratio + aligned, map_hw, stride)
    got = roi_align(tf.constant(features), tf.constant(boxes), output_size, 1.0 / stride,
                    sampling_ratio, aligned).numpy()
    assert got.shape == (2, boxes.shape[1], output_size, output_size, 3)
    want = _reference_batch(features, boxes, output_size, 1.0 / stride, sampling_ratio, aligned)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_reference_hand_values():
    """Sanity of the reference itself on a 2×2 map."""
    features = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)[..., None]
    # Aligned box covering the whole map, one bin, one sample → the centre (0.5, 0.5).
    out = roi_align_reference(features, [[0, 0, 2, 2]], 1, 1.0, 1, True)
    assert out[0, 0, 0, 0] == pytest.approx(1.5)
    # Unaligned box (0,0)-(2,2), 2×2 bins, one sample each at 0.5 / 1.5: the sample at 1.5
    # sits past the last row/column and reads it.
    out = roi_align_reference(features, [[0, 0, 2, 2]], 2, 1.0, 1, False)
    np.testing.assert_allclose(out[0, ..., 0], [[1.5, 2.0], [2.5, 3.0]])
    # A point beyond −1 reads 0.
    out = roi_align_reference(features, [[-4, -4, -2, -2]], 1, 1.0, 1, True)
    assert out[0, 0, 0, 0] == 0.0


def test_roi_align_constant_map_inside_is_constant():
    features = np.full((1, 8, 8, 2), 3.5, np.float32)
    boxes = np.array([[[4.1, 4.3, 20.2, 27.9], [0.3, 0.1, 31.7, 31.9]]], np.float32)
    got = roi_align(features, boxes, 7, 0.25, 2, True).numpy()
    np.testing.assert_allclose(got, 3.5, atol=1e-5)


def test_roi_align_rejects_adaptive_sampling():
    with pytest.raises(ValueError):
        roi_align(np.zeros((1, 4, 4, 1), np.float32), np.zeros((1, 1, 4), np.float32), 7, 1.0, 0, True)


def test_assign_levels_hand_values():
    boxes = np.array([
        [0, 0, 224, 224],       # canonical → 4
        [16, 32, 240, 256],     # canonical, shifted → 4
        [5, 5, 117, 117],       # 112 → 3
        [0, 0, 112, 448],       # sqrt area 224 → 4
        [0, 0, 448, 448],       # → 5
        [0, 0, 223, 223],       # just under canonical → 3
        [0, 0, 56, 56],         # → 2
        [0, 0, 20, 20],         # → 0, clamped to 2
        [0, 0, 2000, 2000],     # → 7, clamped to 5
        [3, 3, 3, 9],           # empty → min level
    ], np.float32)
    want = [4, 4, 3, 4, 5, 3, 2, 2, 5, 2]
    got = assign_levels(boxes, 2, 5).numpy()
    assert got.dtype == np.int32
    assert got.tolist() == want
    assert [assign_level_reference(b, 2, 5) for b in boxes] == want


def test_assign_levels_random_vs_reference():
    rng = np.random.default_rng(3)
    y1x1 = rng.uniform(0, 500, size=(2, 64, 2))
    hw = np.exp(rng.uniform(np.log(8), np.log(1200), size=(2, 64, 2)))
    boxes = np.concatenate([y1x1, y1x1 + hw], -1).astype(np.float32)
    got = assign_levels(boxes, 2, 5).numpy()
    want = np.array([[assign_level_reference(b, 2, 5) for b in img] for img in boxes])
    np.testing.assert_array_equal(got, want)
    assert set(np.unique(want)) == {2, 3, 4, 5}


@pytest.mark.parametrize("implementation", [multilevel_roi_align, multilevel_roi_align_gather,
                                            multilevel_roi_align_by_level])
@pytest.mark.parametrize("aligned", [True, False])
def test_multilevel_roi_align_reads_assigned_level(aligned, implementation):
    rng = np.random.default_rng(11 + aligned)
    min_level, canvas, channels, output_size, sampling_ratio = 2, 96, 2, 7, 2
    features = [rng.normal(size=(2, canvas // 2 ** l, canvas // 2 ** l, channels)).astype(np.float32)
                for l in range(min_level, min_level + 4)]
    # Sides spanning every level: ~20 px (→2, clamped), ~80 (→2), ~150 (→3), ~250 (→4), ~500 (→5).
    sides = np.array([[20.3, 79.7, 151.2, 250.9, 501.3, 112.6], [35.1, 130.4, 224.7, 300.2, 90.9, 610.8]])
    rng_offsets = rng.uniform(-30, 60, size=(2, 6, 2))
    aspect = rng.uniform(0.6, 1.6, size=(2, 6))
    hw = np.stack([sides * np.sqrt(aspect), sides / np.sqrt(aspect)], -1)
    boxes = np.concatenate([rng_offsets, rng_offsets + hw], -1).astype(np.float32)

    got = implementation(features, boxes, output_size, sampling_ratio, aligned, min_level).numpy()
    assert got.shape == (2, 6, output_size, output_size, channels)
    levels_seen = set()
    for b in range(2):
        for n in range(6):
            level = assign_level_reference(boxes[b, n], min_level, min_level + 3)
            levels_seen.add(level)
            want = roi_align_reference(features[level - min_level][b], boxes[b, n:n + 1], output_size,
                                       1.0 / 2 ** level, sampling_ratio, aligned)[0]
            np.testing.assert_allclose(got[b, n], want, atol=ATOL, rtol=0,
                                       err_msg=f"image {b} box {n} level {level}")
    assert levels_seen == {2, 3, 4, 5}


@pytest.mark.parametrize("implementation", [multilevel_roi_align_gather,
                                            multilevel_roi_align_by_level])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
@pytest.mark.parametrize("aligned", [True, False])
def test_other_implementations_equal_crop_and_resize(aligned, sampling_ratio, implementation):
    """The TFLite-friendly RoIAlign, the by-level one and the crop_and_resize one agree, boxes
    outside included."""
    rng = np.random.default_rng(5)
    features = [tf.constant(rng.normal(size=(2, 128 // 2 ** l, 128 // 2 ** l, 8)), tf.float32)
                for l in (2, 3, 4, 5)]
    corners = rng.uniform(-20, 130, size=(2, 40, 2))
    sizes = rng.uniform(0.5, 300, size=(2, 40, 2))
    boxes = tf.constant(np.concatenate([corners, corners + sizes], -1), tf.float32)
    for output_size in (7, 14):
        want = multilevel_roi_align(features, boxes, output_size, sampling_ratio, aligned, 2)
        got = implementation(features, boxes, output_size, sampling_ratio, aligned, 2)
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("implementation", [multilevel_roi_align_gather,
                                            multilevel_roi_align_by_level])
def test_level_sizes_known_only_at_run_time_give_the_same_pooling(implementation):
    """A canvas per image traces the model with unknown map sizes (inference.compiled_forward)."""
    rng = np.random.default_rng(6)
    features = [tf.constant(rng.normal(size=(1, 96 // 2 ** l, 160 // 2 ** l, 4)), tf.float32)
                for l in (2, 3, 4, 5)]
    corners = rng.uniform(0, 90, size=(1, 30, 2))
    boxes = tf.constant(np.concatenate([corners, corners + rng.uniform(2, 150, (1, 30, 2))], -1),
                        tf.float32)
    run_time = tf.function(
        lambda maps, b: implementation(maps, b, 7, 2, False, 2),
        input_signature=[[tf.TensorSpec([None, None, None, 4], tf.float32)] * 4,
                         tf.TensorSpec([None, None, 4], tf.float32)])
    want = implementation(features, boxes, 7, 2, False, 2)
    np.testing.assert_allclose(run_time(features, boxes).numpy(), want.numpy(), atol=1e-4, rtol=0)

"""Our preprocessing, box mapping, anchors and mask pasting against torchvision's own functions,
one at a time, on images of many shapes and orientations."""

import dataclasses

import numpy as np
import pytest

from keras_maskrcnn import postprocess, preprocessing
from torch_imports import import_torch as _torch


def _torchvision_transform(config):
    """torchvision's GeneralizedRCNNTransform as maskrcnn_resnet50_fpn builds it, in eval mode."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    return GeneralizedRCNNTransform(*config.size_limits, [m / 255 for m in config.pixel_mean],
                                    [s / 255 for s in config.pixel_std]).eval()


# Downscaling, scales that are not binary fractions, an aspect ratio over 1333 / 800 (where the
# long side sets the scale: fitting to the canvas alone would make it 1344) and, in a square
# canvas, portrait images.
@pytest.mark.parametrize("image_hw, canvas", [
    ((1000, 1650), (800, 1344)), ((480, 640), (800, 1344)), ((333, 500), (800, 1344)),
    ((600, 1200), (800, 1344)), ((300, 1000), (800, 1344)), ((1000, 600), (1344, 1344)),
    ((517, 389), (1344, 1344))])
def test_resize_equals_torchvisions(image_hw, canvas):
    torch, _ = _torch()
    from keras_maskrcnn.config import torchvision_r50_fpn

    config = dataclasses.replace(torchvision_r50_fpn().input, image_size=canvas)
    image = np.random.default_rng(0).integers(0, 256, size=(*image_hw, 3), dtype=np.uint8)
    with torch.no_grad():
        images, _ = _torchvision_transform(config)(
            [torch.from_numpy(image).permute(2, 0, 1).float() / 255])
    canvas, image_info = preprocessing.resize_and_pad(image, config.image_size, config.size_limits)
    valid_h, valid_w = images.image_sizes[0]
    assert (valid_h, valid_w) == tuple(np.asarray(image_info)[1:3].astype(int))
    want = images.tensors[0].permute(1, 2, 0).numpy()[:valid_h, :valid_w]
    got = ((np.asarray(canvas) - config.pixel_mean) / config.pixel_std)[:valid_h, :valid_w]
    # Sample positions agree to float32 rounding, which between random neighbours up to 4.4
    # apart (255 grey levels) shows as ~1e-4.
    np.testing.assert_allclose(got, want, atol=1e-3)


@pytest.mark.parametrize("batch_hw", [[(480, 640)], [(640, 480)], [(427, 640), (640, 427)],
                                      [(1000, 1650), (300, 200)], [(800, 1216)]])
def test_canvas_per_image_is_torchvisions_batch_canvas(batch_hw):
    torch, _ = _torch()
    from keras_maskrcnn.config import torchvision_r50_fpn

    config = torchvision_r50_fpn().input
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8) for hw in batch_hw]
    with torch.no_grad():
        want, _ = _torchvision_transform(config)(
            [torch.from_numpy(image).permute(2, 0, 1).float() / 255 for image in images])
    canvases, image_info = preprocessing.preprocess_for_model(images, config)
    assert canvases.shape[1:3] == tuple(want.tensors.shape[2:])
    assert [tuple(hw) for hw in image_info[:, 1:3].astype(int)] == [tuple(s) for s in want.image_sizes]
    normalised = (canvases - config.pixel_mean) / config.pixel_std
    for index, (height, width) in enumerate(want.image_sizes):
        np.testing.assert_allclose(normalised[index, :height, :width],
                                   want.tensors[index, :, :height, :width].permute(1, 2, 0).numpy(),
                                   atol=1e-3)
        assert not canvases[index, height:].any() and not canvases[index, :, width:].any()


@pytest.mark.parametrize("image_hw", [(480, 640), (333, 500), (600, 1200)])
def test_boxes_map_back_as_torchvisions_postprocess(image_hw):
    torch, _ = _torch()
    from keras_maskrcnn.config import torchvision_r50_fpn

    config = torchvision_r50_fpn().input
    _, image_info = preprocessing.resize_and_pad(np.zeros((*image_hw, 3), np.uint8),
                                                 config.image_size, config.size_limits)
    valid_hw = tuple(int(side) for side in np.asarray(image_info)[1:3])
    boxes = np.random.default_rng(0).uniform(0, min(valid_hw), size=(20, 4)).astype(np.float32)
    boxes[:, 2:] += boxes[:, :2]
    want = _torchvision_transform(config).postprocess(
        [{"boxes": torch.from_numpy(boxes[:, [1, 0, 3, 2]])}], [valid_hw], [image_hw])
    got = preprocessing.boxes_to_original(boxes[None], np.asarray(image_info)[None])[0]
    np.testing.assert_allclose(np.asarray(got), want[0]["boxes"].numpy()[:, [1, 0, 3, 2]],
                               rtol=1e-6)


def test_anchors_equal_torchvisions_on_the_r50_canvas():
    torch, _ = _torch()
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    from keras_maskrcnn.config import torchvision_r50_fpn
    from keras_maskrcnn.ops.anchors import multilevel_anchors

    config = torchvision_r50_fpn()
    height, width = config.input.image_size
    levels = range(config.fpn.min_level, config.fpn.max_level + 1)
    generator = AnchorGenerator(tuple((size,) for size in config.anchors.sizes),
                                (config.anchors.aspect_ratios,) * len(levels))
    # P6's 13 rows do not divide 800: the anchor spacing is where the two could part.
    feature_maps = [torch.zeros(1, 1, -(-height // 2 ** level), -(-width // 2 ** level))
                    for level in levels]
    images = ImageList(torch.zeros(1, 3, height, width), [(height, width)])
    want = generator(images, feature_maps)[0].numpy()[:, [1, 0, 3, 2]]
    got = np.concatenate(multilevel_anchors(
        (height, width), [2 ** level for level in levels], [(size,) for size in config.anchors.sizes],
        config.anchors.aspect_ratios))
    np.testing.assert_array_equal(got, want)


def test_torchvision_paste_method_equals_paste_masks_in_image():
    torch, _ = _torch()
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(6, 28, 28)).astype(np.float32)
    boxes = np.array([[3.2, 5.7, 30.1, 22.4], [-4.0, 10.5, 12.25, 45.0], [10, 20, 11, 21],
                      [35.5, 50.5, 70.0, 90.0], [0, 0, 40, 60], [20.9, -7.3, 39.99, 12.01]], np.float32)
    image_hw = (40, 60)
    want = paste_masks_in_image(torch.from_numpy(masks)[:, None],
                                torch.from_numpy(boxes[:, [1, 0, 3, 2]]), image_hw)[:, 0].numpy()
    got = postprocess.paste_mask_probabilities(masks, boxes, image_hw, method="torchvision")
    np.testing.assert_allclose(got, want, atol=1e-5)  # torch interpolates in float32
    np.testing.assert_array_equal(postprocess.paste_masks(masks, boxes, image_hw, method="torchvision"),
                                  got >= 0.5)

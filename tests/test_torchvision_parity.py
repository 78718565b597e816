"""Parity with torchvision's `maskrcnn_resnet50_fpn`, stage by stage, and the converter's parts.

A randomly initialised torchvision model (with random batch-norm statistics, so that their
conversion is exercised) is saved, converted by `keras-maskrcnn convert-torchvision`, and both
run on photo-like images. Stage by stage on one: its 640 × 1056 pixels become 800 × 1320 under
torchvision's rule (short side 800, long side ≤ 1333), padded to 800 × 1344 by both. End to end
(detections and pasted masks through the `Predictor`) on images of other shapes and
orientations, whose canvases torchvision rounds to multiples of 32 as our canvas per image
does. Both models are built once for the module; `pytest -s` prints the measured differences.
"""

import dataclasses
import re
import sys

import numpy as np
import pytest

from keras_maskrcnn import cli, postprocess, preprocessing
from keras_maskrcnn.config import TORCHVISION_COCO_CLASS_NAMES
from keras_maskrcnn.model import rebuild
from reference_boxes import pairwise_iou
from torch_imports import import_torch as _torch

pytestmark = pytest.mark.slow  # builds, converts or trains models: see pytest.ini

IMAGE_HW = (640, 1056)
# Random weights score every class about 1/91, below the default threshold of 0.05.
SCORE_THRESHOLD = 0.005
# Random ResNet activations grow to ~1e3; scaling the FPN's output convolutions gives the heads
# O(1) features, as trained ones see, so proposals and detections are not degenerate.
FPN_OUTPUT_SCALE = 1e-3
TORCH_BATCH_NORM_EPSILON = 1e-5  # BatchNorm2d's: weights=None builds the backbone with it
NUM_COMPARED_PROPOSALS = 100


def _report(stage, **values):
    print(f"\n[torchvision parity] {stage}: " + ", ".join(f"{k}={v:.3g}" for k, v in values.items()))


def _photo_like_image(height=IMAGE_HW[0], width=IMAGE_HW[1], seed=0):
    """A deterministic uint8 [height, width, 3] image: smooth gradients, filled shapes, noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    y, x = ys / height, xs / width
    image = np.stack([70 + 120 * y, 90 + 90 * x, 160 - 70 * (x + y) / 2], axis=-1)
    for _ in range(6):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(30, 180, size=2)
        image[((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1] = rng.uniform(0, 255, size=3)
    for _ in range(4):
        top, left = rng.integers(0, height - 60), rng.integers(0, width - 60)
        h, w = rng.integers(40, 250, size=2)
        # A shaded rectangle: its colour ramps across it, as lit surfaces do.
        ramp = np.linspace(0.6, 1.0, min(w, width - left))[None, :, None]
        image[top:top + h, left:left + w] = rng.uniform(0, 255, size=3) * ramp
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _random_torchvision_model(torch, torchvision):
    torch.manual_seed(0)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, box_score_thresh=SCORE_THRESHOLD).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
        for block in model.backbone.fpn.layer_blocks:
            block[0].weight *= FPN_OUTPUT_SCALE
            block[0].bias *= FPN_OUTPUT_SCALE
    return model


def _run_torchvision(torch, model, image):
    """Stage outputs of torchvision's forward pass, captured with hooks, as numpy (NHWC, y1x1y2x2)."""
    captured = {}
    hooks = [
        model.transform.register_forward_hook(lambda m, i, out: captured.update(images=out[0])),
        model.backbone.register_forward_hook(lambda m, i, out: captured.update(features=out)),
        model.rpn.register_forward_hook(lambda m, i, out: captured.update(proposals=out[0][0])),
    ]
    with torch.no_grad():
        detections = model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
    for hook in hooks:
        hook.remove()
    xyxy_to_yxyx = [1, 0, 3, 2]
    return {
        "images": captured["images"].tensors[0].permute(1, 2, 0).numpy(),
        "image_size": tuple(captured["images"].image_sizes[0]),
        "features": [f[0].permute(1, 2, 0).numpy() for f in captured["features"].values()],
        "proposals": captured["proposals"].numpy()[:, xyxy_to_yxyx],
        "boxes": detections["boxes"].numpy()[:, xyxy_to_yxyx],
        "scores": detections["scores"].numpy(),
        "labels": detections["labels"].numpy(),
        "masks": detections["masks"].numpy()[:, 0],
    }


@pytest.fixture(scope="module")
def state_dict():
    torch, torchvision = _torch()
    model = _random_torchvision_model(torch, torchvision)
    return model, {name: value.numpy() for name, value in model.state_dict().items()}


@pytest.fixture(scope="module")
def parity(state_dict, tmp_path_factory):
    """Both models' stage outputs on the same image."""
    import tensorflow as tf

    from keras_maskrcnn.inference import load_model

    torch, _ = _torch()
    torch_model, _ = state_dict
    image = _photo_like_image()
    want = _run_torchvision(torch, torch_model, image)

    folder = tmp_path_factory.mktemp("torchvision")
    torch.save(torch_model.state_dict(), folder / "maskrcnn.pth")
    assert cli.main(["convert-torchvision", str(folder / "maskrcnn.pth"), "--out",
                     str(folder / "maskrcnn.keras"),
                     "--batch-norm-epsilon", str(TORCH_BATCH_NORM_EPSILON)]) == 0
    converted = load_model(str(folder / "maskrcnn.keras"))
    config = converted.model_config
    model = rebuild(converted, config.replace(
        detection=dataclasses.replace(config.detection, score_threshold=SCORE_THRESHOLD)))

    canvas, image_info = preprocessing.preprocess_for_model([image], config.input)
    features = model.extract_features(tf.constant(canvas), tf.constant(image_info))
    logits, deltas = model.rpn_head(features)
    proposals, valid = model.proposal_layer(logits, deltas, tf.constant(image_info))
    outputs = postprocess.unpack_detections(
        model({"images": canvas, "image_info": image_info}), 0)
    got = {
        "config": config, "canvas": canvas[0], "image_info": image_info[0],
        "features": [np.asarray(f[0]) for f in features],
        "proposals": np.asarray(proposals[0])[np.asarray(valid[0])],
        "boxes": outputs["boxes"], "scores": outputs["scores"],
        "labels": outputs["category_ids"], "masks": outputs["masks"],
    }
    return {"image": image, "torch": want, "keras": got, "model": model, "torch_model": torch_model}


def _matched_detections(want, got):
    """Index into `got` of the same-label detection overlapping each of `want`'s the most."""
    overlaps = pairwise_iou(want["boxes"], got["boxes"])
    overlaps[want["labels"][:, None] != got["labels"][None, :]] = -1
    return overlaps.argmax(axis=1), overlaps.max(axis=1)


def test_converted_model_has_torchvision_labels(parity):
    config = parity["keras"]["config"]
    assert config.num_classes == 90 and config.dataset_category_ids() == tuple(range(1, 91))
    assert config.class_names == TORCHVISION_COCO_CLASS_NAMES
    # Label l is COCO category l; ids COCO left unused are "N/A", as torchvision lists them.
    assert (config.class_names[0], config.class_names[11], config.class_names[12]) == (
        "person", "N/A", "stop sign")
    assert config.class_names[89] == "toothbrush"


def test_resize_and_normalisation_match(parity):
    want, got = parity["torch"], parity["keras"]
    assert want["image_size"] == tuple(got["image_info"][1:3].astype(int)) == (800, 1320)
    assert want["images"].shape == got["canvas"].shape == (800, 1344, 3)
    config = got["config"].input
    normalised = (got["canvas"] - np.array(config.pixel_mean)) / np.array(config.pixel_std)
    normalised[:, 1320:] = 0  # the model zeroes the padding after normalising, as torchvision pads
    diff = np.abs(normalised - want["images"]).max()
    _report("resized and normalised input", max_abs_diff=diff, scale=np.abs(want["images"]).max())
    assert diff <= 1e-3


def test_backbone_and_fpn_features_match(parity):
    for level, (want, got) in enumerate(zip(parity["torch"]["features"], parity["keras"]["features"]), 2):
        assert want.shape == got.shape
        scale = np.abs(want).max()
        diff = np.abs(want - got).max()
        _report(f"P{level} {want.shape[:2]}", max_abs_diff=diff, scale=scale, relative=diff / scale)
        assert diff <= 1e-3 * scale


def test_rpn_proposals_match(parity):
    want, got = parity["torch"]["proposals"], parity["keras"]["proposals"]
    assert len(want) == len(got) == 1000  # post-NMS top-k: the proposals are not degenerate
    overlaps = pairwise_iou(want[:NUM_COMPARED_PROPOSALS], got[:NUM_COMPARED_PROPOSALS])
    best = overlaps.max(axis=1)
    same_rank = np.mean(overlaps.argmax(axis=1) == np.arange(NUM_COMPARED_PROPOSALS))
    _report(f"top {NUM_COMPARED_PROPOSALS} proposals", min_iou=best.min(), same_rank_fraction=same_rank,
            max_corner_diff=np.abs(want[:NUM_COMPARED_PROPOSALS] - got[:NUM_COMPARED_PROPOSALS]).max())
    everywhere = pairwise_iou(want, got).max(axis=1)
    _report("all proposals", fraction_matched=np.mean(everywhere >= 0.99))
    assert best.min() >= 0.99


def test_detections_match(parity):
    want, got = parity["torch"], parity["keras"]
    assert len(want["boxes"]) == len(got["boxes"]) == 100
    match, overlap = _matched_detections(want, got)
    box_diff = np.abs(want["boxes"] - got["boxes"][match]).max()
    score_diff = np.abs(want["scores"] - got["scores"][match]).max()
    _report("detections", min_iou=overlap.min(), max_box_diff_px=box_diff, max_score_diff=score_diff,
            same_rank_fraction=np.mean(match == np.arange(len(match))))
    assert len(set(match)) == len(match)
    assert box_diff <= 0.5 and score_diff <= 1e-3


def test_pasted_masks_match(parity):
    want, got = parity["torch"], parity["keras"]
    match, _ = _matched_detections(want, got)
    pasted = postprocess.paste_mask_probabilities(
        got["masks"][match], got["boxes"][match], IMAGE_HW, method="torchvision")
    want_masks, got_masks = want["masks"] >= 0.5, pasted >= 0.5
    union = (want_masks | got_masks).sum(axis=(1, 2))
    iou = (want_masks & got_masks).sum(axis=(1, 2)) / np.maximum(union, 1)
    _report("pasted masks", min_iou=iou[union > 0].min(), max_prob_diff=np.abs(want["masks"] - pasted).max(),
            non_empty=np.sum(union > 0))
    assert np.sum(union > 0) >= len(union) // 2
    assert iou[union > 0].min() >= 0.99


# Any image shape: landscape 4:3, portrait 3:4, an odd size, and one torchvision leaves unresized.
@pytest.mark.parametrize("image_hw", [(480, 640), (640, 480), (427, 640), (800, 1216)])
def test_detections_match_at_any_image_shape(parity, image_hw):
    from keras_maskrcnn.inference import KerasPredictor

    torch, _ = _torch()
    torch_model = parity["torch_model"]
    image = _photo_like_image(*image_hw, seed=sum(image_hw))
    want = _run_torchvision(torch, torch_model, image)
    got = KerasPredictor(parity["model"]).predict([image], full_masks=False)[0]
    got = {"boxes": got["boxes"], "scores": got["scores"], "labels": got["category_ids"],
           "masks": got["masks"]}
    assert len(want["boxes"]) >= 50  # random weights still leave many detections to compare
    match, overlap = _matched_detections(want, got)
    matched = overlap >= 0.99
    box_diff = np.abs(want["boxes"] - got["boxes"][match])[matched].max()
    score_diff = np.abs(want["scores"] - got["scores"][match])[matched].max()
    pasted = postprocess.paste_mask_probabilities(
        got["masks"][match], got["boxes"][match], image_hw, method="torchvision") >= 0.5
    want_masks = want["masks"] >= 0.5
    union = (want_masks | pasted).sum(axis=(1, 2))
    mask_iou = (want_masks & pasted).sum(axis=(1, 2)) / np.maximum(union, 1)
    mask_iou = mask_iou[matched & (union > 0)]
    _report(f"{image_hw} → canvas {want['images'].shape[:2]}", matched=matched.mean(),
            max_box_diff_px=box_diff, max_score_diff=score_diff, min_mask_iou=mask_iou.min(),
            detections=len(want["boxes"]))
    assert matched.mean() >= 0.98
    assert box_diff <= 0.5 and score_diff <= 1e-4
    assert len(mask_iou) >= len(want["boxes"]) // 2 and mask_iou.min() >= 0.98


# The converter's parts.

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


def test_transposed_convolution_kernels_need_no_flip():
    torch, _ = _torch()
    import keras

    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(5, 3, 2, 2)).astype(np.float32)  # [in, out, kh, kw]
    inputs = rng.normal(size=(1, 4, 6, 5)).astype(np.float32)
    layer = torch.nn.ConvTranspose2d(5, 3, 2, stride=2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(kernel))
        want = layer(torch.from_numpy(inputs).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    ours = keras.layers.Conv2DTranspose(3, 2, strides=2, use_bias=False)
    ours.build(inputs.shape)
    ours.set_weights([kernel.transpose(2, 3, 1, 0)])
    np.testing.assert_allclose(np.asarray(ours(inputs)), want, atol=1e-5)


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


def test_legacy_key_names_convert_alike(state_dict):
    from keras_maskrcnn.config import torchvision_r50_fpn
    from keras_maskrcnn.convert.torchvision import keras_weights

    _, values = state_dict
    legacy = {}
    for name, value in values.items():
        name = name.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for blocks in ("inner_blocks", "layer_blocks"):
            for level in range(4):
                name = name.replace(f"fpn.{blocks}.{level}.0.", f"fpn.{blocks}.{level}.")
        for index in range(4):
            name = name.replace(f"mask_head.{index}.0.", f"mask_head.mask_fcn{index + 1}.")
        legacy[name] = value
    assert legacy.keys() != values.keys()
    config = torchvision_r50_fpn()
    want, got = keras_weights(values, config), keras_weights(legacy, config)
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_batch_norm_statistics_fold_into_scale_and_offset(state_dict):
    from keras_maskrcnn.config import TORCHVISION_BATCH_NORM_EPSILON, torchvision_r50_fpn
    from keras_maskrcnn.convert.torchvision import keras_weights

    _, values = state_dict
    weights = keras_weights(values, torchvision_r50_fpn(), TORCHVISION_BATCH_NORM_EPSILON)
    prefix = "backbone.body.layer2.0.bn2"
    scale = values[f"{prefix}.weight"] / np.sqrt(values[f"{prefix}.running_var"])
    np.testing.assert_allclose(weights["backbone/layer2_block0/bn2/gamma"], scale, rtol=1e-6)
    np.testing.assert_allclose(weights["backbone/layer2_block0/bn2/beta"],
                               values[f"{prefix}.bias"] - values[f"{prefix}.running_mean"] * scale,
                               rtol=1e-5, atol=1e-7)
    assert not weights["backbone/layer2_block0/bn2/moving_mean"].any()


def test_unknown_entries_are_reported(state_dict):
    from keras_maskrcnn.config import torchvision_r50_fpn
    from keras_maskrcnn.convert.torchvision import keras_weights

    _, values = state_dict
    with pytest.raises(ValueError, match="no place for.*roi_heads.keypoint_head.weight"):
        keras_weights({**values, "roi_heads.keypoint_head.weight": np.zeros(3)}, torchvision_r50_fpn())
    without_fc6 = {name: value for name, value in values.items() if "fc6" not in name}
    with pytest.raises(ValueError, match="no roi_heads.box_head.fc6.weight"):
        keras_weights(without_fc6, torchvision_r50_fpn())


def test_missing_torch_names_the_extra(monkeypatch, tmp_path):
    from keras_maskrcnn.convert.torchvision import load_state_dict

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r'\[torch\] extra, pip install -e "\.\[torch\]"') as error:
        load_state_dict(tmp_path / "missing.pth")
    assert "pip install keras-maskrcnn" not in str(error.value)  # PyPI's is another project


def test_convert_torchvision_reports_user_errors(tmp_path, capsys):
    _torch()
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    for checkpoint, out, message in (
            ("missing.pth", "model.keras", "missing.pth does not exist"),
            ("notes.pth", "model.keras", "cannot read .*notes.pth as a torch state dict"),
            ("notes.pth", "model.h5", "model.h5: the converted model's file name must end in .keras")):
        code = cli.main(["convert-torchvision", str(tmp_path / checkpoint), "--out", str(tmp_path / out)])
        err = capsys.readouterr().err
        assert code == cli.USER_ERROR_EXIT_CODE
        assert re.search(message, err.strip().splitlines()[-1]), err

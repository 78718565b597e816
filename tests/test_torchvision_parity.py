"""Parity with torchvision's `maskrcnn_resnet50_fpn`, stage by stage and end to end.

A randomly initialised torchvision model (with random batch-norm statistics, so that their
conversion is exercised) is saved, converted by `keras-maskrcnn convert-torchvision`, and both
run on photo-like images. Stage by stage on one: its 640 × 1056 pixels become 800 × 1320 under
torchvision's rule (short side 800, long side ≤ 1333), padded to 800 × 1344 by both. End to end
(detections and pasted masks through the `Predictor`) on images of other shapes and
orientations, whose canvases torchvision rounds to multiples of 32 as our canvas per image
does. Both models are built once for the module; `pytest -s` prints the measured differences.
"""

import dataclasses

import numpy as np
import pytest

from keras_maskrcnn import cli, postprocess, preprocessing
from keras_maskrcnn.config import TORCHVISION_COCO_CLASS_NAMES
from keras_maskrcnn.model import rebuild
from reference_boxes import pairwise_iou
from torch_imports import import_torch as _torch
from torch_imports import random_torchvision_maskrcnn

pytestmark = pytest.mark.slow  # builds, converts or trains models: see pytest.ini

IMAGE_HW = (640, 1056)
# Random weights score every class about 1/91, below the default threshold of 0.05.
SCORE_THRESHOLD = 0.005
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
def parity(tmp_path_factory):
    """Both models' stage outputs on the same image."""
    import tensorflow as tf

    from keras_maskrcnn.inference import load_model

    torch, _ = _torch()
    torch_model = random_torchvision_maskrcnn(SCORE_THRESHOLD)
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

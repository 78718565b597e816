"""Tests for keras_maskrcnn.inference.Predictor: what every kind of predictor shares."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import reference_paste
from reference_boxes import pairwise_iou

from keras_maskrcnn import preprocessing
from keras_maskrcnn.config import PASTE_METHODS, tiny
from keras_maskrcnn.inference import KerasPredictor, Predictor, predict_in_batches, with_precision
from keras_maskrcnn.model import HOST_PATH, STATIC_PATH, rebuild

MASKS = np.random.default_rng(0).uniform(size=(2, 28, 28)).astype(np.float32)
BOXES = np.array([[3.2, 5.7, 30.1, 22.4], [10.5, -4.0, 39.0, 59.5]], np.float32)


class _FixedPredictor(Predictor):
    """Detects the same two objects in every image."""

    def __init__(self, paste_method):
        self.config = tiny(detection=dict(paste_method=paste_method))

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


def _noisy_images(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8) for hw in shapes]


def _per_image_canvas_model(model):
    """`model` rebuilt with size limits, which give it a canvas per image (tiny's is 128²)."""
    config = model.model_config
    return rebuild(model, config.replace(input=dataclasses.replace(config.input,
                                                                    size_limits=(96, 160))))


@pytest.mark.slow
def test_canvas_per_image_runs_one_trace_for_every_canvas(untrained_tiny_model):
    model = _per_image_canvas_model(untrained_tiny_model)
    predictor = KerasPredictor(model)
    # Canvases 96 × 160, 160 × 96 and (a batch of both) 160 × 160: none is the config's 128².
    for shapes in ([(96, 160)], [(200, 120)], [(200, 120), (60, 100)]):
        images = _noisy_images(shapes)
        canvases, image_info = preprocessing.preprocess_for_model(images, model.model_config.input)
        want = model({"images": canvases, "image_info": image_info})
        for index, got in enumerate(predictor.predict(images)):
            count = int(want["num_detections"][index])
            assert count > 0
            np.testing.assert_allclose(got["boxes"], np.asarray(want["detection_boxes"][index, :count]),
                                       atol=1e-3)
            np.testing.assert_allclose(got["scores"], np.asarray(want["detection_scores"][index, :count]),
                                       atol=1e-5)
    assert predictor._forward.experimental_get_tracing_count() == 1


def test_forward_runs_the_model_alone_and_detect_unpacks_it(untrained_tiny_model):
    predictor = KerasPredictor(untrained_tiny_model)
    images = _noisy_images([(96, 160), (128, 100)])
    canvases, image_info = preprocessing.preprocess_for_model(images, predictor.config.input)
    outputs = predictor.forward(canvases, image_info)
    want = untrained_tiny_model.infer({"images": tf.constant(canvases),
                                       "image_info": tf.constant(image_info)}, HOST_PATH)
    assert set(outputs) == set(want)
    for name, value in outputs.items():
        assert isinstance(value, np.ndarray) and value.shape[0] == 2
        np.testing.assert_allclose(value, want[name], atol=1e-4)
    assert outputs["num_detections"].min() > 0
    for index, found in enumerate(predictor.detect(images)):
        count = outputs["num_detections"][index]
        np.testing.assert_array_equal(found["boxes"], outputs["detection_boxes"][index, :count])
        np.testing.assert_array_equal(found["scores"], outputs["detection_scores"][index, :count])


@pytest.mark.slow
def test_bfloat16_predictor_computes_in_bfloat16_and_finds_what_float32_finds(untrained_tiny_model):
    import keras

    bfloat16 = with_precision(untrained_tiny_model, "bfloat16")
    assert bfloat16.backbone.compute_dtype == "bfloat16"
    assert bfloat16.mask_head.compute_dtype == "bfloat16"
    assert untrained_tiny_model.backbone.compute_dtype == "float32"  # the original is unchanged
    assert with_precision(untrained_tiny_model, "float32") is untrained_tiny_model
    for seed in (1, 2):
        images = _noisy_images([(96, 160), (128, 100)], seed=seed)
        canvases, image_info = preprocessing.preprocess_for_model(
            images, untrained_tiny_model.model_config.input)
        want_features = untrained_tiny_model.extract_features(canvases, image_info)
        got_features = bfloat16.extract_features(canvases, image_info)
        for want, got in zip(want_features, got_features):
            assert got.dtype == "bfloat16"
            want, got = np.asarray(want), np.asarray(got, np.float32)
            # bfloat16 keeps 8 significant bits (0.4 %); measured 0.8–1.5 % after the FPN.
            assert np.abs(got - want).max() <= 0.03 * np.abs(want).max()
        want = KerasPredictor(untrained_tiny_model).predict(images)
        got = KerasPredictor(bfloat16).predict(images)
        for w, g in zip(want, got):
            assert g["boxes"].dtype == np.float32 and g["masks"].dtype == np.float32
            # Random weights score near-ties, so ranks may swap; the objects stay (measured
            # 90–100 % of float32's 20 found again, best scores within 0.011).
            found = ((pairwise_iou(w["boxes"], g["boxes"]) >= 0.5)
                     & (w["category_ids"][:, None] == g["category_ids"][None])).any(axis=1)
            assert len(w["boxes"]) > 0 and found.mean() >= 0.8
            np.testing.assert_allclose(np.sort(g["scores"])[::-1][:5],
                                       np.sort(w["scores"])[::-1][:5], atol=0.02)
    with pytest.raises(ValueError, match="float16.*choose one of"):
        with_precision(untrained_tiny_model, "float16")
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow
def test_host_path_gives_the_static_paths_outputs(untrained_tiny_model):
    """`infer(inputs, HOST_PATH)` (by-level RoIAlign, the mask head on the detections only)
    gives what `model(inputs)` (the STATIC_PATH) gives."""
    config = untrained_tiny_model.model_config
    images = _noisy_images([(96, 160), (128, 100)], seed=3)
    canvases, image_info = preprocessing.preprocess_for_model(images, config.input)
    inputs = {"images": canvases, "image_info": image_info}
    scores = np.sort(np.asarray(untrained_tiny_model(inputs)["detection_scores"]), axis=1)[:, ::-1]
    # Just above the largest 10th score: every image keeps at most 9 of its K slots.
    threshold = float(scores[:, 9].max()) + 1e-6
    model = rebuild(untrained_tiny_model, config.replace(
        detection=dataclasses.replace(config.detection, score_threshold=threshold)))
    want = {name: np.asarray(value) for name, value in model(inputs).items()}
    got = {name: np.asarray(value) for name, value in model.infer(inputs, HOST_PATH).items()}
    static = {name: np.asarray(value) for name, value in model.infer(inputs, STATIC_PATH).items()}
    for name, value in want.items():
        np.testing.assert_array_equal(static[name], value, err_msg=name)
    assert 0 < want["num_detections"].max() < config.detection.max_detections
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
    np.testing.assert_array_equal(got["detection_classes"], want["detection_classes"])
    for name in ("detection_boxes", "detection_scores", "detection_masks"):
        np.testing.assert_allclose(got[name], want[name], atol=1e-4, err_msg=name)


def test_inference_paths_are_named_and_call_takes_no_switch(untrained_tiny_model):
    """`call` has no argument that switches algorithms; `infer` names its path."""
    import inspect

    assert list(inspect.signature(untrained_tiny_model.call).parameters) == ["inputs", "training"]
    with pytest.raises(ValueError, match="unknown inference path 'tflite'.*static.*host"):
        untrained_tiny_model.infer({}, "tflite")

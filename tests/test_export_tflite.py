"""TFLite export: builtin ops only in every variant, and float32 LiteRT agrees with Keras."""

import warnings

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from keras_maskrcnn import postprocess, preprocessing
from keras_maskrcnn.config import tiny
from keras_maskrcnn.export.int8 import layer_paths
from keras_maskrcnn.export.litert import TFLitePredictor, list_operators, read_config, read_int8_report
from keras_maskrcnn.export.tflite import (QUANTIZATIONS, FixedCanvasNotice, builtin_ops_model,
                                         export_tflite)
from keras_maskrcnn.inference import KerasPredictor
from keras_maskrcnn.model import MaskRCNN

pytestmark = pytest.mark.slow  # builds, converts or trains models: see pytest.ini


def _images():
    """Three noisy uint8 images of different sizes, each with two coloured rectangles."""
    rng = np.random.default_rng(0)
    images = []
    for height, width in ((128, 128), (90, 160), (200, 120)):
        image = np.clip(rng.normal(80, 15, (height, width, 3)), 0, 255).astype(np.uint8)
        image[height // 8:height // 2, width // 6:width // 2] = (210, 40, 40)
        image[height // 2:height - 5, width // 2:width - 4] = (40, 200, 60)
        images.append(image)
    return images


@pytest.fixture(scope="module")
def converted(tmp_path_factory, untrained_tiny_model):
    """({variant: model}, {variant: .tflite path}): one conversion per variant, the suite's
    only int8 one among them.

    The float variants convert the random-init tiny model. int8 converts a tiny model no
    untrained score passes (threshold 0.99): its calibration sees only dropped candidates and
    padded empty boxes, whose -inf markers and log(0) levels once made int8 conversion fail.
    """
    silent = MaskRCNN(tiny(detection=dict(score_threshold=0.99, max_detections=20,
                                          pre_nms_topk=256)), seed=0)
    models = {quantize: silent if quantize == "int8" else untrained_tiny_model
              for quantize in QUANTIZATIONS}
    root = tmp_path_factory.mktemp("tflite")
    paths = {quantize: export_tflite(models[quantize], root / f"model_{quantize}.tflite",
                                     quantize, representative_images=_images()[:2],
                                     held_out_images=_images()[2:])
             for quantize in QUANTIZATIONS}
    return models, paths


@pytest.mark.parametrize("quantize", QUANTIZATIONS)
def test_only_builtin_operators(converted, quantize):
    _, paths = converted
    operators = list_operators(paths[quantize])
    assert not [name for name in operators if name.startswith("CUSTOM")], operators
    assert "NON_MAX_SUPPRESSION_V4" in operators


def test_builtin_ops_model_copies_only_a_crop_and_resize_model():
    gather_model = MaskRCNN(tiny(), roi_align_impl="gather")
    assert builtin_ops_model(gather_model) is gather_model
    crop_model = MaskRCNN(tiny(), roi_align_impl="crop_and_resize")
    copy = builtin_ops_model(crop_model)
    assert copy.roi_align_impl == "gather"
    for got, want in zip(copy.get_weights(), crop_model.get_weights()):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("quantize", QUANTIZATIONS)
def test_config_is_stored_in_the_file(converted, quantize):
    models, paths = converted
    model = models[quantize]
    assert read_config(paths[quantize]) == model.model_config
    assert TFLitePredictor(paths[quantize]).config == model.model_config


def test_int8_quantizes_the_layers_and_keeps_post_processing_float(converted):
    models, paths = converted
    path, config = paths["int8"], models["int8"].model_config
    canvas, image_info = preprocessing.preprocess_batch(_images()[:1], config.input.image_size)
    assert TFLitePredictor(path).run(canvas, image_info)["num_detections"][0] == 0
    interpreter = Interpreter(model_path=str(path))
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    output_dtypes, float_layer_ops = {}, []
    for op in interpreter._get_ops_details():
        dtypes = {tensors[i]["dtype"] for i in op["outputs"]}
        output_dtypes.setdefault(op["op_name"], []).append(dtypes)
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED") and np.int8 not in dtypes:
            float_layer_ops.extend(tensors[i]["name"] for i in op["outputs"])
    assert all(dtypes == {np.int8} for dtypes in output_dtypes["FULLY_CONNECTED"])
    # The convs kept float are the ones the report names (int8's coarse-step check).
    report = read_int8_report(path)
    assert set(layer_paths(float_layer_ops)) <= set(report.float_layers)
    assert len(float_layer_ops) < len(output_dtypes["CONV_2D"]) / 4
    for op_name in ("EXP", "LOG", "SOFTMAX", "TOPK_V2", "SELECT_V2", "LOGISTIC"):
        assert all(np.int8 not in dtypes for dtypes in output_dtypes[op_name]), op_name
    assert report.calibration_images == 2 and report.held_out_images == 1


@pytest.mark.parametrize("quantize", QUANTIZATIONS)
def test_every_variant_runs_in_litert(converted, quantize):
    models, paths = converted
    model = models[quantize]
    canvas, image_info = preprocessing.preprocess_batch(_images()[:1], model.model_config.input.image_size)
    outputs = TFLitePredictor(paths[quantize]).run(canvas, image_info)
    max_detections = model.model_config.detection.max_detections
    assert outputs["detection_boxes"].shape == (1, max_detections, 4)
    assert outputs["detection_masks"].shape == (1, max_detections, 28, 28)
    assert 0 <= outputs["num_detections"][0] <= max_detections
    assert np.all(np.isfinite(outputs["detection_scores"]))


def test_float32_matches_keras_on_the_same_input(converted):
    models, paths = converted
    model = models["none"]
    predictor = TFLitePredictor(paths["none"], num_threads=2)
    for image in _images():
        canvas, image_info = preprocessing.preprocess_batch([image], model.model_config.input.image_size)
        want = {name: np.asarray(value)
                for name, value in model({"images": canvas, "image_info": image_info}).items()}
        got = predictor.run(canvas, image_info)
        assert set(got) == set(want)
        num = int(want["num_detections"][0])
        assert num > 0, "the test model should detect something"
        assert int(got["num_detections"][0]) == num
        np.testing.assert_array_equal(got["detection_classes"][0, :num], want["detection_classes"][0, :num])
        np.testing.assert_allclose(got["detection_boxes"][0, :num], want["detection_boxes"][0, :num], atol=1.0)
        np.testing.assert_allclose(got["detection_scores"][0, :num], want["detection_scores"][0, :num],
                                   atol=1e-4)
        image_hw = image.shape[:2]
        got_masks = postprocess.paste_masks(got["detection_masks"][0, :num], got["detection_boxes"][0, :num],
                                            image_hw)
        want_masks = postprocess.paste_masks(want["detection_masks"][0, :num],
                                             want["detection_boxes"][0, :num], image_hw)
        for got_mask, want_mask in zip(got_masks, want_masks):
            union = np.count_nonzero(got_mask | want_mask)
            if union:
                assert np.count_nonzero(got_mask & want_mask) / union >= 0.98


def test_predictor_gives_keras_predictor_detections(converted):
    models, paths = converted
    model = models["none"]
    images = _images()
    got = TFLitePredictor(paths["none"]).predict(images)
    # One image at a time, as the TFLite graph runs them.
    want = [KerasPredictor(model).predict([image])[0] for image in images]
    assert len(got) == len(want)
    for got_detections, want_detections in zip(got, want):
        assert set(got_detections) == set(want_detections)
        np.testing.assert_array_equal(got_detections["category_ids"], want_detections["category_ids"])
        np.testing.assert_allclose(got_detections["boxes"], want_detections["boxes"], atol=1.0)
        np.testing.assert_allclose(got_detections["masks"], want_detections["masks"], atol=1e-3)


CAMERA_SIZES = ((96, 160), (200, 120))  # landscape and portrait frames, neither the canvas


@pytest.fixture(scope="module")
def camera_files(tmp_path_factory, untrained_tiny_model):
    """{camera size: float32 .tflite file taking uint8 frames of that size}."""
    root = tmp_path_factory.mktemp("camera")
    return {size: export_tflite(untrained_tiny_model, root / f"camera_{size[0]}x{size[1]}.tflite",
                                camera_size=size)
            for size in CAMERA_SIZES}


@pytest.mark.parametrize("camera_size", CAMERA_SIZES)
def test_camera_file_takes_uint8_frames_and_gives_the_keras_detections(
        camera_files, untrained_tiny_model, camera_size):
    path = camera_files[camera_size]
    assert not [name for name in list_operators(path) if name.startswith("CUSTOM")]
    (frame_input,) = Interpreter(model_path=str(path)).get_input_details()
    assert frame_input["dtype"] == np.uint8
    assert tuple(frame_input["shape"]) == (1, *camera_size, 3)
    frame = preprocessing.resize_exactly(_images()[2], camera_size)
    want, = KerasPredictor(untrained_tiny_model).detect([frame])
    got, = TFLitePredictor(path).detect([frame])
    assert len(want["scores"]) > 0, "nothing detected: this test would check nothing"
    np.testing.assert_array_equal(got["category_ids"], want["category_ids"])
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1.0)
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-3)
    assert got["boxes"][:, 2].max() <= camera_size[0] and got["boxes"][:, 3].max() <= camera_size[1]


def test_camera_file_resizes_other_images_to_its_frame_and_boxes_back(camera_files):
    predictor = TFLitePredictor(camera_files[CAMERA_SIZES[0]])
    image = _images()[1]  # 90 × 160, not the frame's 96 × 160
    got, = predictor.detect([image])
    frame = preprocessing.resize_exactly(image, CAMERA_SIZES[0])
    on_frame, = predictor.detect([frame])
    scale = np.tile(np.array(image.shape[:2]) / np.array(CAMERA_SIZES[0]), 2)
    np.testing.assert_allclose(got["boxes"], on_frame["boxes"] * scale, rtol=1e-5, atol=1e-3)


def test_phone_runner_uses_the_file_alone(camera_files, tmp_path, capsys, monkeypatch):
    import importlib.util
    import pathlib
    from PIL import Image

    spec = importlib.util.spec_from_file_location(
        "run_phone_model", pathlib.Path(__file__).parent.parent / "examples" / "run_phone_model.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    monkeypatch.setattr(runner, "SCORE_THRESHOLD", 0.0)  # the random model's scores are low
    image_path = tmp_path / "frame.png"
    Image.fromarray(_images()[0]).save(image_path)
    path = camera_files[CAMERA_SIZES[0]]
    runner.main(str(path), str(image_path), num_threads=1)
    out = capsys.readouterr().out
    assert "as a 96×160 frame" in out
    config = read_config(path)
    names = runner.class_names(runner.read_config(path))
    assert sorted(names) == list(config.dataset_category_ids())
    assert any(f"  {name}: score" in out for name in names.values())
    want = TFLitePredictor(path).detect([runner.resize_nearest(_images()[0], 96, 160)])[0]
    assert f"{len(want['scores'])} detections" in out


def test_a_canvas_per_image_model_runs_each_camera_frame_on_the_frames_own_canvas(
        untrained_tiny_model, tmp_path):
    import dataclasses

    from keras_maskrcnn.model import rebuild

    config = untrained_tiny_model.model_config
    model = rebuild(untrained_tiny_model, config.replace(input=dataclasses.replace(
        config.input, image_size=(96, 160), size_limits=(96, 160))))
    camera_size = (200, 120)  # portrait: scale 0.8 → 160 × 96, its own canvas
    with warnings.catch_warnings():
        warnings.simplefilter("error", FixedCanvasNotice)  # a camera file has no fixed canvas
        path = export_tflite(model, tmp_path / "camera.tflite", camera_size=camera_size)
    assert read_config(path).input.image_size == (160, 96)
    frame = preprocessing.resize_exactly(_images()[2], camera_size)
    want, = KerasPredictor(model).detect([frame])
    got, = TFLitePredictor(path).detect([frame])
    assert len(want["scores"]) > 0
    np.testing.assert_array_equal(got["category_ids"], want["category_ids"])
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1.0)
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-3)
    with pytest.warns(FixedCanvasNotice, match="fixed 96x160 canvas"):
        export_tflite(model, tmp_path / "canvas.tflite")

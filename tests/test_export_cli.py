"""`keras-maskrcnn export`, and evaluate / predict / load_predictor on every model kind.

One random-init tiny model with the shapes categories is exported once per format; its low
score threshold makes it detect something untrained.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from keras_maskrcnn import cli, commands, visualize
from keras_maskrcnn.config import tiny
from keras_maskrcnn.data.shapes import CATEGORIES
from keras_maskrcnn.evaluation import IOU_TYPES
from keras_maskrcnn.export import litert, tflite
from keras_maskrcnn.export.int8 import Int8Report
from keras_maskrcnn.export.litert import TFLitePredictor, list_operators, read_config
from keras_maskrcnn.export.saved_model import CONFIG_FILE, SavedModelPredictor
from keras_maskrcnn.inference import KerasPredictor, load_predictor
from keras_maskrcnn.model import MaskRCNN

pytestmark = pytest.mark.slow  # builds, converts or trains models: see pytest.ini

IMAGE_SIZE = 64
TFLITE_CANVAS = (96, 96)  # exported with --input-size, unlike the model's own 128 × 128
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    _, val_ann = commands.make_shapes(root, 1, 2, IMAGE_SIZE, seed=0)
    return Path(val_ann)


@pytest.fixture(scope="module")
def keras_path(tmp_path_factory):
    keras.utils.set_random_seed(0)
    config = tiny(num_classes=len(CATEGORIES), category_ids=tuple(c["id"] for c in CATEGORIES),
                  class_names=tuple(c["name"] for c in CATEGORIES),
                  detection=dict(score_threshold=0.01, max_detections=20, pre_nms_topk=256))
    path = tmp_path_factory.mktemp("keras") / "model.keras"
    MaskRCNN(config, seed=0).save(path)
    return path


@pytest.fixture(scope="module")
def keras_predictor(keras_path):
    return load_predictor(keras_path)


@pytest.fixture(scope="module")
def exported(keras_path, shapes, tmp_path_factory):
    """{"saved_model": folder, "tflite": dynamic-range file at TFLITE_CANVAS}, both written by
    the CLI. (The suite's one int8 conversion is in test_export_tflite.py; the CLI's int8 route
    is checked up to the converter below.)"""
    root = tmp_path_factory.mktemp("exported")
    paths = {"saved_model": root / "saved_model", "tflite": root / "model_dynamic.tflite"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["export", "--model", str(keras_path), "--format", "saved_model",
                         "--out", str(paths["saved_model"])]) == 0
    # A float32 export says so in its first line (a bfloat16 one adds the CPU's conv rates).
    assert printed.getvalue().splitlines()[0] == "precision: float32"
    assert cli.main(["export", "--model", str(keras_path), "--format", "tflite",
                     "--quantize", "dynamic", "--input-size", *map(str, TFLITE_CANVAS),
                     "--out", str(paths["tflite"])]) == 0
    return paths


def test_int8_export_calibrates_on_the_first_images_and_checks_on_the_next(
        keras_path, shapes, tmp_path, monkeypatch, capsys):
    calls = []

    def convert(model, out, quantize, representative_images, held_out_images, camera_size):
        calls.append((model.model_config.input.image_size, quantize, representative_images,
                      held_out_images))
        return out

    report = Int8Report(calibration_images=1, held_out_images=1, float_layers=("rpn_head",),
                        reference_detections=10, int8_detections=9, matched=8,
                        max_score_difference=0.1)
    monkeypatch.setattr(tflite, "export_tflite", convert)
    monkeypatch.setattr(litert, "read_int8_report", lambda path: report)
    assert cli.main(["export", "--model", str(keras_path), "--format", "tflite", "--quantize",
                     "int8", "--calibration-data", str(shapes), "--calibration-images", "1",
                     "--input-size", *map(str, TFLITE_CANVAS),
                     "--out", str(tmp_path / "model.tflite")]) == 0
    (canvas, quantize, images, held_out), = calls
    assert canvas == TFLITE_CANVAS and quantize == "int8" and len(images) == len(held_out) == 1
    assert images[0].shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and images[0].dtype == np.uint8
    assert not np.array_equal(images[0], held_out[0])
    out = capsys.readouterr().out
    assert "rpn_head" in out and "agreement 80.0%" in out
    assert "WARNING: int8 agreement 80.0% is below 90%" in out


def _val_images(shapes):
    return sorted((shapes.parent / "images").glob("*.png"))


def test_export_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", "--help"])
    assert exit_info.value.code == 0
    assert "usage: keras-maskrcnn export" in capsys.readouterr().out


def test_exports_keep_the_config(keras_predictor, exported):
    config = keras_predictor.config
    assert (exported["saved_model"] / "saved_model.pb").is_file()
    assert (exported["saved_model"] / CONFIG_FILE).is_file()
    stored = read_config(exported["tflite"])
    assert stored.class_names == config.class_names
    assert stored.dataset_category_ids() == config.dataset_category_ids()
    assert stored.input.image_size == TFLITE_CANVAS
    assert not [name for name in list_operators(exported["tflite"]) if name.startswith("CUSTOM")]


def test_load_predictor_dispatches_on_the_kind(keras_predictor, exported):
    assert isinstance(keras_predictor, KerasPredictor)
    tflite_predictor = load_predictor(exported["tflite"], num_threads=2)
    assert isinstance(tflite_predictor, TFLitePredictor)
    assert tflite_predictor.image_size == TFLITE_CANVAS
    saved_model_predictor = load_predictor(exported["saved_model"])
    assert isinstance(saved_model_predictor, SavedModelPredictor)
    for predictor in (keras_predictor, tflite_predictor, saved_model_predictor):
        assert predictor.config.class_names == tuple(c["name"] for c in CATEGORIES)

    rng = np.random.default_rng(0)
    # Two sizes, interleaved: the SavedModel predictor groups them and must keep the order.
    images = [rng.integers(0, 255, shape, dtype=np.uint8)
              for shape in ((64, 64, 3), (48, 80, 3), (64, 64, 3))]
    got = saved_model_predictor.predict(images)
    for found, want in zip(got, keras_predictor.predict(images)):
        assert len(want["scores"]) > 0, "the test model should detect something"
        np.testing.assert_array_equal(found["category_ids"], want["category_ids"])
        np.testing.assert_allclose(found["boxes"], want["boxes"], atol=0.5)
        np.testing.assert_allclose(found["scores"], want["scores"], atol=1e-4)


@pytest.mark.parametrize("kind", ["saved_model", "tflite"])
def test_evaluate_an_export(kind, exported, shapes, tmp_path, run_cli):
    metrics_path = tmp_path / "metrics.json"
    threads = ["--threads", "2"] if kind == "tflite" else []
    code, out, err = run_cli("evaluate", "--model", exported[kind], "--data", shapes,
                             "--out", metrics_path, *threads)
    assert code == 0, err
    assert "AP50" in out
    with open(metrics_path) as f:
        metrics = json.load(f)
    assert set(IOU_TYPES) <= set(metrics)
    assert (metrics["images_evaluated"], metrics["images_skipped"]) == (2, 0)


@pytest.mark.parametrize("kind", ["saved_model", "tflite"])
def test_predict_with_an_export(kind, exported, shapes, tmp_path, run_cli):
    images = _val_images(shapes)
    out_dir = tmp_path / "predictions"
    code, _, err = run_cli("predict", "--model", exported[kind], *images, "--out", out_dir,
                           "--score-threshold", "0")
    assert code == 0, err
    side = IMAGE_SIZE * visualize.canvas_scale(IMAGE_SIZE, IMAGE_SIZE)  # drawn upscaled
    for image in images:
        with Image.open(out_dir / image.name) as drawn:
            assert drawn.size == (side, side)
    with open(out_dir / "predictions.json") as f:
        results = json.load(f)
    assert results and {result["category_id"] for result in results} <= {c["id"] for c in CATEGORIES}


def test_saved_model_cli_runs_serve_images(keras_predictor, exported, tmp_path):
    images = np.random.default_rng(1).integers(0, 255, (1, 64, 80, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run(
        [SAVED_MODEL_CLI, "run", "--dir", str(exported["saved_model"]), "--tag_set", "serve",
         "--signature_def", "serve_images", "--inputs", f"images={tmp_path / 'images.npy'}",
         "--outdir", str(tmp_path / "outputs")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    want = keras_predictor.predict([images[0]])[0]
    num = int(np.load(tmp_path / "outputs" / "num_detections.npy")[0])
    assert num == len(want["scores"]) > 0
    boxes = np.load(tmp_path / "outputs" / "detection_boxes.npy")[0, :num]
    np.testing.assert_allclose(boxes, want["boxes"], atol=0.5)


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("problem", [
    "int8 without calibration", "input size", "tflite suffix", "quantized saved model",
    "unknown kind", "folder", "threads for keras", "not tflite"])
def test_user_errors_exit_2_with_one_line(problem, keras_path, shapes, tmp_path, run_cli):
    export = ["export", "--model", keras_path]
    evaluate = ["evaluate", "--data", shapes, "--model"]
    (tmp_path / "empty").mkdir()
    argv, must_name = {
        "int8 without calibration": (export + ["--format", "tflite", "--quantize", "int8", "--out",
                                               tmp_path / "m.tflite"], "--calibration-data"),
        "input size": (export + ["--format", "tflite", "--input-size", "100", "96", "--out",
                                 tmp_path / "m.tflite"], "multiples of 32"),
        "tflite suffix": (export + ["--format", "tflite", "--out", tmp_path / "m.bin"],
                          str(tmp_path / "m.bin")),
        "quantized saved model": (export + ["--format", "saved_model", "--quantize", "float16",
                                            "--out", tmp_path / "sm"], "--quantize"),
        "unknown kind": (evaluate + [_write(tmp_path / "model.onnx", "x")], str(tmp_path / "model.onnx")),
        "folder": (evaluate + [tmp_path / "empty"], str(tmp_path / "empty")),
        "threads for keras": (evaluate + [keras_path, "--threads", "2"], str(keras_path)),
        "not tflite": (evaluate + [_write(tmp_path / "fake.tflite", "not a model")],
                       str(tmp_path / "fake.tflite")),
    }[problem]
    code, _, err = run_cli(*argv)
    assert code == 2
    assert must_name in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_export_prints_the_fixed_canvas_notice_as_a_note(keras_path, tmp_path, monkeypatch, capsys):
    def convert(model, out, *args):
        warnings.warn("the TFLite file runs one fixed 64x64 canvas", tflite.FixedCanvasNotice)
        return out

    monkeypatch.setattr(tflite, "export_tflite", convert)
    assert cli.main(["export", "--model", str(keras_path), "--format", "tflite",
                     "--out", str(tmp_path / "model.tflite")]) == 0
    out = capsys.readouterr().out
    assert "note: the TFLite file runs one fixed 64x64 canvas" in out

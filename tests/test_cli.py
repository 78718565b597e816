"""The keras-maskrcnn command line on a few 64-px shapes images and one 2-step training run."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from keras_maskrcnn import cli, training, visualize
from keras_maskrcnn.evaluation import IOU_TYPES, METRIC_NAMES
from keras_maskrcnn.model import LOSS_NAMES
from keras_maskrcnn.train_config import TrainConfig

COMMANDS = ("make-shapes", "train", "evaluate", "predict", "demo", "export", "show-data", "convert-torchvision",
            "serve")
IMAGE_SIZE = 64  # the size of the `shapes` fixture's images (conftest.py)
# pycocotools reports -1 for area ranges without ground truth; these always have some.
ALWAYS_DEFINED = ("AP", "AP50", "AP75")


@pytest.fixture(scope="module")
def run_dir(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = cli.main(["train", "--train", str(shapes / "train" / "annotations.json"),
                     "--val", str(shapes / "val" / "annotations.json"), "--preset", "tiny",
                     "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
                     "--out", str(out)])
    assert code == 0
    return out


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_each_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: keras-maskrcnn {command}" in capsys.readouterr().out


def test_python_m_help_lists_commands_without_importing_tensorflow_or_the_server():
    result = subprocess.run([sys.executable, "-m", "keras_maskrcnn", "--help"],
                            capture_output=True, text=True, check=True)
    assert all(command in result.stdout for command in COMMANDS)
    probe = ("import sys; from keras_maskrcnn import cli; cli.build_parser(); "
             "print([name for name in ('tensorflow', 'starlette', 'uvicorn') if name in sys.modules])")
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              check=True)
    assert imported.stdout.strip() == "[]"


@pytest.mark.slow
def test_commands_keep_tensorflows_log_lines_off_unless_verbose(tmp_path):
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    # show-data imports TensorFlow and runs ops (a GPU probe prints "failed call to cuInit").
    def show_data(*extra):
        return subprocess.run([sys.executable, "-m", "keras_maskrcnn", "show-data",
                               str(tmp_path / "missing.json"), "--out", str(tmp_path), *extra],
                              capture_output=True, text=True, env=env)
    quiet = show_data()
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines() == [
        f"keras-maskrcnn show-data: error: {tmp_path / 'missing.json'}: annotation file not found"]
    verbose = show_data("--verbose")
    assert verbose.returncode == 2 and len(verbose.stderr.strip().splitlines()) > 1


def test_make_shapes_writes_both_splits(shapes):
    for split, count in (("train", 4), ("val", 2)):
        with open(shapes / split / "annotations.json") as f:
            images = json.load(f)["images"]
        assert len(images) == count
        for image in images:
            with Image.open(shapes / split / image["file_name"]) as pixels:
                assert pixels.size == (IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.slow
def test_train_writes_model_and_history(run_dir):
    assert (run_dir / training.MODEL_FILE).is_file()
    with open(run_dir / training.HISTORY_FILE) as f:
        history = json.load(f)
    for name in LOSS_NAMES + ("loss",):
        for key in (name, f"val_{name}"):
            assert len(history[key]) == 1 and np.isfinite(history[key][0])
    assert len(history["train_seconds"]) == 1 and history["train_seconds"][0] > 0


@pytest.mark.slow
def test_evaluate_writes_metrics(shapes, run_dir, tmp_path, run_cli):
    metrics_path = tmp_path / "metrics.json"
    code, out, _ = run_cli("evaluate", "--model", run_dir / training.MODEL_FILE,
                           "--data", shapes / "val" / "annotations.json", "--batch-size", "2",
                           "--out", metrics_path)
    assert code == 0
    assert all(name in out for name in METRIC_NAMES)
    with open(metrics_path) as f:
        metrics = json.load(f)
    assert (metrics.pop("images_evaluated"), metrics.pop("images_skipped")) == (2, 0)
    assert metrics.pop("bad_data")["counts"] == {}
    assert sorted(metrics) == sorted(IOU_TYPES)
    for values in metrics.values():
        assert sorted(values) == sorted(METRIC_NAMES)
        assert all(0.0 <= values[name] <= 1.0 for name in ALWAYS_DEFINED)


@pytest.fixture(scope="module")
def detecting_model(untrained_tiny_model, tmp_path_factory):
    """The random-init tiny model, which detects something in any image, saved: a barely
    trained model may find nothing, and a predict test on it would check nothing."""
    path = tmp_path_factory.mktemp("detecting") / "model.keras"
    untrained_tiny_model.save(path)
    return path


@pytest.mark.slow
def test_predict_writes_pngs_and_results(shapes, detecting_model, tmp_path, run_cli):
    images = sorted((shapes / "val" / "images").glob("*.png"))
    out_dir = tmp_path / "predictions"
    code, _, _ = run_cli("predict", "--model", detecting_model, *images,
                         "--out", out_dir, "--score-threshold", "0")
    assert code == 0
    for image in images:
        with Image.open(out_dir / image.name) as drawn:
            # Small images are drawn on an upscaled canvas.
            side = IMAGE_SIZE * visualize.canvas_scale(IMAGE_SIZE, IMAGE_SIZE)
            assert drawn.size == (side, side) and side >= visualize.MIN_CANVAS_SIDE
            assert drawn.mode == "RGB"
    with open(out_dir / "predictions.json") as f:
        results = json.load(f)
    assert results, "the model predicted nothing: this test would check nothing"
    for result in results:
        assert result["file_name"] in {str(image) for image in images}
        assert {"image_id", "category_id", "bbox", "score", "segmentation"} <= set(result)
        assert len(result["bbox"]) == 4 and 0.0 <= result["score"] <= 1.0


@pytest.mark.slow
def test_predict_reads_folders_and_skips_bad_images_counting_them(shapes, run_dir, tmp_path,
                                                                   run_cli):
    folder = tmp_path / "photos"
    shutil.copytree(shapes / "val" / "images", folder)
    first = sorted(folder.glob("*.png"))[0]
    (folder / "cut.png").write_bytes(first.read_bytes()[:100])  # a cut-off file
    (folder / "notes.txt").write_text("not an image")
    missing = tmp_path / "missing.jpg"
    out_dir = tmp_path / "predictions"
    code, stdout, stderr = run_cli("predict", "--model", run_dir / training.MODEL_FILE, folder,
                                   missing, "--out", out_dir, "--score-threshold", "0")
    assert code == 0, stderr
    good = sorted(path.name for path in (shapes / "val" / "images").glob("*.png"))
    assert f"in {len(good)} images written" in stdout and "2 images skipped" in stdout
    assert sorted(path.name for path in out_dir.glob("*.png")) == good
    with open(out_dir / "skipped.json") as f:
        skipped = json.load(f)
    assert [entry["file_name"] for entry in skipped] == [str(folder / "cut.png"), str(missing)]
    assert "truncated" in skipped[0]["problem"] and "not found" in skipped[1]["problem"]

    code, _, stderr = run_cli("predict", "--model", run_dir / training.MODEL_FILE, folder,
                              "--out", tmp_path / "stopped", "--on-bad-image", "error")
    assert code == 2 and f"{folder / 'cut.png'}: image is truncated" in stderr


@pytest.mark.slow
def test_demo_runs_every_step(run_dir, tmp_path, monkeypatch, run_cli):
    # Training is covered above; here it is replaced by a copy of that run to keep the test fast.
    calls = []

    def fake_train(config):
        calls.append(config)
        shutil.copytree(run_dir, config.out)

    monkeypatch.setattr(training, "train", fake_train)
    out = tmp_path / "demo"
    code, stdout, _ = run_cli("demo", "--out", out, "--train-images-count", "2",
                              "--val-images-count", "2", "--epochs", "1", "--steps-per-epoch", "1",
                              "--batch-size", "2")
    assert code == 0
    data = os.path.join(str(out), "data")
    assert calls == [TrainConfig(train=os.path.join(data, "train", "annotations.json"),
                                 preset="tiny", epochs=1, steps_per_epoch=1, batch_size=2,
                                 out=os.path.join(str(out), "run"), seed=0, cache=True)]
    assert (out / "data" / "val" / "annotations.json").is_file()
    with open(out / "metrics.json") as f:
        assert set(IOU_TYPES) <= set(json.load(f))
    assert len(list((out / "predictions").glob("*.png"))) == 2
    assert (out / "predictions" / "predictions.json").is_file()
    assert "AP50" in stdout and "Training took" in stdout


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["missing annotations", "bad json", "missing model",
                                     "missing image"])
def test_user_errors_exit_2_naming_the_file(problem, shapes, run_dir, tmp_path, run_cli):
    val = shapes / "val" / "annotations.json"
    model = run_dir / training.MODEL_FILE
    bad_file, argv = {
        "missing annotations": (tmp_path / "nowhere.json",
                                ["train", "--preset", "tiny", "--out", tmp_path / "run", "--train"]),
        "bad json": (_write(tmp_path / "bad.json", "{not json"),
                     ["evaluate", "--model", model, "--data"]),
        "missing model": (tmp_path / "absent.keras", ["evaluate", "--data", val, "--model"]),
        "missing image": (tmp_path / "absent.png",
                          ["predict", "--model", model, "--out", tmp_path / "p"]),
    }[problem]
    code, _, err = run_cli(*argv, bad_file)
    assert code == 2
    assert str(bad_file) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

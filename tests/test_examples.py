"""The scripts in examples/ run against the current API (shortened where they train)."""

import importlib.util
import pathlib

import pytest

pytestmark = pytest.mark.slow  # builds, converts or trains models: see pytest.ini

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    """examples/NAME.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_shapes_trains_evaluates_and_draws(tmp_path, monkeypatch, capsys):
    example = _load("train_shapes")
    monkeypatch.setattr(example, "NUM_TRAIN", 4)
    monkeypatch.setattr(example, "NUM_VAL", 2)
    monkeypatch.setattr(example, "EPOCHS", 1)
    monkeypatch.setattr(example, "STEPS_PER_EPOCH", 1)
    monkeypatch.setattr(example, "BATCH_SIZE", 2)
    example.main(str(tmp_path))
    out = capsys.readouterr().out
    assert "AP50" in out and f"wrote {tmp_path / 'prediction.png'}" in out
    assert (tmp_path / "prediction.png").is_file()


def test_export_tflite_converts_and_runs_in_litert(untrained_tiny_model, shapes, tmp_path,
                                                   monkeypatch, capsys):
    example = _load("export_tflite")
    # A threshold every untrained detection passes, so the printing loop runs too.
    monkeypatch.setattr(example, "SCORE_THRESHOLD", 0.0)
    model_path = tmp_path / "model.keras"
    untrained_tiny_model.save(model_path)
    image_path = shapes / "val" / "images" / "000000.png"
    example.main(str(model_path), str(image_path))
    out = capsys.readouterr().out
    assert (tmp_path / "model.tflite").is_file()
    assert f"{image_path} (64×64):" in out and "score" in out

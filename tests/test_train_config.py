"""TrainConfig: one set of rules for the command line and Python, a file that repeats a run,
and resumes that refuse other settings."""

import dataclasses
import json
import os

import pytest

from keras_maskrcnn import cli, training
from keras_maskrcnn.callbacks import RunBackup
from keras_maskrcnn.config import PRESETS
from keras_maskrcnn.train_config import (CONFIG_FILE, PRESET_SCHEDULES, SCHEDULE_FIELDS,
                                         TrainConfig, TrainConfigError)


def test_every_training_preset_has_a_schedule():
    assert set(PRESET_SCHEDULES) == set(PRESETS)


def test_resolved_fills_the_presets_schedule_and_keeps_overrides(tmp_path):
    tiny = TrainConfig(train="a.json", preset="tiny").resolved()
    assert tiny.optimizer == "adam" and tiny.batch_size == 8
    assert tiny.weight_decay == 0.05 and tiny.weight_decay_mode == "decoupled"  # AdamW's form
    r50 = TrainConfig(train="a.json", preset="r50_fpn", weight_decay=0.0,
                      backbone_weights="imagenet").resolved()
    assert r50.optimizer == "sgd" and r50.lr_schedule == "step" and r50.weight_decay == 0.0
    assert all(getattr(r50, name) is not None for name in SCHEDULE_FIELDS)
    assert r50.train == os.path.abspath("a.json") and r50.resolved() == r50
    assert r50.weight_decay_mode == "coupled"  # torch's SGD, torchvision's recipe
    adam = TrainConfig(train="a.json", preset="r50_fpn", optimizer="adam",
                       backbone_weights="imagenet").resolved()
    assert adam.weight_decay_mode == "decoupled"
    with pytest.raises(TrainConfigError, match="coupled is torch's SGD"):
        TrainConfig(train="a.json", preset="tiny", weight_decay_mode="coupled").resolved()


def test_round_trip_through_its_file(tmp_path):
    config = TrainConfig(train="a.json", preset="tiny", flips="all", scale_jitter=(0.8, 1.25),
                         input_size=(96, 128), lr_steps=(0.5,), cache="c.cache").resolved()
    path = str(tmp_path / CONFIG_FILE)
    config.save(path)
    assert TrainConfig.load(path) == config


@pytest.mark.parametrize("text, problem", [
    ("{", "not a training config"),
    ("[1, 2]", "a JSON object is expected"),
    ('{"train": "a.json", "preset": "tiny", "epoch": 3}', "unknown settings epoch"),
    ('{"train": "a.json", "preset": "tiny", "epochs": 0}', "epochs (--epochs) must be"),
    ('{"train": "a.json", "preset": "tiny", "batch_size": "8"}', "batch_size (--batch-size)"),
])
def test_a_bad_file_is_refused_naming_it(tmp_path, text, problem):
    path = tmp_path / "settings.json"
    path.write_text(text)
    with pytest.raises(TrainConfigError) as error:
        TrainConfig.load(str(path))
    assert str(error.value).startswith(str(path)) and problem in str(error.value)


@pytest.mark.parametrize("changes, problem", [
    ({"eval_every": 1}, "eval_every (--eval-every) needs val (--val), the set to evaluate on"),
    ({"val_images": "v"}, "val_images (--val-images) needs val (--val)"),
    ({"scale_jitter": (2.0, 1.0)}, "scale_jitter (--scale-jitter): MIN 2.0 exceeds MAX 1.0"),
    ({"flips": "up-down"}, "flips (--flips): unknown value 'up-down'; choose one of"),
    ({"preset": None}, "preset (--preset) is required"),
    ({"preset": "r18"}, "unknown preset 'r18'"),
    ({"trainable_stages": 6}, "trainable_stages (--trainable-stages) must lie in 0..5"),
])
def test_python_and_the_command_line_give_the_same_message(changes, problem, tmp_path, capsys):
    values = dict({"train": "a.json", "preset": "tiny", "out": str(tmp_path / "r")}, **changes)
    with pytest.raises(TrainConfigError) as error:
        TrainConfig(**values)
    assert problem in str(error.value)

    argv = ["train"]
    for name, value in values.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", *map(str, value if isinstance(value, tuple)
                                                          else [value])]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip() == f"keras-maskrcnn train: error: {error.value}"


def test_train_takes_only_a_config():
    with pytest.raises(TrainConfigError, match="takes a TrainConfig"):
        training.train({"train": "a.json", "preset": "tiny"})


def test_cli_config_file_repeats_a_run_and_options_beside_it_replace_its_values(
        tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(training, "train", calls.append)
    written = TrainConfig(train="a.json", preset="tiny", epochs=3, seed=5,
                          out=str(tmp_path / "first")).resolved()
    path = str(tmp_path / CONFIG_FILE)
    written.save(path)
    assert cli.main(["train", "--config", path]) == 0
    assert cli.main(["train", "--config", path, "--out", str(tmp_path / "second"),
                     "--epochs", "4"]) == 0
    assert calls == [written, written.replace(out=str(tmp_path / "second"), epochs=4)]


def _interrupted_run(out, config):
    """A run folder as a run of `config` killed after its first epoch leaves it."""
    config.resolved().save(os.path.join(out, CONFIG_FILE))
    os.makedirs(os.path.join(out, training.BACKUP_DIR))
    with open(os.path.join(out, training.BACKUP_DIR, RunBackup.METADATA_FILE), "w") as f:
        json.dump({"epoch": 1, "weights": "epoch-001.weights.h5"}, f)


def test_resuming_with_other_settings_is_refused_naming_what_changed(tmp_path):
    out = str(tmp_path / "run")
    first = TrainConfig(train="a.json", preset="tiny", out=out, learning_rate=0.01)
    _interrupted_run(out, first)
    training.check_resumable(first.resolved(), 1)
    # Reporting settings may change; what is computed may not.
    training.check_resumable(first.replace(check_images=True).resolved(), 1)
    with pytest.raises(TrainConfigError) as error:
        training.check_resumable(first.replace(learning_rate=0.02, seed=1).resolved(), 1)
    message = str(error.value)
    assert "learning_rate: 0.01 → 0.02" in message and "seed: 0 → 1" in message
    assert f"train --config {os.path.join(out, CONFIG_FILE)}" in message


def test_every_field_has_a_message_free_default():
    # The defaults alone lack only the two required settings.
    with pytest.raises(TrainConfigError, match="train .--train. is required"):
        TrainConfig()
    assert TrainConfig(train="a.json", preset="tiny").seed == 0
    assert all(field.default is not dataclasses.MISSING for field in dataclasses.fields(TrainConfig))

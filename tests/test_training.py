"""The training job: schedules, optimisers, callbacks, the bad-data report and resuming after
a SIGKILL."""

import dataclasses
import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_maskrcnn import atomic, cli, optimization, training
from keras_maskrcnn.callbacks import METRIC_KEYS, CocoEvaluation, HistoryFile, RunBackup
from keras_maskrcnn.config import tiny
from keras_maskrcnn.data import CocoDataset, make_dataset
from keras_maskrcnn.model import MaskRCNN
from keras_maskrcnn.train_config import CONFIG_FILE, TrainConfig
from paused_cli import DRIVER

# One training process of the kill test finishes well within this (about 20 s here, where the
# test's six take 122 s).
RUN_SECONDS = 300


# Schedules and optimisers.

def test_cosine_schedule_with_warmup():
    schedule = optimization.WarmupSchedule(0.1, total_steps=100, warmup_steps=10, kind="cosine")
    rate = lambda step: float(schedule(step))  # noqa: E731
    np.testing.assert_allclose(rate(0), 0.1 * optimization.WARMUP_FACTOR, rtol=1e-5)
    # Halfway through warmup the factor is halfway from WARMUP_FACTOR to 1.
    cosine_5 = 0.05 * (1 + np.cos(np.pi * 0.05))
    np.testing.assert_allclose(rate(5), cosine_5 * (optimization.WARMUP_FACTOR + 1) / 2, rtol=1e-5)
    np.testing.assert_allclose(rate(50), 0.05, rtol=1e-5)
    np.testing.assert_allclose(rate(100), 0.0, atol=1e-9)
    np.testing.assert_allclose(rate(200), 0.0, atol=1e-9)


def test_step_schedule_multiplies_by_a_tenth_at_each_fraction():
    schedule = optimization.WarmupSchedule(0.02, total_steps=90, kind="step", step_fractions=(2 / 3, 8 / 9))
    rates = [float(schedule(step)) for step in (0, 59, 60, 79, 80, 89)]
    np.testing.assert_allclose(rates, [0.02, 0.02, 0.002, 0.002, 0.0002, 0.0002], rtol=1e-5)
    restored = optimization.WarmupSchedule.from_config(schedule.get_config())
    assert float(restored(80)) == float(schedule(80))


def test_optimizers_decay_weights_but_not_normalisation():
    schedule = optimization.WarmupSchedule(0.1, total_steps=10)
    sgd = optimization.make_optimizer("sgd", schedule, weight_decay=0.5, clip_norm=10.0)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == optimization.SGD_MOMENTUM
    assert sgd.global_clipnorm == 10.0
    adam = optimization.make_optimizer("adam", schedule, weight_decay=0.0, clip_norm=0.0)
    assert isinstance(adam, keras.optimizers.Adam)
    assert adam.weight_decay is None and adam.global_clipnorm is None

    layer = keras.layers.BatchNormalization()
    layer.build((None, 3))
    dense = keras.layers.Dense(3, kernel_initializer="ones")
    dense.build((None, 3))
    variables = [dense.kernel, layer.gamma]
    sgd.apply([keras.ops.zeros_like(v) for v in variables], variables)
    # Zero gradients: only decoupled weight decay moves the kernel, and gamma stays.
    assert float(dense.kernel[0, 0]) < 1.0
    assert float(layer.gamma[0]) == 1.0


def test_coupled_weight_decay_decays_kernels_and_biases_but_not_normalisation():
    sgd = optimization.make_optimizer("sgd", 0.1, weight_decay=0.5, clip_norm=10.0,
                                      weight_decay_mode="coupled")
    assert isinstance(sgd, optimization.TorchSGD) and sgd.weight_decay is None
    assert sgd.momentum == optimization.SGD_MOMENTUM and sgd.global_clipnorm == 10.0
    layer = keras.layers.BatchNormalization()
    layer.build((None, 3))
    dense = keras.layers.Dense(3, kernel_initializer="ones", bias_initializer="ones")
    dense.build((None, 3))
    variables = [dense.kernel, dense.bias, layer.gamma, layer.beta]
    sgd.apply([keras.ops.zeros_like(v) for v in variables], variables)
    # Zero gradients: the step is -lr·wd·w on decayed weights only.
    np.testing.assert_allclose([float(dense.kernel[0, 0]), float(dense.bias[0])], [0.95, 0.95],
                               rtol=1e-6)
    assert (float(layer.gamma[0]), float(layer.beta[0])) == (1.0, 0.0)


def test_coupled_weight_decay_sgd_round_trips_through_keras_serialisation():
    schedule = optimization.WarmupSchedule(0.1, total_steps=10, warmup_steps=2)
    sgd = optimization.make_optimizer("sgd", schedule, weight_decay=1e-4,
                                      weight_decay_mode="coupled")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sgd))
    assert isinstance(restored, optimization.TorchSGD)
    assert restored.get_config() == sgd.get_config()


def test_weight_decay_modes_are_checked():
    with pytest.raises(ValueError, match="unknown weight_decay_mode 'l2'"):
        optimization.make_optimizer("sgd", 0.1, weight_decay=1e-4, weight_decay_mode="l2")
    with pytest.raises(ValueError, match="'coupled' is for SGD; adam decays decoupled"):
        optimization.make_optimizer("adam", 0.1, weight_decay=1e-4, weight_decay_mode="coupled")


# Callbacks.

def test_history_file_keeps_earlier_epochs_on_resume(tmp_path):
    path = str(tmp_path / "history.json")
    first = HistoryFile(path)
    first.on_epoch_end(0, {"loss": 3.0})
    first.on_epoch_end(1, {"loss": 2.0, "val_bbox_AP": 0.5})
    first.on_epoch_end(2, {"loss": 1.5})
    # A run resumed after epoch 1 (index 0) rewrites epochs 1 and 2.
    resumed = HistoryFile(path)
    resumed.on_epoch_end(1, {"loss": 2.5})
    assert resumed.read() == {"loss": [3.0, 2.5], "val_bbox_AP": [None, None]}
    resumed.on_epoch_end(2, {"loss": 1.0, "val_bbox_AP": 0.25})
    assert resumed.read() == {"loss": [3.0, 2.5, 1.0], "val_bbox_AP": [None, None, 0.25]}


@pytest.mark.slow
def test_coco_evaluation_adds_ap_to_the_logs_every_n_epochs(shapes):
    dataset = CocoDataset(str(shapes / "val" / "annotations.json"))
    keras.utils.set_random_seed(0)
    model = MaskRCNN(tiny(num_classes=dataset.num_classes, category_ids=tuple(dataset.category_ids)))
    callback = CocoEvaluation(dataset, every=2, batch_size=2)
    callback.set_model(model)
    callback.set_params({"epochs": 3})
    logs = {"loss": 1.0}
    callback.on_epoch_end(0, logs)
    assert logs == {"loss": 1.0}
    for epoch in (1, 2):  # every second epoch, and the last
        logs = {"loss": 1.0}
        callback.on_epoch_end(epoch, logs)
        assert set(logs) == {"loss"} | set(METRIC_KEYS)
        assert all(-1.0 <= logs[key] <= 1.0 for key in METRIC_KEYS)


# Whole runs.

@pytest.mark.slow
def test_train_reports_bad_data_and_writes_the_run_folder(shapes, tmp_path, capsys):
    annotations = json.loads((shapes / "train" / "annotations.json").read_text())
    annotations["images"].append({"id": 99, "file_name": "images/absent.png", "height": 64,
                                  "width": 64})
    first = annotations["annotations"][0]
    annotations["annotations"].append(dict(first, id=999, category_id=12345))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(annotations))
    out = tmp_path / "run"
    config = TrainConfig(train=str(bad), train_images=str(shapes / "train"),
                         val=str(shapes / "val" / "annotations.json"), preset="tiny", epochs=1,
                         steps_per_epoch=1, batch_size=2, out=str(out), eval_every=1,
                         scale_jitter=(0.8, 1.2), rois_per_image=16, box_normalizer="sampled")
    history = training.train(config)
    stdout = capsys.readouterr().out
    assert "missing_image" in stdout and "unknown_category" in stdout and "absent.png" in stdout
    with open(out / training.BAD_DATA_FILE) as f:
        report = json.load(f)
    assert report["train"]["counts"] == {"missing_image": 1, "unknown_category": 1}
    assert report["val"]["counts"] == {}
    assert set(METRIC_KEYS) <= set(history) and len(history["loss"]) == 1
    trained = keras.saving.load_model(out / training.MODEL_FILE)
    assert trained.model_config.roi.samples_per_image == 16 and trained.num_fg_slots == 4
    assert trained.model_config.loss.box_normalizer == "sampled"  # tiny's preset: "positives"
    assert (out / "checkpoints" / "epoch-001.keras").is_file()
    assert any(name.startswith("events") for name in os.listdir(out / training.LOG_DIR / "train"))
    assert not (out / training.BACKUP_DIR).exists()  # removed once the run has finished
    # The run folder records every setting, resolved: the preset's schedule and absolute paths.
    written = TrainConfig.load(str(out / CONFIG_FILE))
    assert written == config.resolved() and written.optimizer == "adam"
    assert written.train == str(bad) and os.path.isabs(written.out)


@pytest.mark.slow
def test_a_fresh_run_trains_on_the_seeds_first_batch_first(shapes, tmp_path):
    """A run's first step takes the seed's first batch (start_batch 0): the logged loss of a
    one-step run is the starting model's loss on that batch, not on the batch after it. The
    kill chain cannot see a shift shared by every run; this can."""
    config = TrainConfig(train=str(shapes / "train" / "annotations.json"), preset="tiny",
                         input_size=(64, 64), epochs=1, steps_per_epoch=1, batch_size=2,
                         optimizer="sgd", seed=3, scale_jitter=(0.8, 1.2),
                         out=str(tmp_path / "run"))
    logged = training.train(config)["loss"][0]
    resolved = config.resolved()
    train_set = CocoDataset(resolved.train)
    model = training.build_model(resolved, train_set)  # seeded: the run's starting weights

    def loss_on_batch(start_batch):
        batches = make_dataset(train_set, (64, 64), resolved.batch_size, resolved.max_instances,
                               model.model_config.mask_head.gt_mask_size, training=True,
                               seed=resolved.seed, flips=resolved.flips,
                               scale_jitter=resolved.scale_jitter, repeat=True,
                               start_batch=start_batch, global_batch_size=resolved.batch_size)
        model.sampling_step.assign(0)  # the run's first sampling seeds
        return float(model.compute_losses(next(iter(batches)))["loss"])

    first, second = loss_on_batch(0), loss_on_batch(1)
    assert abs(first - second) > 1e-3 * abs(first)  # the two batches tell apart
    np.testing.assert_allclose(logged, first, rtol=1e-5)


# One kill of each kind, in a chain: each process is killed at its moment, the next reruns
# the same command and resumes after epoch 1; bench/kill_sweep.py kills at more moments.
KILL_CHAIN = ["val_step#2",             # validating epoch 2 (epoch 1 backed up)
              "train_step",             # mid-epoch 2, after its first step
              "write:history.json",     # writing epoch 2's history
              "write:epoch-002.keras"]  # writing epoch 2's checkpoint


@pytest.mark.slow
def test_a_run_killed_at_each_kind_of_moment_resumes_to_the_uninterrupted_runs_weights(
        shapes, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    val = str(shapes / "val" / "annotations.json")

    def start(out, kill_at=None):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        if kill_at:
            env["KILL_AT"] = kill_at
        return subprocess.Popen(
            [sys.executable, str(driver), "train", "--train",
             str(shapes / "train" / "annotations.json"), "--val", val, "--preset", "tiny",
             "--input-size", "64", "64", "--epochs", "2", "--steps-per-epoch", "2",
             "--batch-size", "2", "--seed", "3", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def finish(process):
        try:
            stdout, stderr = process.communicate(timeout=RUN_SECONDS)
        finally:
            process.kill()
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def train(out, kill_at=None):
        return finish(start(out, kill_at))

    # The uninterrupted run goes beside the chain: each process is mostly single-threaded
    # start-up and tracing, so the two share the 2 cores well.
    whole_run = start(tmp_path / "whole")
    try:
        out = tmp_path / "killed"
        for kill_at in KILL_CHAIN:
            killed = train(out, kill_at)
            assert killed.returncode == -signal.SIGKILL, f"{kill_at}: {killed.stderr[-2000:]}"
            assert training.resumed_epoch(str(out)) == 1, kill_at
        resumed = train(out)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert "resuming" in resumed.stdout and "after epoch 1" in resumed.stdout
    finally:
        whole = finish(whole_run)
    assert whole.returncode == 0, whole.stderr[-2000:]

    whole = keras.saving.load_model(tmp_path / "whole" / training.MODEL_FILE, compile=False)
    restarted = keras.saving.load_model(out / training.MODEL_FILE, compile=False)
    assert len(whole.weights) == len(restarted.weights)
    for a, b in zip(whole.weights, restarted.weights):
        assert a.path == b.path
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7, err_msg=a.path)
    with open(tmp_path / "whole" / training.HISTORY_FILE) as f:
        whole_history = json.load(f)
    with open(out / training.HISTORY_FILE) as f:
        restarted_history = json.load(f)
    for key in ("loss", "val_loss"):
        assert len(restarted_history[key]) == 2
        np.testing.assert_allclose(restarted_history[key], whole_history[key], rtol=1e-6)
    assert sorted(os.listdir(out / "checkpoints")) == ["epoch-001.keras", "epoch-002.keras"]
    assert not (out / training.BACKUP_DIR).exists()


def test_run_backup_marks_an_epoch_done_only_once_its_weights_are_whole(tmp_path):
    """A kill between the backup's two writes leaves the previous epoch's pair in force."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    directory = str(tmp_path / "backup")
    backup = RunBackup(directory)
    backup.set_model(model)
    backup.on_epoch_end(0)
    first = model.get_weights()
    model.set_weights([w + 1 for w in first])
    # Epoch 2's weights written in full, its metadata not yet: epoch 1 still counts.
    model.save_weights(os.path.join(directory, "epoch-002.weights.h5"))
    assert RunBackup.finished_epochs(directory) == 1
    backup.on_train_begin()
    for restored, saved in zip(model.get_weights(), first):
        np.testing.assert_array_equal(restored, saved)
    backup.on_epoch_end(1)
    assert RunBackup.finished_epochs(directory) == 2
    assert sorted(os.listdir(directory)) == ["epoch-002.weights.h5", RunBackup.METADATA_FILE]
    backup.on_train_end()
    assert not os.path.exists(directory) and RunBackup.finished_epochs(directory) == 0


def test_atomic_writes_leave_the_old_file_when_the_writer_fails(tmp_path):
    path = str(tmp_path / "history.json")
    atomic.write_json({"loss": [1.0]}, path)
    with pytest.raises(RuntimeError), atomic.written_atomically(path) as temporary:
        with open(temporary, "w") as f:
            f.write('{"loss": [1.0, 0.')  # a writer that dies half way
        raise RuntimeError("killed")
    with open(path) as f:
        assert json.load(f) == {"loss": [1.0]}
    assert os.listdir(tmp_path) == ["history.json"]
    # Keras picks the format from the suffix, which the temporary name keeps.
    assert atomic.temporary_path("/r/checkpoints/epoch-002.keras").endswith(".keras")
    assert atomic.temporary_path("/r/backup/epoch-002.weights.h5") == \
        "/r/backup/.epoch-002.partial.weights.h5"


def test_cli_train_passes_every_option(shapes, tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(training, "train", calls.append)
    ann = str(shapes / "train" / "annotations.json")
    code = cli.main(["train", "--train", ann, "--val", ann, "--preset", "r50_fpn", "--out", "r",
                     "--on-bad-data", "error", "--check-images", "--scale-jitter", "0.5", "2",
                     "--cache", "--eval-every", "2", "--optimizer", "adam", "--warmup-steps", "5",
                     "--lr-schedule", "step", "--lr-steps", "0.5", "0.75", "--weight-decay", "0",
                     "--clip-norm", "1.5", "--init-from", "coco.keras", "--input-size", "256", "320",
                     "--rois-per-image", "128", "--trainable-stages", "3", "--backbone-weights",
                     "resnet50.h5", "--max-instances", "7", "--seed", "4", "--epochs", "2",
                     "--steps-per-epoch", "3", "--batch-size", "4", "--learning-rate", "0.5",
                     "--train-images", "i", "--val-images", "v", "--weight-decay-mode",
                     "decoupled", "--box-normalizer", "positives", "--backbone-norm", "bn"])
    assert code == 0
    assert calls == [TrainConfig(
        train=ann, val=ann, preset="r50_fpn", out="r", on_bad_data="error", check_images=True,
        scale_jitter=(0.5, 2.0), cache=True, eval_every=2, optimizer="adam", warmup_steps=5,
        lr_schedule="step", lr_steps=(0.5, 0.75), weight_decay=0.0, clip_norm=1.5,
        init_from="coco.keras", input_size=(256, 320), rois_per_image=128, trainable_stages=3,
        backbone_weights="resnet50.h5", max_instances=7, seed=4, epochs=2, steps_per_epoch=3,
        batch_size=4, learning_rate=0.5, train_images="i", val_images="v",
        weight_decay_mode="decoupled", box_normalizer="positives", backbone_norm="bn")]
    # Every field of the config is an option of the command.
    options = {action.dest for action in cli.build_parser()._subparsers._group_actions[0]
               .choices["train"]._actions}
    assert {field.name for field in dataclasses.fields(TrainConfig)} <= options


@pytest.mark.parametrize("argv, problem", [
    (["--scale-jitter", "2", "1"], "MIN 2.0 exceeds MAX 1.0"),
    (["--batch-size", "2", "--backbone-weights", "missing_resnet50.h5"],
     "missing_resnet50.h5: cannot load backbone weights"),
    (["--batch-size", "2", "--backbone-weights", "resnet50.pth"],
     "resnet50.pth: a torchvision ResNet needs"),
    (["--eval-every", "1"], "eval_every (--eval-every) needs val (--val)"),
    (["--input-size", "100", "128"], "multiples of 32"),
    (["--lr-steps", "1.5"], "lr_steps (--lr-steps) must be increasing fractions"),
    (["--weight-decay", "-1"], "weight_decay (--weight-decay) must not be negative"),
    (["--trainable-stages", "6"], "trainable_stages (--trainable-stages) must lie in 0..5"),
    (["--rois-per-image", "3"], "rois_per_image (--rois-per-image) must be at least 4"),
    (["--epochs", "0"], "epochs (--epochs) must be a whole number of at least 1"),
    (["--optimizer", "rmsprop"], "optimizer (--optimizer): unknown value 'rmsprop'"),
    (["--on-bad-data", "ignore"], "on_bad_data (--on-bad-data): unknown value 'ignore'"),
])
def test_cli_train_rejects_inconsistent_options(shapes, tmp_path, argv, problem, capsys):
    code = cli.main(["train", "--train", str(shapes / "train" / "annotations.json"), "--preset",
                     "tiny", "--out", str(tmp_path / "r")] + argv)
    assert code == 2 and problem in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--epochs", "two"], ["--freeze-backbone", "--trainable-stages", "2"]])
def test_cli_train_rejects_bad_values(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--train", "a.json", "--preset", "tiny", "--out", "r"] + argv)
    assert exit_info.value.code == 2

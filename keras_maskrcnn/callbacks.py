"""Keras callbacks of the training job: COCO evaluation during training, epoch timing, and
the files that let a killed run resume: the history, per-epoch checkpoints and the backup.

Every file is written atomically (`atomic`), so a kill at any moment leaves each one either
as it was or whole; the backup's metadata file is written last and is what marks an epoch as
done.

Shapes: none; callbacks see scalar logs. COCO AP is `evaluation.evaluate_predictor`'s.
"""

import glob
import json
import os
import shutil
import time

import keras

from keras_maskrcnn import atomic, evaluation
from keras_maskrcnn.inference import KerasPredictor

# Keys added to the epoch logs, and so to the history and TensorBoard.
METRIC_KEYS = {"val_bbox_AP": ("bbox", "AP"), "val_segm_AP": ("segm", "AP"),
               "val_bbox_AP50": ("bbox", "AP50"), "val_segm_AP50": ("segm", "AP50")}


class CocoEvaluation(keras.callbacks.Callback):
    """COCO bbox and segm AP on a validation set every `every` epochs and after the last.

    Adds METRIC_KEYS to the epoch's logs. List it before callbacks that read the logs
    (TensorBoard, ModelCheckpoint): Keras calls callbacks in list order.

    Args:
      dataset: a `CocoDataset` (cleaned by a `BadDataPolicy` if one is used).
      every: evaluate after epochs every, 2·every, ... (1-based).
      batch_size: images per forward pass.
      bad_data: a `BadDataPolicy` that images failing to decode are reported to (and, in mode
        "skip", left out of the evaluation); None lets the error stop training.
    """

    def __init__(self, dataset, every=1, batch_size=8, bad_data=None):
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.dataset = dataset
        self.every = every
        self.batch_size = batch_size
        self.bad_data = bad_data

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 == self.params.get("epochs")
        if logs is None or ((epoch + 1) % self.every and not last):
            return
        metrics = self.evaluate()
        for key, (iou_type, name) in METRIC_KEYS.items():
            logs[key] = metrics[iou_type][name]

    def evaluate(self):
        """Predict every readable image and run COCOeval → {"bbox": {...}, "segm": {...}}."""
        return evaluation.evaluate_predictor(KerasPredictor(self.model), self.dataset,
                                             self.batch_size, self.bad_data)


class EpochTimer(keras.callbacks.Callback):
    """Adds three wall times to each epoch's logs, in seconds:

    - `train_seconds`: from the epoch's start to the end of its last training step. Images per
      second are steps_per_epoch · batch_size / train_seconds.
    - `val_seconds`: `fit`'s validation pass (from its first callback to its last; 0 without
      one).
    - `epoch_seconds`: from the epoch's start to this callback's `on_epoch_end`, so training,
      validation and whatever `fit` does between them, but not the callbacks listed after
      this one (history, checkpoints, backup). epoch − train − val is time lost in between.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = self.last_step_end = time.perf_counter()
        self.val_seconds = 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.last_step_end = time.perf_counter()

    def on_test_begin(self, logs=None):
        self.val_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self.val_seconds += time.perf_counter() - self.val_start

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["train_seconds"] = self.last_step_end - self.epoch_start
            logs["val_seconds"] = self.val_seconds
            logs["epoch_seconds"] = time.perf_counter() - self.epoch_start


class HistoryFile(keras.callbacks.Callback):
    """Writes the per-epoch logs to a JSON file after every epoch.

    The file holds metric name → list indexed by epoch; an epoch without a value (COCO AP
    between evaluations) holds null. A run resumed at epoch e keeps the file's first e
    entries, so after a restart the file still covers the whole run.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path

    def read(self):
        """The history written so far → dict (empty if there is no file)."""
        if not os.path.isfile(self.path):
            return {}
        with open(self.path) as f:
            return json.load(f)

    def on_epoch_end(self, epoch, logs=None):
        history = self.read()
        names = set(history) | set(logs or {})
        for name in names:
            values = history.get(name, [])[:epoch]
            values += [None] * (epoch - len(values))
            value = (logs or {}).get(name)
            values.append(None if value is None else float(value))
            history[name] = values
        atomic.write_json(dict(sorted(history.items())), self.path)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (`.keras`) after every epoch to `pattern.format(epoch=N)`, N
    counted from 1, atomically."""

    def __init__(self, pattern):
        super().__init__()
        self.pattern = pattern

    def on_epoch_end(self, epoch, logs=None):
        path = self.pattern.format(epoch=epoch + 1)
        with atomic.written_atomically(path) as temporary:
            self.model.save(temporary)


class RunBackup(keras.callbacks.Callback):
    """What a killed run resumes from: after every epoch, the weights (model and optimiser,
    with the schedule's step and the sampling counter) in `directory`, and at the start of
    training, the weights of the last finished epoch restored.

    Each epoch's weights go to a file of their own, `epoch-NNN.weights.h5`; then METADATA_FILE,
    {"epoch": N, "weights": that file's name}, is replaced: that is the moment the epoch counts
    as done. A kill before it leaves the previous epoch's pair in force; a kill after it, the
    new one. Older weights files are deleted after. When training ends, `on_train_end` (list
    this callback after the one that saves the final model) deletes METADATA_FILE first, then
    the folder. Keras' `BackupAndRestore` writes its weights and metadata in place, so a kill
    between the two pairs a new weights file with the previous epoch, or leaves a metadata
    file that is not JSON.
    """

    METADATA_FILE = "training_metadata.json"
    # The weights file of runs backed up by keras.callbacks.BackupAndRestore.
    KERAS_WEIGHTS_FILE = "latest.weights.h5"

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    @classmethod
    def finished_epochs(cls, directory):
        """Epochs a backup in `directory` holds (0 when there is none)."""
        return cls.read_metadata(directory).get("epoch", 0)

    @classmethod
    def read_metadata(cls, directory):
        path = os.path.join(directory, cls.METADATA_FILE)
        if not os.path.isfile(path):
            return {}
        with open(path) as f:
            return json.load(f)

    def on_train_begin(self, logs=None):
        metadata = self.read_metadata(self.directory)
        if not metadata:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(
            self.directory, metadata.get("weights", self.KERAS_WEIGHTS_FILE)))

    def on_epoch_end(self, epoch, logs=None):
        name = f"epoch-{epoch + 1:03d}.weights.h5"
        with atomic.written_atomically(os.path.join(self.directory, name)) as temporary:
            self.model.save_weights(temporary)
        atomic.write_json({"epoch": epoch + 1, "weights": name},
                          os.path.join(self.directory, self.METADATA_FILE))
        for path in glob.glob(os.path.join(self.directory, "*.weights.h5")):
            if os.path.basename(path) != name:
                os.remove(path)

    def on_train_end(self, logs=None):
        atomic.remove(os.path.join(self.directory, self.METADATA_FILE))
        shutil.rmtree(self.directory, ignore_errors=True)


class FinalModel(keras.callbacks.Callback):
    """Saves the trained model to `path` (`.keras`, atomically) when training ends: list it
    before `RunBackup`, whose backup must outlive the moment the model is on disk."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_train_end(self, logs=None):
        with atomic.written_atomically(self.path) as temporary:
            self.model.save(temporary)

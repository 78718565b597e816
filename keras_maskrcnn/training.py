"""The training job: COCO-format data in, a trained `.keras` model and its history out.

Shapes: none at this level; see `data.pipeline` for the batches and `model` for the losses.

A run directory holds `train_config.json` (the `TrainConfig` it ran with, resolved),
`model.keras` and `history.json` (at the end), `checkpoints/` (one `.keras` per epoch),
`logs/` (TensorBoard), `bad_data.json` (what `--on-bad-data` found) and, while training,
`backup/`: rerunning the same command (or `train --config RUN_DIR/train_config.json`) after a
crash or a kill resumes from the last finished epoch, with the batches the interrupted run
would have drawn.

With `distribute` "multi-worker" every worker runs the same command: the chief writes the run
directory (which must then be on storage every worker reads), the others write theirs to a
temporary folder, and every worker resumes from the chief's `backup/` (`distribute`).
"""

import dataclasses
import math
import os
import shutil
import sys

import keras
import tensorflow as tf

from keras_maskrcnn import atomic
from keras_maskrcnn.backbones import get_backbone
from keras_maskrcnn.callbacks import (CocoEvaluation, EpochCheckpoint, EpochTimer, FinalModel,
                                      HistoryFile, RunBackup)
from keras_maskrcnn.config import DEFAULT_MAX_IMAGE_PIXELS, preset
from keras_maskrcnn.convert.keras_applications import load_imagenet_backbone
from keras_maskrcnn.convert.torchvision import load_resnet_backbone
from keras_maskrcnn.data import CocoDataset, DataError, make_dataset
from keras_maskrcnn.data.validation import BadDataPolicy, image_folder_hint
from keras_maskrcnn.distribute import (check_batch_split, distributed_batches, make_strategy,
                                       worker_role)
from keras_maskrcnn.finetune import (FinetuneError, copy_matching_weights, describe_copy,
                                     describe_trainable, finetune_config, load_source_model)
from keras_maskrcnn.model import MaskRCNN
from keras_maskrcnn.optimization import WarmupSchedule, make_optimizer
from keras_maskrcnn.precision import dtype_policy, with_loss_scaling
from keras_maskrcnn.train_config import (CONFIG_FILE, PRETRAINED_TRAINABLE_STAGES,
                                         RESUMABLE_CHANGES, TrainConfig, TrainConfigError)

# --backbone-weights files read as torchvision checkpoints; others are keras.applications'.
TORCH_CHECKPOINT_SUFFIXES = (".pth", ".pt")
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.json"
BAD_DATA_FILE = "bad_data.json"
BACKUP_DIR = "backup"
CHECKPOINT_PATTERN = os.path.join("checkpoints", "epoch-{epoch:03d}.keras")
LOG_DIR = "logs"


def open_dataset(annotation_file, image_dir=None, bad_data=None, check_pixels=False,
                 max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS, images_option="--images"):
    """A `CocoDataset`, checked so that a bad file fails here with a message naming it.

    With `bad_data` (a `BadDataPolicy`) every image and annotation is scanned and the dataset
    returned is the cleaned one (`check_pixels` also decodes every image up front); without
    it any missing image file raises. Images over `max_image_pixels` pixels are bad data
    (`data.images`). Messages about missing image files name `images_option`, the option
    that gives the image folder.

    Raises:
      DataError: the annotation file is missing, is not COCO JSON, has no images or
        categories (left), or a bad entry was found in mode "error".
    """
    if not os.path.isfile(annotation_file):
        raise DataError(f"{annotation_file}: annotation file not found")
    try:
        dataset = CocoDataset(annotation_file, image_dir, max_image_pixels=max_image_pixels)
    except (KeyError, TypeError) as error:
        # Structure is checked while reading; this is left for ids of unusable types.
        raise DataError(f"{annotation_file}: not a COCO annotation file ({error!r})") from error
    if not dataset.category_ids:
        raise DataError(f"{annotation_file}: no categories")
    if bad_data is not None:
        dataset = bad_data.scan(dataset, check_pixels, images_option)
    if not dataset.image_ids:
        raise DataError(f"{annotation_file}: no images" if bad_data is None else
                        f"{annotation_file}: no usable images\n{bad_data.summary(annotation_file)}")
    if bad_data is None:
        # A missing image would otherwise stop training mid-epoch inside tf.data.
        missing = [dataset.image_info(i)["path"] for i in dataset.image_ids
                   if not os.path.isfile(dataset.image_info(i)["path"])]
        if missing:
            raise DataError(f"{annotation_file}: {len(missing)} of {len(dataset.image_ids)} image "
                            f"files not found, e.g. {missing[0]}; "
                            f"{image_folder_hint(dataset, images_option)}")
    return dataset


def resumed_epoch(out_dir):
    """Epochs finished by an interrupted run in `out_dir` (0 when there is none to resume)."""
    return int(RunBackup.finished_epochs(os.path.join(out_dir, BACKUP_DIR)))


def train(config):
    """Train the model a `TrainConfig` describes and save it with its history.

    Image folders left as None resolve against the annotation file's folder. Both sets are
    scanned for bad data first (`on_bad_data` "skip" or "error", see `data.validation`) and the
    counts printed. With `val`, the five losses are also computed on the validation set after
    every epoch (`val_` keys in the history), and with `eval_every` N its COCO AP every N
    epochs and after the last (`val_bbox_AP`, `val_segm_AP`, `val_bbox_AP50`, `val_segm_AP50`).
    `flips` (one of FLIPS), `scale_jitter` (min, max) and `cache` are passed to
    `data.make_dataset`.
    With `init_from` (a .keras file) the model is that model's configuration with the training
    set's classes, and starts from its weights (see `finetune`); the preset then gives only the
    schedule defaults. `input_size` (H, W) replaces the canvas, and `rois_per_image` the number
    of proposals sampled per image for the box head (`RoIConfig.samples_per_image`, a quarter of
    them at most foreground for the mask head): fewer train faster. `trainable_stages` N lets only
    the last N backbone parts train (`MaskRCNN.freeze_backbone_stages`; None: all of them).
    `backbone_weights` loads the backbone from ImageNet training: "imagenet" or a
    keras.applications weights file (`convert.keras_applications`), or a torchvision ResNet
    checkpoint ending in .pth or .pt (`convert.torchvision.load_resnet_backbone`). What was
    copied and what trains is printed.
    Python, NumPy and TensorFlow are seeded globally with `seed` so that a run repeats, and a
    run killed after an epoch resumes from `out/backup` when restarted with the same config
    (a different one is refused, naming what changed).
    `distribute`, `cpu_replicas`, `precision` and `jit_compile` choose the devices, the compute
    dtype and XLA (`distribute`, `precision` modules); a global batch trains to the same weights
    on one device or several.
    Writes the run directory described in the module docstring; returns the history dict
    (metric name → list of per-epoch values, None where an epoch has none).

    Raises:
      TrainConfigError: `config` is not a TrainConfig, or differs from the interrupted run's.
      DataError: a data file cannot be used.
      FinetuneError: an `init_from` or backbone weights that cannot be used, or a
        `trainable_stages` the backbone lacks.
    """
    if not isinstance(config, TrainConfig):
        raise TrainConfigError(f"train() takes a TrainConfig, got {type(config).__name__}")
    config = config.resolved()
    # First: logical CPU devices must be set up before TensorFlow initialises its devices.
    strategy = make_strategy(config.distribute, config.cpu_replicas)
    check_batch_split(config.batch_size, strategy)
    role = worker_role(strategy)
    initial_epoch = resumed_epoch(config.out)
    check_resumable(config, initial_epoch)
    run_dir = role.writable_dir(config.out)
    try:
        return _train(config, strategy, run_dir, initial_epoch)
    finally:
        role.finish(run_dir, config.out)


def _train(config, strategy, run_dir, initial_epoch):
    """`train` for a resolved config, writing the run's files to `run_dir` (this worker's)."""
    config.save(os.path.join(run_dir, CONFIG_FILE))

    train_policy = BadDataPolicy(config.on_bad_data)
    train_set = open_dataset(config.train, config.train_images, train_policy,
                             config.check_images, config.max_image_pixels, "--train-images")
    print(train_policy.summary(config.train), flush=True)
    if len(train_set.image_ids) < config.batch_size:
        # Training drops partial batches, so a smaller set would yield no batch at all.
        raise DataError(f"{config.train}: {len(train_set.image_ids)} usable images, fewer than "
                        f"the batch size {config.batch_size}")
    val_set, val_policy = None, BadDataPolicy(config.on_bad_data)
    if config.val is not None:
        val_set = open_dataset(config.val, config.val_images, val_policy, config.check_images,
                               config.max_image_pixels, "--val-images")
        print(val_policy.summary(config.val), flush=True)
        # Labels 1..C come from the sorted category ids, so both sets must share them.
        if val_set.category_ids != train_set.category_ids:
            raise DataError(f"{config.val}: category ids {val_set.category_ids} differ from the "
                            f"training set's {train_set.category_ids}")

    with strategy.scope():
        with dtype_policy(config.precision):
            model = build_model(config, train_set)
        schedule = WarmupSchedule(config.learning_rate, config.total_steps, config.warmup_steps,
                                  config.lr_schedule, config.lr_steps)
        optimizer = make_optimizer(config.optimizer, schedule, config.weight_decay,
                                   config.clip_norm, config.weight_decay_mode)
        model.compile(optimizer=with_loss_scaling(optimizer, config.precision),
                      jit_compile=config.jit_compile)

    if initial_epoch:
        print(f"resuming from {os.path.join(config.out, BACKUP_DIR)} after epoch "
              f"{initial_epoch}", flush=True)
        if run_dir != config.out:  # a worker restores from the chief's backup
            shutil.copytree(os.path.join(config.out, BACKUP_DIR),
                            os.path.join(run_dir, BACKUP_DIR), dirs_exist_ok=True)
    model_config = model.model_config

    def shard_batches(batch_size, shard_index, num_shards):
        return make_dataset(
            train_set, model_config.input.image_size, batch_size, config.max_instances,
            model_config.mask_head.gt_mask_size, training=True, seed=config.seed,
            flips=config.flips, scale_jitter=config.scale_jitter, cache=config.cache,
            bad_data=train_policy, repeat=True, size_limits=model_config.input.size_limits,
            start_batch=initial_epoch * config.steps_per_epoch,
            global_batch_size=config.batch_size, shard_index=shard_index, num_shards=num_shards)

    train_batches = distributed_batches(strategy, shard_batches, config.batch_size)
    val_batches = None if val_set is None else without_autotuning(make_dataset(
        val_set, model_config.input.image_size, config.batch_size, config.max_instances,
        model_config.mask_head.gt_mask_size, training=False, bad_data=val_policy,
        size_limits=model_config.input.size_limits))

    history_file = HistoryFile(os.path.join(run_dir, HISTORY_FILE))
    # Callbacks run in this order: the epoch's time and AP land in the logs before the others
    # read them, the history and checkpoint are written before the backup that marks the epoch
    # as done, and the final model is saved before the backup is removed.
    callbacks = [EpochTimer(), history_file,
                 EpochCheckpoint(os.path.join(run_dir, CHECKPOINT_PATTERN)),
                 keras.callbacks.TensorBoard(os.path.join(run_dir, LOG_DIR),
                                             write_graph=False),
                 FinalModel(os.path.join(run_dir, MODEL_FILE)),
                 RunBackup(os.path.join(run_dir, BACKUP_DIR))]
    if val_set is not None and config.eval_every:
        callbacks.insert(0, CocoEvaluation(val_set, config.eval_every, config.batch_size,
                                           val_policy))
    try:
        model.fit(train_batches, epochs=config.epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=config.steps_per_epoch, validation_data=val_batches,
                  # Given, as skipping bad images leaves the set's length unknown to Keras.
                  validation_steps=None if val_set is None else math.ceil(
                      len(val_set.image_ids) / config.batch_size),
                  callbacks=callbacks,
                  # make_dataset shuffles; Keras cannot shuffle a tf.data.Dataset, warns if asked.
                  shuffle=False, verbose=progress_verbosity())
    except tf.errors.OpError as error:
        # In mode "error" a bad image met inside tf.data surfaces as an OpError; say which.
        for policy in (train_policy, val_policy):
            if policy.raised is not None:
                raise policy.raised from error
        raise
    finally:
        atomic.write_json({"train": train_policy.to_dict(), "val": val_policy.to_dict()},
                          os.path.join(run_dir, BAD_DATA_FILE))
    return history_file.read()


def without_autotuning(batches):
    """`batches` (a tf.data.Dataset) with tf.data's autotuning off, for the validation set.

    `fit` makes a new iterator over the validation set every epoch and drops the previous
    one (Keras' `EpochIterator.reset`). Deleting an autotuned iterator joins its
    `tf_data_model` thread, and inside `fit` that thread was seen to wake only when its
    `Model::OptimizeLoop` wait timed out: up to the optimisation period, which doubles to 60 s
    while the iterator lives. Some epochs then paid 3 to 25 s more than their validation
    steps. Without autotuning there is no such thread; parallel maps and prefetching keep
    tf.data's defaults for AUTOTUNE, which make no difference to a pass this short.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return batches.with_options(options)


def check_resumable(config, initial_epoch):
    """Refuse to resume an interrupted run in `config.out` with other settings.

    `config` is resolved; `initial_epoch` the epochs the run in `config.out` finished. Only
    RESUMABLE_CHANGES may differ from the `CONFIG_FILE` that run wrote.
    """
    path = os.path.join(config.out, CONFIG_FILE)
    if not initial_epoch or not os.path.isfile(path):
        return
    previous = TrainConfig.load(path)
    changes = [f"{name}: {getattr(previous, name)!r} → {getattr(config, name)!r}"
               for name in config.changed_fields(previous) if name not in RESUMABLE_CHANGES]
    if changes:
        raise TrainConfigError(
            f"{config.out} holds a run stopped after epoch {initial_epoch} with other settings "
            f"({path} → this run):\n  " + "\n  ".join(changes) + "\nRun with the same settings "
            f"(train --config {path}) to resume it, or give another --out to start afresh.")


def build_model(config, train_set):
    """The `MaskRCNN` a resolved config describes, for `train_set`'s classes, with its
    starting weights loaded and its frozen parts set. Prints what was copied and what trains."""
    classes = {"num_classes": train_set.num_classes, "category_ids": tuple(train_set.category_ids),
               "class_names": tuple(train_set.class_names)}
    source = None if config.init_from is None else load_source_model(config.init_from)
    model_config = (preset(config.preset, **classes) if source is None
                    else finetune_config(source.model_config, **classes))
    if config.input_size is not None:
        model_config = model_config.replace(input=dataclasses.replace(
            model_config.input, image_size=tuple(config.input_size)))
    if config.rois_per_image is not None:
        model_config = model_config.replace(roi=dataclasses.replace(
            model_config.roi, samples_per_image=config.rois_per_image))
    if config.backbone_norm is not None:
        model_config = model_config.replace(backbone=dataclasses.replace(
            model_config.backbone, norm=config.backbone_norm))
    if config.box_normalizer is not None:
        model_config = model_config.replace(loss=dataclasses.replace(
            model_config.loss, box_normalizer=config.box_normalizer))

    keras.utils.set_random_seed(config.seed)
    model = MaskRCNN(model_config, seed=config.seed)
    if source is not None:
        copied, reinitialised = copy_matching_weights(model, source, config.init_from)
        print(describe_copy(copied, reinitialised, config.init_from,
                            source.model_config.num_classes, model_config.num_classes), flush=True)
        del source  # a ResNet-50 model's weights take 180 MB
    if config.backbone_weights is not None:
        weights = config.backbone_weights
        is_torch_file = str(weights).endswith(TORCH_CHECKPOINT_SUFFIXES)
        try:
            (load_resnet_backbone if is_torch_file else load_imagenet_backbone)(model, weights)
        except (ValueError, OSError, ImportError) as error:
            raise FinetuneError(f"{weights}: cannot load backbone weights ({error})") from error
        print(f"backbone initialised from {weights}", flush=True)
    trainable_stages = config.trainable_stages
    countable = get_backbone(model_config.backbone.kind).stages is not None
    if trainable_stages is None and countable and model_config.backbone.norm == "frozen_bn" and (
            config.init_from or config.backbone_weights):
        trainable_stages = PRETRAINED_TRAINABLE_STAGES
        print(f"training the backbone's last {trainable_stages} stages, as torchvision does from "
              f"pretrained weights (--trainable-stages to change)", flush=True)
    if trainable_stages is not None:
        try:
            model.freeze_backbone_stages(trainable_stages)
        except ValueError as error:
            raise FinetuneError(str(error)) from error
    print(describe_trainable(model), flush=True)
    return model


def progress_verbosity():
    """Keras' `verbose` for fit: a progress bar on a terminal, one line per epoch in a file or
    a CI log (where a bar would print a line per step)."""
    return 1 if sys.stdout.isatty() else 2

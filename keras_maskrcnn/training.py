"""The training job: COCO-format data in, a trained `.keras` model and its history out.

Shapes: none at this level; see `data.pipeline` for the batches and `model` for the losses.

A run directory holds `model.keras` and `history.json` (at the end), `checkpoints/` (one
`.keras` per epoch), `logs/` (TensorBoard), `bad_data.json` (what `--on-bad-data` found)
and, while training, `backup/`: rerunning the same command after a crash or a kill resumes
from the last finished epoch, with the batches the interrupted run would have drawn.
"""

import dataclasses
import json
import math
import os

import keras
import tensorflow as tf

from keras_maskrcnn.callbacks import CocoEvaluation, HistoryFile
from keras_maskrcnn.config import preset
from keras_maskrcnn.convert.keras_applications import load_imagenet_backbone
from keras_maskrcnn.convert.torchvision import load_resnet_backbone
from keras_maskrcnn.data import CocoDataset, DataError, make_dataset
from keras_maskrcnn.data.validation import BadDataPolicy
from keras_maskrcnn.finetune import (FinetuneError, copy_matching_weights, describe_copy,
                                     describe_trainable, finetune_config, load_source_model)
from keras_maskrcnn.model import MaskRCNN
from keras_maskrcnn.optimization import WarmupSchedule, make_optimizer

# Schedule and data defaults per preset; any of them can be overridden per run.
# `max_instances` pads the ground truth to a fixed count (the largest instances are kept).
# `lr_steps` are fractions of the run after which the step schedule multiplies by STEP_DECAY.
# COCO's "1x" schedule (Detectron2): 90k steps at batch 16, about 12 epochs of train2017,
# SGD at 0.02 after a 1000-step warmup, ×0.1 after 60k and 80k steps, weight decay 1e-4.
_COCO_1X = {"epochs": 12, "steps_per_epoch": 7500, "batch_size": 16, "learning_rate": 0.02,
            "max_instances": 100, "optimizer": "sgd", "warmup_steps": 1000, "lr_schedule": "step",
            "lr_steps": (2 / 3, 8 / 9), "weight_decay": 1e-4, "clip_norm": 10.0}
PRESET_DEFAULTS = {
    "tiny": {"epochs": 10, "steps_per_epoch": 150, "batch_size": 8, "learning_rate": 1e-3,
             "max_instances": 16, "optimizer": "adam", "warmup_steps": 0,
             "lr_schedule": "cosine", "lr_steps": (2 / 3, 8 / 9), "weight_decay": 0.0,
             "clip_norm": 10.0},
    "r50_fpn": _COCO_1X,
    "r101_fpn": _COCO_1X,
    "keras_imagenet_r50_fpn": _COCO_1X,
    "keras_imagenet_r101_fpn": _COCO_1X,
    # torchvision's recipe for its MobileNetV3-Large-320-FPN detector: 26 COCO epochs at batch 16,
    # SGD 0.02 after a 1000-step warmup, ×0.1 after epochs 16 and 22, weight decay 1e-4.
    "mobilenetv3_fpn": dict(_COCO_1X, epochs=26, lr_steps=(16 / 26, 22 / 26)),
}
# --backbone-weights files read as torchvision checkpoints; others are keras.applications'.
TORCH_CHECKPOINT_SUFFIXES = (".pth", ".pt")
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.json"
BAD_DATA_FILE = "bad_data.json"
BACKUP_DIR = "backup"
CHECKPOINT_PATTERN = os.path.join("checkpoints", "epoch-{epoch:03d}.keras")
LOG_DIR = "logs"
# Where keras.callbacks.BackupAndRestore records the last finished epoch.
BACKUP_METADATA_FILE = "training_metadata.json"


def open_dataset(annotation_file, image_dir=None, bad_data=None, check_pixels=False):
    """A `CocoDataset`, checked so that a bad file fails here with a message naming it.

    With `bad_data` (a `BadDataPolicy`) every image and annotation is scanned and the dataset
    returned is the cleaned one (`check_pixels` also decodes every image up front); without
    it any missing image file raises.

    Raises:
      DataError: the annotation file is missing, is not COCO JSON, has no images or
        categories (left), or a bad entry was found in mode "error".
    """
    if not os.path.isfile(annotation_file):
        raise DataError(f"{annotation_file}: annotation file not found")
    try:
        dataset = CocoDataset(annotation_file, image_dir)
    except (KeyError, TypeError) as error:
        # Structure is checked while reading; this is left for ids of unusable types.
        raise DataError(f"{annotation_file}: not a COCO annotation file ({error!r})") from error
    if not dataset.category_ids:
        raise DataError(f"{annotation_file}: no categories")
    if bad_data is not None:
        dataset = bad_data.scan(dataset, check_pixels=check_pixels)
    if not dataset.image_ids:
        raise DataError(f"{annotation_file}: no images" if bad_data is None else
                        f"{annotation_file}: no usable images\n{bad_data.summary(annotation_file)}")
    if bad_data is None:
        # A missing image would otherwise stop training mid-epoch inside tf.data.
        missing = [dataset.image_info(i)["path"] for i in dataset.image_ids
                   if not os.path.isfile(dataset.image_info(i)["path"])]
        if missing:
            raise DataError(f"{annotation_file}: {len(missing)} of {len(dataset.image_ids)} image "
                            f"files not found, e.g. {missing[0]} (give the image folder if the "
                            f"images are elsewhere)")
    return dataset


def resolve_defaults(preset_name, **overrides):
    """`PRESET_DEFAULTS[preset_name]` with the overrides that are not None → dict."""
    if preset_name not in PRESET_DEFAULTS:
        raise ValueError(f"unknown preset {preset_name!r}; choose one of {sorted(PRESET_DEFAULTS)}")
    values = dict(PRESET_DEFAULTS[preset_name])
    values.update({name: value for name, value in overrides.items() if value is not None})
    return values


def resumed_epoch(out_dir):
    """Epochs finished by an interrupted run in `out_dir` (0 when there is none to resume)."""
    path = os.path.join(out_dir, BACKUP_DIR, BACKUP_METADATA_FILE)
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])


def train(train_ann, train_images, val_ann, val_images, preset_name, epochs=None,
          steps_per_epoch=None, batch_size=None, learning_rate=None, out_dir="outputs/run", seed=0,
          on_bad_data="skip", check_pixels=False, scale_jitter=None, cache=False, eval_every=None,
          optimizer=None, warmup_steps=None, lr_schedule=None, lr_steps=None, weight_decay=None,
          clip_norm=None, init_from=None, input_size=None, rois_per_image=None,
          trainable_stages=None, backbone_weights=None):
    """Train a model of preset `preset_name` and save it with its history.

    Schedule arguments left as None take the preset's `PRESET_DEFAULTS`. Image folders left
    as None resolve against the annotation file's folder. Both sets are scanned for bad data
    first (`on_bad_data` "skip" or "error", see `data.validation`) and the counts printed.
    With `val_ann`, the five losses are also computed on the validation set after every
    epoch (`val_` keys in the history), and with `eval_every` N its COCO AP every N epochs
    and after the last (`val_bbox_AP`, `val_segm_AP`, `val_bbox_AP50`, `val_segm_AP50`).
    `scale_jitter` (min, max) and `cache` are passed to `data.make_dataset`.
    With `init_from` (a .keras file) the model is that model's configuration with the training
    set's classes, and starts from its weights (see `finetune`); the preset then gives only the
    schedule defaults. `input_size` (H, W) replaces the canvas, and `rois_per_image` the number
    of proposals sampled per image for the box head (`RoIConfig.samples_per_image`, a quarter of
    them at most foreground for the mask head): fewer train faster. `trainable_stages` N lets only
    the last N backbone parts train (`MaskRCNN.freeze_backbone_stages`; None: all of them).
    `backbone_weights` loads the backbone from ImageNet training: "imagenet" or a
    keras.applications weights file (`convert.keras_applications`), or a torchvision ResNet
    checkpoint ending in .pth or .pt (`convert.torchvision.load_resnet_backbone`). What was
    copied and what trains is printed. Raises FinetuneError for an `init_from` or backbone
    weights that cannot be used and a `trainable_stages` the backbone lacks.
    Python, NumPy and TensorFlow are seeded globally with `seed` so that a run repeats, and a
    run killed after an epoch resumes from `out_dir/backup` when restarted the same way.
    Writes the run directory described in the module docstring; returns the history dict
    (metric name → list of per-epoch values, None where an epoch has none).
    """
    settings = resolve_defaults(preset_name, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                batch_size=batch_size, learning_rate=learning_rate,
                                optimizer=optimizer, warmup_steps=warmup_steps,
                                lr_schedule=lr_schedule, lr_steps=lr_steps,
                                weight_decay=weight_decay, clip_norm=clip_norm)
    train_policy = BadDataPolicy(on_bad_data)
    train_set = open_dataset(train_ann, train_images, train_policy, check_pixels)
    print(train_policy.summary(train_ann), flush=True)
    if len(train_set.image_ids) < settings["batch_size"]:
        # Training drops partial batches, so a smaller set would yield no batch at all.
        raise DataError(f"{train_ann}: {len(train_set.image_ids)} usable images, fewer than the "
                        f"batch size {settings['batch_size']}")
    val_set, val_policy = None, BadDataPolicy(on_bad_data)
    if val_ann is not None:
        val_set = open_dataset(val_ann, val_images, val_policy, check_pixels)
        print(val_policy.summary(val_ann), flush=True)
        # Labels 1..C come from the sorted category ids, so both sets must share them.
        if val_set.category_ids != train_set.category_ids:
            raise DataError(f"{val_ann}: category ids {val_set.category_ids} differ from the "
                            f"training set's {train_set.category_ids}")
    classes = {"num_classes": train_set.num_classes, "category_ids": tuple(train_set.category_ids),
               "class_names": tuple(train_set.class_names)}
    source = None if init_from is None else load_source_model(init_from)
    config = (preset(preset_name, **classes) if source is None
              else finetune_config(source.model_config, **classes))
    if input_size is not None:
        config = config.replace(input=dataclasses.replace(config.input,
                                                          image_size=tuple(input_size)))
    if rois_per_image is not None:
        config = config.replace(roi=dataclasses.replace(config.roi,
                                                        samples_per_image=rois_per_image))

    keras.utils.set_random_seed(seed)
    model = MaskRCNN(config, seed=seed)
    if source is not None:
        copied, reinitialised = copy_matching_weights(model, source, init_from)
        print(describe_copy(copied, reinitialised, init_from, source.model_config.num_classes,
                            config.num_classes), flush=True)
        del source  # a ResNet-50 model's weights take 180 MB
    if backbone_weights is not None:
        is_torch_file = str(backbone_weights).endswith(TORCH_CHECKPOINT_SUFFIXES)
        try:
            (load_resnet_backbone if is_torch_file else load_imagenet_backbone)(model, backbone_weights)
        except (ValueError, OSError, ImportError) as error:
            raise FinetuneError(f"{backbone_weights}: cannot load backbone weights ({error})") from error
        print(f"backbone initialised from {backbone_weights}", flush=True)
    if trainable_stages is not None:
        try:
            model.freeze_backbone_stages(trainable_stages)
        except ValueError as error:
            raise FinetuneError(str(error)) from error
    print(describe_trainable(model), flush=True)
    total_steps = settings["epochs"] * settings["steps_per_epoch"]
    schedule = WarmupSchedule(settings["learning_rate"], total_steps, settings["warmup_steps"],
                              settings["lr_schedule"], settings["lr_steps"])
    model.compile(optimizer=make_optimizer(settings["optimizer"], schedule,
                                           settings["weight_decay"], settings["clip_norm"]))

    initial_epoch = resumed_epoch(out_dir)
    if initial_epoch:
        print(f"resuming from {os.path.join(out_dir, BACKUP_DIR)} after epoch {initial_epoch}",
              flush=True)
    train_batches = make_dataset(
        train_set, config.input.image_size, settings["batch_size"], settings["max_instances"],
        config.mask_head.gt_mask_size, training=True, seed=seed, scale_jitter=scale_jitter,
        cache=cache, bad_data=train_policy, repeat=True, size_limits=config.input.size_limits,
        start_batch=initial_epoch * settings["steps_per_epoch"])
    val_batches = None if val_set is None else make_dataset(
        val_set, config.input.image_size, settings["batch_size"], settings["max_instances"],
        config.mask_head.gt_mask_size, training=False, bad_data=val_policy,
        size_limits=config.input.size_limits)

    history_file = HistoryFile(os.path.join(out_dir, HISTORY_FILE))
    # Callbacks run in this order: AP lands in the logs before the others read them, and the
    # history is written before the backup that marks the epoch as done.
    callbacks = [history_file,
                 keras.callbacks.ModelCheckpoint(os.path.join(out_dir, CHECKPOINT_PATTERN)),
                 keras.callbacks.TensorBoard(os.path.join(out_dir, LOG_DIR), write_graph=False),
                 # Two copies, so a kill while one is written leaves the other readable.
                 keras.callbacks.BackupAndRestore(os.path.join(out_dir, BACKUP_DIR),
                                                  double_checkpoint=True)]
    if val_set is not None and eval_every:
        callbacks.insert(0, CocoEvaluation(val_set, eval_every, settings["batch_size"], val_policy))
    try:
        model.fit(train_batches, epochs=settings["epochs"], initial_epoch=initial_epoch,
                  steps_per_epoch=settings["steps_per_epoch"], validation_data=val_batches,
                  # Given, as skipping bad images leaves the set's length unknown to Keras.
                  validation_steps=None if val_set is None else math.ceil(
                      len(val_set.image_ids) / settings["batch_size"]),
                  callbacks=callbacks,
                  # make_dataset shuffles; Keras cannot shuffle a tf.data.Dataset, warns if asked.
                  shuffle=False, verbose=1)
    except tf.errors.OpError as error:
        # In mode "error" a bad image met inside tf.data surfaces as an OpError; say which.
        for policy in (train_policy, val_policy):
            if policy.raised is not None:
                raise policy.raised from error
        raise
    finally:
        _write_json({"train": train_policy.to_dict(), "val": val_policy.to_dict()},
                    os.path.join(out_dir, BAD_DATA_FILE))

    model.save(os.path.join(out_dir, MODEL_FILE))
    return history_file.read()


def _write_json(value, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=2)

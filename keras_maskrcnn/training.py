"""The training job: COCO-format data in, a trained `.keras` model and its loss history out.

Shapes: none at this level; see `data.pipeline` for the batches and `model` for the losses.
"""

import json
import os

import keras

from keras_maskrcnn.config import preset
from keras_maskrcnn.data import CocoDataset, DataError, make_dataset
from keras_maskrcnn.model import MaskRCNN

# Schedule and data defaults per preset; any of them can be overridden per run.
# `max_instances` pads the ground truth to a fixed count (the largest instances are kept).
PRESET_DEFAULTS = {
    "tiny": {"epochs": 10, "steps_per_epoch": 150, "batch_size": 8, "learning_rate": 1e-3,
             "max_instances": 16},
    # The length of COCO's "1x" schedule: 90k steps at batch 16, about 12 epochs of train2017.
    "r50_fpn": {"epochs": 12, "steps_per_epoch": 7500, "batch_size": 16, "learning_rate": 1e-4,
                "max_instances": 100},
}
# Gradient norm above which the update is rescaled; early RPN losses can spike.
GLOBAL_CLIPNORM = 10.0
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.json"


def open_dataset(annotation_file, image_dir=None):
    """A `CocoDataset`, checked so that a bad file fails here with a message naming it.

    Raises:
      DataError: the annotation file is missing, is not COCO JSON, has no images or
        categories, or some of its image files do not exist.
    """
    if not os.path.isfile(annotation_file):
        raise DataError(f"{annotation_file}: annotation file not found")
    try:
        dataset = CocoDataset(annotation_file, image_dir)
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        # json errors are ValueErrors; pycocotools asserts the top level is an object.
        raise DataError(f"{annotation_file}: not a COCO annotation file ({error!r})") from error
    if not dataset.image_ids:
        raise DataError(f"{annotation_file}: no images")
    if not dataset.category_ids:
        raise DataError(f"{annotation_file}: no categories")
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


def train(train_ann, train_images, val_ann, val_images, preset_name, epochs=None,
          steps_per_epoch=None, batch_size=None, learning_rate=None, out_dir="outputs/run", seed=0):
    """Train a model of preset `preset_name` and save it with its history.

    Schedule arguments left as None take the preset's `PRESET_DEFAULTS`. Image folders left
    as None resolve against the annotation file's folder. With `val_ann`, the five losses are
    also computed on the validation set after every epoch (`val_` keys in the history).
    Python, NumPy and TensorFlow are seeded globally with `seed` so that a run repeats.
    Writes `out_dir/model.keras` and `out_dir/history.json`; returns the history dict
    (metric name → list of per-epoch floats).
    """
    settings = resolve_defaults(preset_name, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                batch_size=batch_size, learning_rate=learning_rate)
    train_set = open_dataset(train_ann, train_images)
    if len(train_set.image_ids) < settings["batch_size"]:
        # Training drops partial batches, so a smaller set would yield no batch at all.
        raise DataError(f"{train_ann}: {len(train_set.image_ids)} images, fewer than the batch "
                        f"size {settings['batch_size']}")
    val_set = None
    if val_ann is not None:
        val_set = open_dataset(val_ann, val_images)
        # Labels 1..C come from the sorted category ids, so both sets must share them.
        if val_set.category_ids != train_set.category_ids:
            raise DataError(f"{val_ann}: category ids {val_set.category_ids} differ from the "
                            f"training set's {train_set.category_ids}")
    config = preset(preset_name, num_classes=train_set.num_classes,
                    category_ids=tuple(train_set.category_ids),
                    class_names=tuple(train_set.class_names))

    def batches(dataset, training):
        return make_dataset(dataset, config.input.image_size, settings["batch_size"],
                            settings["max_instances"], config.mask_head.gt_mask_size,
                            training=training, seed=seed)

    keras.utils.set_random_seed(seed)
    model = MaskRCNN(config, seed=seed)
    # Cosine decay to zero over the run: the last steps refine at a small learning rate.
    learning_rate = keras.optimizers.schedules.CosineDecay(
        settings["learning_rate"], decay_steps=settings["epochs"] * settings["steps_per_epoch"])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, global_clipnorm=GLOBAL_CLIPNORM))
    fit = model.fit(batches(train_set, True).repeat(), epochs=settings["epochs"],
                    steps_per_epoch=settings["steps_per_epoch"],
                    validation_data=None if val_set is None else batches(val_set, False),
                    # make_dataset shuffles; Keras cannot shuffle a tf.data.Dataset, warns if asked.
                    shuffle=False, verbose=1)

    os.makedirs(out_dir, exist_ok=True)
    model.save(os.path.join(out_dir, MODEL_FILE))
    history = {name: [float(value) for value in values] for name, values in fit.history.items()}
    with open(os.path.join(out_dir, HISTORY_FILE), "w") as f:
        json.dump(history, f, indent=2)
    return history

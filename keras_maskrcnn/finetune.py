"""Start training from another model's weights (fine-tuning), for a data set whose classes may
differ from the ones that model was trained on.

The new model takes the source model's configuration with the training set's classes, so every
weight has its source's shape except the class-specific predictors: the box head's class logits
[F, C+1] and deltas [F, 4(C+1)] and the mask predictor [1, 1, D, C] (F fc_dim, D mask conv_dim,
C foreground classes). Those start afresh when C changes and are copied when it does not.
"""

import dataclasses

import numpy as np

from keras_maskrcnn.inference import load_model
from keras_maskrcnn.model import MaskRCNN

CLASS_SPECIFIC_LAYERS = ("box_head/class_logits", "box_head/deltas", "mask_head/predictor")
# Training cuts mask targets at the centres of a box's M × M cells (`ops.masks`), which the
# "centres" paste method inverts; a fine-tuned model pastes that way whatever its source did
# (a converted torchvision model pastes torchvision's way).
TRAINED_PASTE_METHOD = "centres"


class FinetuneError(ValueError):
    """A source model that cannot initialise training, or a freezing option its backbone lacks."""


def load_source_model(path):
    """The `MaskRCNN` saved at `path` (a .keras file). Raises FinetuneError naming `path`."""
    if not str(path).endswith(".keras"):
        raise FinetuneError(f"{path}: the model to start from must be a .keras file "
                            f"(SavedModel and TFLite exports keep no trainable weights)")
    try:
        model = load_model(path)
    except (FileNotFoundError, ValueError) as error:
        raise FinetuneError(str(error)) from error
    if not isinstance(model, MaskRCNN):
        raise FinetuneError(f"{path} holds a {type(model).__name__}, not a keras-maskrcnn model")
    return model


def finetune_config(source_config, num_classes, category_ids=None, class_names=None):
    """`source_config` with the training set's classes, pasting masks the way its training
    targets are cut (TRAINED_PASTE_METHOD)."""
    detection = dataclasses.replace(source_config.detection, paste_method=TRAINED_PASTE_METHOD)
    return source_config.replace(num_classes=num_classes, category_ids=category_ids,
                                 class_names=class_names, detection=detection)


def _weights_by_path(model):
    """{path below the model's name: variable}, without the training step counter (which
    restarts with each run)."""
    return {variable.path.split("/", 1)[1]: variable for variable in model.weights
            if variable is not model.sampling_step}


def _layer(path):
    return path.rsplit("/", 1)[0]


def copy_matching_weights(model, source, source_name):
    """Copy into `model` each weight of `source` with the same path and shape.

    Only the class-specific predictors (CLASS_SPECIFIC_LAYERS) may be left out, keeping the
    initialisation `model` was built with. Returns (copied paths, layers left as initialised).
    Raises FinetuneError naming `source_name` when any other weight does not fit.
    """
    theirs = _weights_by_path(source)
    copied, left = [], set()
    for path, variable in _weights_by_path(model).items():
        value = theirs.get(path)
        if value is not None and tuple(value.shape) == tuple(variable.shape):
            variable.assign(np.asarray(value))
            copied.append(path)
        elif _layer(path) in CLASS_SPECIFIC_LAYERS:
            left.add(_layer(path))
        else:
            found = "has none" if value is None else f"has shape {tuple(value.shape)}"
            raise FinetuneError(f"{source_name}: the model's weight {path} has shape "
                                f"{tuple(variable.shape)}, {source_name} {found}")
    return copied, sorted(left)


def describe_copy(copied, reinitialised, source_name, source_classes, num_classes):
    """What `copy_matching_weights` did, in one line per part."""
    per_part = {}
    for path in copied:
        part = path.split("/", 1)[0]
        per_part[part] = per_part.get(part, 0) + 1
    counts = ", ".join(f"{part} {count}" for part, count in per_part.items())
    lines = [f"initialised from {source_name}: copied {len(copied)} weights ({counts})"]
    if reinitialised:
        lines.append(f"re-initialised for {num_classes} classes ({source_name} has "
                     f"{source_classes}): {', '.join(reinitialised)}")
    else:
        lines.append(f"kept {source_name}'s class-specific predictors: both have {num_classes} "
                     f"classes")
    return "\n".join(lines)


def describe_trainable(model):
    """How many weights (scalars) train, in the whole model and in its backbone."""
    def count(variables):
        return sum(int(np.prod(variable.shape)) for variable in variables)

    return (f"trainable weights: {count(model.trainable_weights):,} of {count(model.weights):,} "
            f"(backbone {count(model.backbone.trainable_weights):,} of "
            f"{count(model.backbone.weights):,})")

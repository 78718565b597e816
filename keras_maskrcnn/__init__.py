"""Mask R-CNN instance segmentation on TensorFlow 2 / Keras 3.

The public API is what this module exports (`__all__`), in the style of keras-hub:

    from keras_maskrcnn import CocoDataset, TrainConfig, load_predictor, train

the model (`MaskRCNN`, `load_model`, `rebuild`), its configuration and presets
(`MaskRCNNConfig`, `preset`, `PRESETS` and each preset's function), data (`CocoDataset`,
`DataError`, `make_shapes`), training (`TrainConfig`, `TrainConfigError`, `train`), prediction
(`Predictor`, `load_predictor`) and evaluation (`evaluate_predictor`). Everything else is
internal and may change. Names load their module on first use, so importing the package
loads no TensorFlow (the command line's `--help` depends on it).
"""

import importlib

__version__ = "0.1.0"

# Public name → the module that defines it.
_PUBLIC = {
    "MaskRCNN": "keras_maskrcnn.model",
    "rebuild": "keras_maskrcnn.model",
    "load_model": "keras_maskrcnn.inference",
    "Predictor": "keras_maskrcnn.inference",
    "load_predictor": "keras_maskrcnn.inference",
    "MaskRCNNConfig": "keras_maskrcnn.config",
    "PRESETS": "keras_maskrcnn.config",
    "preset": "keras_maskrcnn.config",
    **{name: "keras_maskrcnn.config" for name in (
        "r50_fpn", "r101_fpn", "tiny", "mobilenetv3_fpn", "mobile", "mobilenetv3_fpn_tiny",
        "keras_imagenet_r50_fpn", "keras_imagenet_r101_fpn", "torchvision_r50_fpn")},
    "CocoDataset": "keras_maskrcnn.data.coco",
    "DataError": "keras_maskrcnn.data.errors",
    "make_shapes": "keras_maskrcnn.data.shapes",
    "TrainConfig": "keras_maskrcnn.train_config",
    "TrainConfigError": "keras_maskrcnn.train_config",
    "train": "keras_maskrcnn.training",
    "evaluate_predictor": "keras_maskrcnn.evaluation",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    """The public name `name`, imported from its module on first use."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'keras_maskrcnn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_PUBLIC})

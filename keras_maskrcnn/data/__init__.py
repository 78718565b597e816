"""Datasets: image decoding (`images`), COCO-format reading, the synthetic shapes set, and tf.data pipelines.

Shapes: B batch; H, W canvas; G padded instances; S mini-mask side (see `pipeline`).
"""

from keras_maskrcnn.data.coco import CocoDataset
from keras_maskrcnn.data.errors import DataError
from keras_maskrcnn.data.images import decode_image, read_image_size
from keras_maskrcnn.data.shapes import make_shapes, write_shapes_split

__all__ = ["CocoDataset", "DataError", "decode_image", "make_dataset", "make_shapes",
           "read_image_size", "write_shapes_split"]


def __getattr__(name):
    """`make_dataset` imports TensorFlow, so only when asked for: the rest of the package (and
    the command line's `--help`, which reads make-shapes' options) does without it."""
    if name == "make_dataset":
        from keras_maskrcnn.data.pipeline import make_dataset
        return make_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The served SavedModel: found (a model folder, or the highest numbered version of a base
folder, as TF Serving picks), loaded once, warmed up, and run.

Shapes: B batch, h×w an image, K detections, M mask size.
"""

import io
import os

import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow.core.protobuf import saved_model_pb2

from keras_maskrcnn import postprocess
from keras_maskrcnn.config import MaskRCNNConfig
from keras_maskrcnn.export.saved_model import CONFIG_FILE
from keras_maskrcnn.tf_logging import run_first_call_quietly

SAVED_MODEL_FILE = "saved_model.pb"
PADDED_SIGNATURE = "serve_padded"  # any sizes in one call (export.saved_model)
SIZED_SIGNATURE = "serve_images"  # one size per call: the fallback for older exports
ENCODED_SIGNATURE = "serving_default"
WARM_UP_SIZE = 64  # side of the warm-up image


def find_version(path):
    """(SavedModel folder, version) for `path`: a SavedModel folder (version: its name when
    that is a number, else 1) or a base folder of numbered versions (the highest).

    Raises ValueError naming `path` when it is neither.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"{path}: no such folder; serve takes an exported SavedModel folder "
                         f"(keras-maskrcnn export --format saved_model) or a folder of "
                         f"numbered versions of one")
    if os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
        name = os.path.basename(os.path.normpath(path))
        return path, int(name) if name.isdigit() else 1
    versions = [int(entry.name) for entry in os.scandir(path)
                if entry.is_dir() and entry.name.isdigit()
                and os.path.isfile(os.path.join(entry.path, SAVED_MODEL_FILE))]
    if not versions:
        raise ValueError(f"{path} holds neither {SAVED_MODEL_FILE} nor numbered version "
                         f"folders with one (e.g. {os.path.join(path, '1', SAVED_MODEL_FILE)})")
    version = max(versions)
    return os.path.join(path, str(version)), version


def read_meta_graph(model_dir):
    """The SavedModel's (first) MetaGraphDef proto, as TF Serving reads it for metadata."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(model_dir, SAVED_MODEL_FILE), "rb") as file:
        saved_model.ParseFromString(file.read())
    return saved_model.meta_graphs[0]


# Convolutions' dtype → the precision a graph computes in (`export --precision`).
PRECISION_OF_CONV_DTYPE = {tf.float32: "float32", tf.bfloat16: "bfloat16", tf.float16: "float16"}
CONV_OPS = ("Conv2D", "DepthwiseConv2dNative")


def graph_precision(meta_graph):
    """The precision a SavedModel's graph computes in: its convolutions' dtype ("float32" when
    it has none, or a mix). A mixed-precision export keeps float32 variables and outputs, so
    its convolutions are where the precision shows."""
    dtypes = {node.attr["T"].type for function in meta_graph.graph_def.library.function
              for node in function.node_def if node.op in CONV_OPS}
    precisions = {PRECISION_OF_CONV_DTYPE.get(tf.dtypes.as_dtype(dtype), "float32")
                  for dtype in dtypes}
    return precisions.pop() if len(precisions) == 1 else "float32"


class ServedModel:
    """An exported Mask R-CNN SavedModel (export.saved_model) ready to serve.

    `config` is its MaskRCNNConfig, `signatures` its concrete functions by name (their first
    call, which optimises the graph, drops TensorFlow's cost estimator notices:
    `tf_logging.run_first_call_quietly`), `signature_defs` their protos (for metadata),
    `precision` what the graph computes in (`graph_precision`), `version` the version served.
    """

    def __init__(self, path):
        self.directory, self.version = find_version(path)
        config_path = os.path.join(self.directory, CONFIG_FILE)
        if not os.path.isfile(config_path):
            raise ValueError(f"{self.directory} has no {CONFIG_FILE}: export the model with "
                             f"keras-maskrcnn export --format saved_model")
        with open(config_path) as file:
            self.config = MaskRCNNConfig.from_json(file.read())
        meta_graph = read_meta_graph(self.directory)
        self.signature_defs = dict(meta_graph.signature_def)
        self.precision = graph_precision(meta_graph)
        self.loaded = tf.saved_model.load(self.directory)
        self.signatures = {name: run_first_call_quietly(function)
                           for name, function in self.loaded.signatures.items()}
        if PADDED_SIGNATURE not in self.signatures and SIZED_SIGNATURE not in self.signatures:
            raise ValueError(f"{self.directory} has neither a {PADDED_SIGNATURE} nor a "
                             f"{SIZED_SIGNATURE} signature: not a keras-maskrcnn export")
        self.class_names = (None if self.config.class_names is None else
                            dict(zip(self.config.dataset_category_ids(), self.config.class_names)))

    def input_specs(self, signature_name):
        """{input name: tf.TensorSpec} of a signature; KeyError when there is none."""
        return dict(self.signatures[signature_name].structured_input_signature[1])

    def mergeable(self, signature_name):
        """Whether requests to this signature can be joined along the batch: every output's
        shape past the batch is fixed, so a request's outputs do not depend on its batch."""
        outputs = self.signatures[signature_name].structured_outputs
        return all(spec.shape.rank is not None and spec.shape[1:].is_fully_defined()
                   for spec in outputs.values())

    def run(self, signature_name, inputs):
        """Call a signature: {name: numpy array} → {output name: numpy array}."""
        outputs = self.signatures[signature_name](
            **{name: tf.constant(value) for name, value in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}

    def detect(self, images):
        """images: list of uint8 [h, w, 3] of any sizes → list of detections dicts
        (`postprocess.unpack_detections`: boxes in each image's pixels): one `serve_padded`
        call, or one `serve_images` call per size for exports without it."""
        if PADDED_SIGNATURE in self.signatures:
            sizes = np.array([image.shape[:2] for image in images], np.int32)
            padded = np.zeros((len(images), *sizes.max(axis=0), 3), np.uint8)
            for canvas, image in zip(padded, images):
                canvas[:image.shape[0], :image.shape[1]] = image
            outputs = self.run(PADDED_SIGNATURE, {"images": padded, "image_sizes": sizes})
            return [postprocess.unpack_detections(outputs, i) for i in range(len(images))]
        indices_by_size = {}
        for index, image in enumerate(images):
            indices_by_size.setdefault(image.shape, []).append(index)
        detections = [None] * len(images)
        for indices in indices_by_size.values():
            outputs = self.run(SIZED_SIGNATURE, {"images": np.stack([images[i] for i in indices])})
            for position, index in enumerate(indices):
                detections[index] = postprocess.unpack_detections(outputs, position)
        return detections

    def warm_up(self):
        """Run the image signatures once on a small gray image, so that the first requests do
        not pay for graph optimisation; returns the warm-up image's detections."""
        image = np.full((WARM_UP_SIZE, WARM_UP_SIZE, 3), 128, np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        if ENCODED_SIGNATURE in self.signatures:
            self.run(ENCODED_SIGNATURE, {"images": np.array([buffer.getvalue()], object)})
        if SIZED_SIGNATURE in self.signatures:
            self.run(SIZED_SIGNATURE, {"images": image[None]})
        return self.detect([image])

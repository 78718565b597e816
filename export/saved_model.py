"""SavedModel export with two serving signatures (docs/design.md §6.2).

Shapes: B batch, h×w an input image, H×W the canvas, K detections, M mask size.

- `serving_default`: `images` tf.string [B], encoded JPEG/PNG/BMP/GIF (first frame), any sizes.
- `serve_images`: `images` uint8 [B, h, w, 3], one size for the whole batch.
- `serve_padded`: `images` uint8 [B, h_max, w_max, 3], images of any sizes padded at the
  bottom and right, and `image_sizes` int32 [B, 2], each image's own (h, w): what a server
  batches requests of different sizes into (keras_maskrcnn/serving). Each image is cut to its
  size first, so its detections are those `serve_images` gives for it alone.

Both resize and pad in the graph with the host's own `preprocessing` functions (into the
model's canvas, or with `InputConfig.canvas_per_image` into the batch's own, as
`preprocessing.preprocess_for_model` does), and return the export contract: `detection_boxes`
[B, K, 4] (pixels of the given images), `detection_scores` [B, K], `detection_classes` int32
[B, K], `num_detections` int32 [B], `detection_masks` [B, K, M, M]. With
`include_full_masks`, also `detection_full_masks` uint8 [B, K, h_max, w_max]:
`ops.paste.paste_masks` by the model's `detection.paste_method` (1 inside the mask), the masks
the host predictors paste, padded to the largest image of the batch.

The model's config JSON (class names, category ids, canvas) is written to CONFIG_FILE, under
`assets.extra/`: SavedModel's place for files that go with the model but not into its graph.
"""

import os

import numpy as np
import tensorflow as tf

from keras_maskrcnn import postprocess
from keras_maskrcnn.config import MaskRCNNConfig
from keras_maskrcnn.inference import Predictor
from keras_maskrcnn.model import HOST_PATH
from keras_maskrcnn.ops.paste import paste_masks
from keras_maskrcnn.private_api import no_automatic_dependency_tracking
from keras_maskrcnn.preprocessing import (IMAGE_INFO_SIZE, canvas_for, resize_and_pad,
                                          resize_oriented)
from keras_maskrcnn.tf_logging import run_first_call_quietly

CONFIG_FILE = os.path.join("assets.extra", "model_config.json")


class _Server(tf.Module):
    """Holds the model's variables (so they are saved) and the two serving functions."""

    def __init__(self, model, include_full_masks):
        super().__init__()
        self._hold_untracked(model)
        # Keras 3 variables wrap tf.Variables. Saved through the Keras model, only the wrappers
        # are tracked, and loaders that restore by variable name (TF Serving, saved_model_cli)
        # then find none; so the tf.Variables themselves are what this module saves.
        self.model_variables = [variable.value for variable in model.variables]
        self.include_full_masks = include_full_masks
        input_config = model.model_config.input
        self.image_size = tuple(input_config.image_size)
        self.size_limits = input_config.size_limits
        self.canvas_per_image = input_config.canvas_per_image
        # Each image is padded to this, and a canvas per image then cut from it: the canvas
        # in either orientation (`preprocessing.resize_oriented`) fits in.
        self.padded_size = ((max(self.image_size),) * 2 if self.canvas_per_image
                            else self.image_size)
        self.paste_method = model.model_config.detection.paste_method
        # The three signatures call the model traced once, here: tracing the model takes most
        # of an export's time, and a tf.function called inside each signature's trace would
        # be traced again for each (and once more when saved).
        canvas_hw = [None, None] if self.canvas_per_image else list(self.padded_size)
        self.detect = tf.function(self._detect).get_concrete_function(
            tf.TensorSpec([None, *canvas_hw, 3], tf.float32),
            tf.TensorSpec([None, IMAGE_INFO_SIZE], tf.float32))

    @no_automatic_dependency_tracking
    def _hold_untracked(self, model):
        """Keep the model without saving it, which would store every weight a second time."""
        self.model = model

    def _detect(self, canvases, image_info):
        # TF Serving runs the graph on a host: the host's path (`MaskRCNN.infer`).
        outputs = dict(self.model.infer({"images": canvases, "image_info": image_info},
                                        HOST_PATH))
        if self.include_full_masks:
            largest = tf.cast(tf.reduce_max(image_info[:, 3:5], axis=0), tf.int32)
            outputs["detection_full_masks"] = tf.cast(paste_masks(
                outputs["detection_masks"], outputs["detection_boxes"], largest[0], largest[1],
                method=self.paste_method), tf.uint8)
        return outputs

    def _preprocess(self, image):
        if not self.canvas_per_image:
            return resize_and_pad(image, self.image_size, self.size_limits)
        resized, image_info = resize_oriented(image, self.image_size, self.size_limits)
        return tf.image.pad_to_bounding_box(resized, 0, 0, *self.padded_size), image_info

    def _preprocess_each(self, fn, elements):
        """tf.map_fn of `fn` (element → padded image, image_info) → canvases [B, H, W, 3],
        image_info [B, 5]; a canvas per image is cut to the batch's largest image."""
        height, width = self.padded_size
        canvases, image_info = tf.map_fn(fn, elements, fn_output_signature=(
            tf.TensorSpec([height, width, 3], tf.float32), tf.TensorSpec([IMAGE_INFO_SIZE], tf.float32)))
        if self.canvas_per_image:
            canvas_hw = canvas_for(image_info[:, 1:3])
            canvases = canvases[:, :canvas_hw[0], :canvas_hw[1]]
        return canvases, image_info

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_encoded(self, images):
        def decode(encoded):
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
            return self._preprocess(image)
        return self.detect(*self._preprocess_each(decode, images))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve_images(self, images):
        return self.detect(*self._preprocess_each(self._preprocess, images))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images"),
                                  tf.TensorSpec([None, 2], tf.int32, name="image_sizes")])
    def serve_padded(self, images, image_sizes):
        def cut(element):
            image, size = element
            return self._preprocess(image[:size[0], :size[1]])
        return self.detect(*self._preprocess_each(cut, (images, image_sizes)))


def export_saved_model(model, out_dir, include_full_masks=False):
    """Write `model` (a `MaskRCNN`) as a SavedModel with `serving_default`, `serve_images` and
    `serve_padded`.

    See the module docstring for the signatures and the config file. Returns out_dir.
    """
    server = _Server(model, include_full_masks)
    tf.saved_model.save(server, str(out_dir), signatures={
        "serving_default": server.serve_encoded.get_concrete_function(),
        "serve_images": server.serve_images.get_concrete_function(),
        "serve_padded": server.serve_padded.get_concrete_function(),
    })
    os.makedirs(os.path.join(out_dir, os.path.dirname(CONFIG_FILE)), exist_ok=True)
    with open(os.path.join(out_dir, CONFIG_FILE), "w") as file:
        file.write(model.model_config.to_json())
    return out_dir


class SavedModelPredictor(Predictor):
    """Predicts with a SavedModel from `export_saved_model`, like `KerasPredictor`.

    Runs the `serve_images` signature, one call per image size in a batch (a signature batch
    holds one size). `config` is the model config stored with the SavedModel.
    """

    def __init__(self, model_dir):
        config_path = os.path.join(model_dir, CONFIG_FILE)
        if not os.path.isfile(config_path):
            raise ValueError(f"{model_dir} has no {CONFIG_FILE}: export it with keras-maskrcnn export")
        with open(config_path) as file:
            self.config = MaskRCNNConfig.from_json(file.read())
        self.loaded = tf.saved_model.load(str(model_dir))
        if "serve_images" not in self.loaded.signatures:
            raise ValueError(f"{model_dir} has no serve_images signature")
        self.signature = run_first_call_quietly(self.loaded.signatures["serve_images"])

    def detect(self, images):
        indices_by_size = {}
        for index, image in enumerate(images):
            indices_by_size.setdefault(image.shape, []).append(index)
        detections = [None] * len(images)
        for indices in indices_by_size.values():
            batch = tf.constant(np.stack([images[i] for i in indices]).astype(np.uint8))
            outputs = {name: value.numpy() for name, value in self.signature(images=batch).items()}
            for position, index in enumerate(indices):
                detections[index] = postprocess.unpack_detections(outputs, position)
        return detections

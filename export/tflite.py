"""TFLite conversion: batch 1, fixed canvas, TFLite builtin ops only (docs/design.md §6.3).

Shapes: H×W the model's canvas (`InputConfig.image_size`), K detections, M mask size.

The converted graph takes `images` float32 [1, H, W, 3] (the 0..255 canvas of
`preprocessing.resize_and_pad`) and `image_info` float32 [1, 5] — or, exported for a camera
size (h, w), one `image` uint8 [1, h, w, 3] that it resizes and pads itself — and returns
the export contract's tensors in the order of OUTPUT_NAMES. A graph converted from a frozen concrete
function carries no signature, so its outputs are known by position only. The model's
config JSON (class names, category ids, canvas) rides in the file's metadata entry
CONFIG_METADATA_NAME; `litert.read_config` reads it back. An int8 file also holds its
`int8.Int8Report` (JSON) in INT8_REPORT_METADATA_NAME (`litert.read_int8_report`).
"""

import contextlib
import dataclasses
import json
import logging
import warnings

import numpy as np
import tensorflow as tf

from keras_maskrcnn import preprocessing
from keras_maskrcnn.config import QUANTIZATIONS
from keras_maskrcnn.export import int8
from keras_maskrcnn.model import STATIC_PATH, rebuild
from keras_maskrcnn.preprocessing import resize_and_pad, resize_exactly
from keras_maskrcnn.private_api import tflite_flatbuffer_utils, tflite_schema
from keras_maskrcnn.tf_logging import native_stderr_hidden

schema = tflite_schema()
flatbuffer_utils = tflite_flatbuffer_utils()

OUTPUT_NAMES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections",
                "detection_masks")
CONFIG_METADATA_NAME = "keras_maskrcnn_config"
INT8_REPORT_METADATA_NAME = "keras_maskrcnn_int8_report"
# What the converter says of choices this module makes on purpose (see export_tflite), and of
# its own int8 calibrator, which still runs tf.lite.Interpreter.
EXPECTED_CONVERTER_NOTICES = (
    "Please consider providing the trackable_obj argument",
    "Statistics for quantized inputs were expected",  # the inputs stay float32
    "tf.lite.Interpreter is deprecated",
)


class _DropExpectedNotices(logging.Filter):
    def filter(self, record):
        return not any(notice in record.getMessage() for notice in EXPECTED_CONVERTER_NOTICES)


@contextlib.contextmanager
def _without_expected_notices():
    """Keep EXPECTED_CONVERTER_NOTICES (Python warnings and absl log lines) off the output;
    anything else the converter says still shows."""
    absl_logger, notice_filter = logging.getLogger("absl"), _DropExpectedNotices()
    absl_logger.addFilter(notice_filter)
    try:
        with warnings.catch_warnings():
            for notice in EXPECTED_CONVERTER_NOTICES:
                warnings.filterwarnings("ignore", message=rf"\s*(Warning: )?{notice}")
            yield
    finally:
        absl_logger.removeFilter(notice_filter)


def builtin_ops_model(model):
    """`model` itself if its RoIAlign is made of TFLite builtin ops, else a copy that is."""
    if model.roi_align_impl == "gather":
        return model
    return rebuild(model, roi_align_impl="gather")


def with_metadata(tflite_bytes, name, data):
    """A `.tflite` flatbuffer with `data` (bytes) added as metadata entry `name` → bytes.

    Goes through the flatbuffer object form, as the converter does to add its own metadata.
    """
    model = flatbuffer_utils.convert_bytearray_to_object(tflite_bytes)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]
    return flatbuffer_utils.convert_object_to_bytearray(model)


def detection_function(model, camera_size=None):
    """Concrete function (images [1, H, W, 3], image_info [1, 5]) → OUTPUT_NAMES tensors.

    With `camera_size` (h, w) it takes `image` uint8 [1, h, w, 3] instead, a camera frame of
    that fixed size (any aspect), and resizes, pads and describes it in the graph
    (`preprocessing.resize_and_pad`: with static sizes its ops are constants, RESIZE_BILINEAR
    and PAD); boxes come back in the frame's pixels.
    It runs the static path (`MaskRCNN.infer`'s STATIC_PATH: TFLite takes no run-time shapes)
    with the model's RoIAlign, which must be made of builtin ops (`builtin_ops_model`).
    Batch 1 is static, which makes the model's NMS the single-image op TFLite has built in.
    The function only references the model's variables: keep the model alive while using it.
    """
    c = model.model_config.input
    if camera_size is not None:
        @tf.function(input_signature=[tf.TensorSpec([1, *camera_size, 3], tf.uint8, name="image")])
        def detect_frame(image):
            canvas, image_info = resize_and_pad(image[0], c.image_size, c.size_limits)
            outputs = model.infer({"images": canvas[None], "image_info": image_info[None]},
                                  STATIC_PATH)
            return tuple(outputs[name] for name in OUTPUT_NAMES)

        return detect_frame.get_concrete_function()

    @tf.function(input_signature=[tf.TensorSpec([1, *c.image_size, 3], tf.float32, name="images"),
                                  tf.TensorSpec([1, 5], tf.float32, name="image_info")])
    def detect(images, image_info):
        outputs = model.infer({"images": images, "image_info": image_info}, STATIC_PATH)
        return tuple(outputs[name] for name in OUTPUT_NAMES)

    return detect.get_concrete_function()


def representative_dataset(images, input_config, camera_size=None):
    """int8 calibration inputs (`convert_function`'s `representative_dataset`): a callable
    yielding, for each uint8 [h, w, 3] image, the inputs of `detection_function(model,
    camera_size)`: [canvas float32 [1, H, W, 3], image_info [1, 5]] of `input_config`
    (an `InputConfig`), or with `camera_size` (h, w) [the frame uint8 [1, h, w, 3]]."""
    def generate():
        for image in images:
            if camera_size is not None:
                yield [resize_exactly(image, camera_size)[None]]
            else:
                canvas, image_info = resize_and_pad(image, input_config.image_size,
                                                    input_config.size_limits)
                yield [canvas[None], image_info[None]]
    return generate


def export_tflite(model, out_path, quantize="none", representative_images=None,
                  held_out_images=None, camera_size=None,
                  min_int8_levels=int8.MIN_INT8_LEVELS):
    """Convert `model` to a `.tflite` file with builtin ops only.

    Args:
      model: a `MaskRCNN` (any RoIAlign implementation; the export uses the builtin-op one).
      out_path: file to write.
      quantize: "none" (float32), "float16" (float16 weights), "dynamic" (int8 weights,
        float activations) or "int8" (int8 weights and activations in `int8.INT8_LAYERS`,
        float elsewhere; needs both image lists below).
      representative_images: list of uint8 [h, w, 3] images to calibrate int8 activations.
      held_out_images: other such images, on which int8 detections are compared with the
        float model's. The `int8.Int8Report` is stored in the file (`litert.read_int8_report`);
        an Int8AgreementWarning is issued when the agreement is poor.
      camera_size: None for a file that takes the preprocessed canvas and image_info, or
        (h, w) for one that takes uint8 camera frames of that size (`detection_function`).
        A model with a canvas per image (`InputConfig.canvas_per_image`) then runs on the
        frame's own canvas; without camera_size, on its fixed `image_size` (a
        FixedCanvasNotice says so).
      min_int8_levels: int8 only: ops whose int8 output spans fewer int8 steps of its
        calibrated range stay float (`int8.quantize_int8`); 0 quantizes every op of
        `int8.INT8_LAYERS`, as a benchmark of random weights wants.
    Returns: out_path. The file's metadata holds the model config (see the module docstring).
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantize {quantize!r}; choose one of {QUANTIZATIONS}")
    if quantize == "int8" and not (representative_images and held_out_images):
        raise ValueError("quantize='int8' needs representative_images to calibrate activations "
                         "and held_out_images to check the result")
    int8.check_min_int8_levels(min_int8_levels)
    input_config = model.model_config.input
    if input_config.canvas_per_image and camera_size is not None:
        # The frame's size is fixed, so its canvas per image is too: the file gives what the
        # Keras model gives on such frames.
        model = rebuild(model, model.model_config.replace(input=dataclasses.replace(
            input_config, image_size=preprocessing.own_canvas(camera_size, input_config))))
    elif input_config.canvas_per_image:
        height, width = input_config.image_size
        warnings.warn(f"the TFLite file runs one fixed {height}x{width} canvas, into which images "
                      f"are fitted (a portrait image at a smaller scale than in the Keras model "
                      f"and the SavedModel, which size the canvas by the image); --input-size H W "
                      f"chooses another", FixedCanvasNotice, stacklevel=2)
    export_model = builtin_ops_model(model)
    calibration = (
        representative_dataset(representative_images, model.model_config.input, camera_size)
        if quantize == "int8" else None)
    with _without_expected_notices(), native_stderr_hidden():
        tflite_bytes, float_ops = convert_function(
            detection_function(export_model, camera_size), quantize, calibration,
            min_int8_levels)
    tflite_bytes = with_metadata(tflite_bytes, CONFIG_METADATA_NAME,
                                 model.model_config.to_json().encode())
    _write(out_path, tflite_bytes)
    if quantize == "int8":
        if camera_size is not None:
            held_out_images = [resize_exactly(image, camera_size) for image in held_out_images]
        report = _int8_report(model, out_path, float_ops, len(representative_images),
                              held_out_images)
        _write(out_path, with_metadata(tflite_bytes, INT8_REPORT_METADATA_NAME,
                                       json.dumps(report.to_dict()).encode()))
        if report.poor:
            warnings.warn(" ".join(report.lines()[1:]), Int8AgreementWarning, stacklevel=2)
    return out_path


class FixedCanvasNotice(UserWarning):
    """The model sizes its canvas by the images in Keras and the SavedModel; its TFLite file
    has one fixed canvas, into which images are fitted instead."""


class Int8AgreementWarning(UserWarning):
    """An int8 export whose detections agree poorly with the float model's."""


def _write(path, data):
    with open(path, "wb") as file:
        file.write(data)


def _int8_report(model, tflite_path, float_ops, calibration_count, held_out_images):
    """The `int8.Int8Report` of the int8 file at `tflite_path`, converted from `model`."""
    from keras_maskrcnn.export.litert import TFLitePredictor  # it imports this module
    from keras_maskrcnn.inference import KerasPredictor

    reference = KerasPredictor(model).detect(held_out_images)
    candidate = TFLitePredictor(tflite_path).detect(held_out_images)
    counts = int8.detection_agreement(reference, candidate)
    return int8.Int8Report(
        calibration_images=calibration_count, held_out_images=len(held_out_images),
        float_layers=tuple(int8.layer_paths(float_ops)),
        reference_detections=counts["reference"], int8_detections=counts["candidate"],
        matched=counts["matched"], max_score_difference=counts["max_score_difference"])


def convert_function(function, quantize, representative_dataset=None,
                     min_int8_levels=int8.MIN_INT8_LEVELS):
    """A concrete function as `.tflite` bytes with builtin ops only, quantized as
    `export_tflite` says, and the op names int8 kept float for their resolution
    (`int8.quantize_int8` with `min_int8_levels`; empty for the other quantizations).

    `representative_dataset` (int8 only): a callable yielding lists of the function's inputs
    (this module's `representative_dataset` makes them for `detection_function`).
    """
    # Without a trackable_obj the converter freezes the variables into constants (folding
    # batch norm); with one it keeps resource variables, which int8 calibration cannot read.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize != "int8":
        return converter.convert(), ()
    converter.representative_dataset = representative_dataset
    # Listing the float builtins too lets ops without int8 kernels (e.g. NMS) stay float.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    return int8.quantize_int8(converter, min_int8_levels)

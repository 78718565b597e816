"""TFLite conversion: batch 1, fixed canvas, TFLite builtin ops only (docs/design.md §6.3).

Shapes: H×W the model's canvas (`InputConfig.image_size`), K detections, M mask size.

The converted graph takes `images` float32 [1, H, W, 3] (the 0..255 canvas of
`preprocessing.resize_and_pad`) and `image_info` float32 [1, 5], and returns the export
contract's tensors in the order of OUTPUT_NAMES. A graph converted from a frozen concrete
function carries no signature, so its outputs are known by position only. The model's
config JSON (class names, category ids, canvas) rides in the file's metadata entry
CONFIG_METADATA_NAME; `litert.read_config` reads it back.
"""

import contextlib
import logging
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from keras_maskrcnn.config import QUANTIZATIONS
from keras_maskrcnn.model import rebuild
from keras_maskrcnn.preprocessing import resize_and_pad
from keras_maskrcnn.tf_logging import native_stderr_hidden

OUTPUT_NAMES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections",
                "detection_masks")
CONFIG_METADATA_NAME = "keras_maskrcnn_config"
# Layers whose ops int8 quantizes: the convolutions and FC layers, where the time goes. The
# rest (box decoding and clipping, score thresholds, NMS inputs, RoIAlign sampling) stays
# float: int8 steps of 1/256 of a tensor's range would move boxes by pixels and merge scores.
INT8_LAYERS = ("backbone", "fpn", "rpn_head", "box_head", "mask_head")
# What the converter says of choices this module makes on purpose (see export_tflite), and of
# its own quantization debugger, which still runs tf.lite.Interpreter.
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


def _op_output_names(tflite_bytes):
    """Names of the tensors that the operators of a `.tflite` flatbuffer write → list of str."""
    graph = schema.Model.GetRootAsModel(tflite_bytes, 0).Subgraphs(0)
    return [graph.Tensors(op.Outputs(j)).Name().decode()
            for op in map(graph.Operators, range(graph.OperatorsLength()))
            for j in range(op.OutputsLength())]


def _int8_outside_layers_float(converter):
    """Convert with int8 only inside INT8_LAYERS → `.tflite` bytes.

    Goes through the quantization debugger, TFLite's route to selective quantization: it
    calibrates once, then quantizes again with the named ops kept float.
    """
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=converter.representative_dataset)
    float_ops = [name for name in _op_output_names(debugger.calibrated_model)
                 if not any(f"/{layer}" in name for layer in INT8_LAYERS)]
    # A top-k named here still follows its int8 input; only listing the op type keeps it float.
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=float_ops, denylisted_ops=["TOPK_V2"])
    return debugger.get_nondebug_quantized_model()


def detection_function(model):
    """Concrete function (images [1, H, W, 3], image_info [1, 5]) → OUTPUT_NAMES tensors.

    Batch 1 is static, which makes the model's NMS the single-image op TFLite has built in.
    The function only references the model's variables: keep the model alive while using it.
    """
    height, width = model.model_config.input.image_size

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name="images"),
                                  tf.TensorSpec([1, 5], tf.float32, name="image_info")])
    def detect(images, image_info):
        outputs = model({"images": images, "image_info": image_info})
        return tuple(outputs[name] for name in OUTPUT_NAMES)

    return detect.get_concrete_function()


def _representative_dataset(images, input_config):
    """Calibration inputs for int8: each uint8 [h, w, 3] image as a preprocessed batch of 1."""
    def generate():
        for image in images:
            canvas, image_info = resize_and_pad(image, input_config.image_size,
                                                input_config.size_limits)
            yield [canvas[None], image_info[None]]
    return generate


def export_tflite(model, out_path, quantize="none", representative_images=None):
    """Convert `model` to a `.tflite` file with builtin ops only.

    Args:
      model: a `MaskRCNN` (any RoIAlign implementation; the export uses the builtin-op one).
      out_path: file to write.
      quantize: "none" (float32), "float16" (float16 weights), "dynamic" (int8 weights,
        float activations) or "int8" (int8 weights and activations in INT8_LAYERS, float
        elsewhere; needs `representative_images`).
      representative_images: list of uint8 [h, w, 3] images to calibrate int8 activations.
    Returns: out_path. The file's metadata holds the model config (see the module docstring).
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantize {quantize!r}; choose one of {QUANTIZATIONS}")
    if quantize == "int8" and not representative_images:
        raise ValueError("quantize='int8' needs representative_images to calibrate activations")
    export_model = builtin_ops_model(model)
    with _without_expected_notices(), native_stderr_hidden():
        tflite_bytes = _convert(export_model, quantize, representative_images)
    tflite_bytes = with_metadata(tflite_bytes, CONFIG_METADATA_NAME,
                                 model.model_config.to_json().encode())
    with open(out_path, "wb") as file:
        file.write(tflite_bytes)
    return out_path


def _convert(export_model, quantize, representative_images):
    """The builtin-op `export_model` as `.tflite` bytes, quantized as `export_tflite` says."""
    # Without a trackable_obj the converter freezes the variables into constants (folding
    # batch norm); with one it keeps resource variables, which int8 calibration cannot read.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([detection_function(export_model)])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = _representative_dataset(
            representative_images, export_model.model_config.input)
        # Listing the float builtins too lets ops without int8 kernels (e.g. NMS) stay float.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
    return (_int8_outside_layers_float(converter) if quantize == "int8"
            else converter.convert())


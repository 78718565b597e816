"""TFLite conversion: batch 1, fixed canvas, TFLite builtin ops only (DESIGN.md §4, §5).

Shapes: H×W the model's canvas (`InputConfig.image_size`), K detections, M mask size.

The converted graph takes `images` float32 [1, H, W, 3] (the 0..255 canvas of
`preprocessing.resize_and_pad`) and `image_info` float32 [1, 5], and returns the export
contract's tensors in the order of OUTPUT_NAMES. A graph converted from a frozen concrete
function carries no signature, so its outputs are known by position only.
"""

import tensorflow as tf

from keras_maskrcnn.model import MaskRCNN
from keras_maskrcnn.preprocessing import resize_and_pad

OUTPUT_NAMES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections",
                "detection_masks")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")


def builtin_ops_model(model):
    """A copy of `model` (same weights) whose RoIAlign is made of TFLite builtin ops."""
    clone = MaskRCNN(model.model_config, seed=model.seed, roi_align_impl="gather", name=model.name)
    clone.set_weights(model.get_weights())
    return clone


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


def _representative_dataset(images, image_size):
    """Calibration inputs for int8: each uint8 [h, w, 3] image as a preprocessed batch of 1."""
    def generate():
        for image in images:
            canvas, image_info = resize_and_pad(image, image_size)
            yield [canvas[None], image_info[None]]
    return generate


def export_tflite(model, out_path, quantize="none", representative_images=None):
    """Convert `model` to a `.tflite` file with builtin ops only.

    Args:
      model: a `MaskRCNN` (any RoIAlign implementation; the export uses the builtin-op one).
      out_path: file to write.
      quantize: "none" (float32), "float16" (float16 weights), "dynamic" (int8 weights,
        float activations) or "int8" (int8 weights and activations where TFLite has int8
        kernels, float elsewhere; needs `representative_images`).
      representative_images: list of uint8 [h, w, 3] images to calibrate int8 activations.
    Returns: out_path.
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantize {quantize!r}; choose one of {QUANTIZATIONS}")
    if quantize == "int8" and not representative_images:
        raise ValueError("quantize='int8' needs representative_images to calibrate activations")
    export_model = builtin_ops_model(model)
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
            representative_images, model.model_config.input.image_size)
        # Listing the float builtins too lets ops without int8 kernels (e.g. NMS) stay float.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
    with open(out_path, "wb") as file:
        file.write(converter.convert())
    return out_path


"""Inspect and run `.tflite` files written by `export.tflite` with LiteRT (`ai-edge-litert`).

Shapes: H×W the canvas the file was converted for, K detections, M mask size.
"""

import json

import numpy as np

from keras_maskrcnn import postprocess, preprocessing
from keras_maskrcnn.config import MaskRCNNConfig
from keras_maskrcnn.export.int8 import Int8Report
from keras_maskrcnn.export.tflite import CONFIG_METADATA_NAME, INT8_REPORT_METADATA_NAME, OUTPUT_NAMES
from keras_maskrcnn.inference import Predictor
from keras_maskrcnn.private_api import tflite_schema
from keras_maskrcnn.tf_logging import native_stderr_hidden

schema = tflite_schema()

_BUILTIN_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items()
                  if not name.startswith("_")}


def _read_model(tflite_path):
    """The flatbuffer root of a `.tflite` file; ValueError naming the file if it is not one."""
    with open(tflite_path, "rb") as file:
        data = file.read()
    if not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise ValueError(f"{tflite_path} is not a TFLite model file")
    return schema.Model.GetRootAsModel(data, 0)


def _metadata(tflite_path, name):
    """The bytes of metadata entry `name` of a `.tflite` file, or None if it has none."""
    model = _read_model(tflite_path)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == name:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def read_config(tflite_path):
    """The `MaskRCNNConfig` that `export_tflite` stored in the file's metadata.

    Raises ValueError naming the file when it has none (e.g. converted by other code).
    """
    data = _metadata(tflite_path, CONFIG_METADATA_NAME)
    if data is None:
        raise ValueError(f"{tflite_path} has no {CONFIG_METADATA_NAME!r} metadata: export it "
                         "with keras-maskrcnn export")
    return MaskRCNNConfig.from_json(data.decode())


def read_int8_report(tflite_path):
    """The `int8.Int8Report` an int8 export stored in the file, or None (other exports)."""
    data = _metadata(tflite_path, INT8_REPORT_METADATA_NAME)
    return None if data is None else Int8Report.from_dict(json.loads(data.decode()))


def list_operators(tflite_path):
    """Sorted names of the operators a `.tflite` file uses.

    Builtins by their schema name (e.g. "CONV_2D"); custom ops as "CUSTOM:<code>", which
    includes Select-TF ops ("CUSTOM:FlexNonMaxSuppressionV5"): LiteRT on phones runs neither.
    """
    model = _read_model(tflite_path)
    names = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Codes below 127 also sit in the deprecated int8 field; the larger of the two is the real one.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            names.add(f"CUSTOM:{code.CustomCode().decode()}")
        else:
            names.add(_BUILTIN_NAMES[builtin])
    return sorted(names)


class TFLitePredictor(Predictor):
    """Predicts with a `.tflite` file from `export.tflite.export_tflite`, like `KerasPredictor`.

    `num_threads` is the LiteRT interpreter's thread count; `config` the stored model config;
    `camera_size` (h, w) for a file that takes camera frames (`export_tflite(camera_size=)`),
    else None. Such a file's frames have a fixed size: `detect` resizes each image to it
    (aspect not kept, as a camera frame of that size would be) and scales boxes back.
    """

    def __init__(self, model_path, num_threads=1):
        from ai_edge_litert.interpreter import Interpreter  # optional dependency: only this class needs it
        self.config = read_config(model_path)
        # LiteRT announces its CPU delegate on stderr ("INFO: Created TensorFlow Lite XNNPACK
        # delegate for CPU") whenever tensors are allocated.
        with native_stderr_hidden():
            self.interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        inputs = {detail["name"]: detail for detail in self.interpreter.get_input_details()}
        if "image" in inputs:
            self.camera_size = tuple(int(side) for side in inputs["image"]["shape"][1:3])
            self.frame_index = inputs["image"]["index"]
        else:
            self.camera_size = None
            self.images_index = inputs["images"]["index"]
            self.image_info_index = inputs["image_info"]["index"]
            self.image_size = tuple(int(side) for side in inputs["images"]["shape"][1:3])
        # No signature in the file: outputs come in the order `detection_function` returns them.
        self.output_indices = [detail["index"] for detail in self.interpreter.get_output_details()]
        if len(self.output_indices) != len(OUTPUT_NAMES):
            raise ValueError(f"{model_path} has {len(self.output_indices)} outputs, expected {OUTPUT_NAMES}")

    def _outputs(self):
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(index)
                for name, index in zip(OUTPUT_NAMES, self.output_indices)}

    def run(self, canvas, image_info):
        """One preprocessed image: canvas [1, H, W, 3], image_info [1, 5] → dict of OUTPUT_NAMES arrays."""
        self.interpreter.set_tensor(self.images_index, np.asarray(canvas, np.float32))
        self.interpreter.set_tensor(self.image_info_index, np.asarray(image_info, np.float32))
        return self._outputs()

    def run_frame(self, frame):
        """One camera frame uint8 [1, h, w, 3] of `camera_size` → dict of OUTPUT_NAMES arrays."""
        self.interpreter.set_tensor(self.frame_index, np.asarray(frame, np.uint8))
        return self._outputs()

    def detect(self, images):
        """`Predictor.detect`, one image at a time (the file takes batch 1)."""
        return [self._detect_one(image) for image in images]

    def _detect_one(self, image):
        if self.camera_size is None:
            canvas, image_info = preprocessing.preprocess_batch([image], self.image_size,
                                                                self.config.input.size_limits)
            return postprocess.unpack_detections(self.run(canvas, image_info), 0)
        frame = image
        if image.shape[:2] != self.camera_size:
            frame = preprocessing.resize_exactly(image, self.camera_size)
        detections = postprocess.unpack_detections(self.run_frame(frame[None]), 0)
        frame_to_image = np.array(image.shape[:2]) / np.array(self.camera_size)
        detections["boxes"] = (detections["boxes"] * np.tile(frame_to_image, 2)).astype(np.float32)
        return detections

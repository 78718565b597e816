"""Inspect and run `.tflite` files written by `export.tflite` with LiteRT (`ai-edge-litert`).

Shapes: H×W the canvas the file was converted for, K detections, M mask size.
"""

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from keras_maskrcnn import postprocess, preprocessing
from keras_maskrcnn.export.tflite import OUTPUT_NAMES

_BUILTIN_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items()
                  if not name.startswith("_")}


def list_operators(tflite_path):
    """Sorted names of the operators a `.tflite` file uses.

    Builtins by their schema name (e.g. "CONV_2D"); custom ops as "CUSTOM:<code>", which
    includes Select-TF ops ("CUSTOM:FlexNonMaxSuppressionV5"): LiteRT on phones runs neither.
    """
    with open(tflite_path, "rb") as file:
        model = schema.Model.GetRootAsModel(file.read(), 0)
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


class TFLitePredictor:
    """Predicts with a `.tflite` file from `export.tflite.export_tflite`, like `KerasPredictor`."""

    def __init__(self, model_path, num_threads=1):
        from ai_edge_litert.interpreter import Interpreter  # optional dependency: only this class needs it
        self.interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        inputs = {detail["name"]: detail for detail in self.interpreter.get_input_details()}
        self.images_index = inputs["images"]["index"]
        self.image_info_index = inputs["image_info"]["index"]
        self.image_size = tuple(int(side) for side in inputs["images"]["shape"][1:3])
        # No signature in the file: outputs come in the order `detection_function` returns them.
        self.output_indices = [detail["index"] for detail in self.interpreter.get_output_details()]
        if len(self.output_indices) != len(OUTPUT_NAMES):
            raise ValueError(f"{model_path} has {len(self.output_indices)} outputs, expected {OUTPUT_NAMES}")

    def run(self, canvas, image_info):
        """One preprocessed image: canvas [1, H, W, 3], image_info [1, 5] → dict of OUTPUT_NAMES arrays."""
        self.interpreter.set_tensor(self.images_index, np.asarray(canvas, np.float32))
        self.interpreter.set_tensor(self.image_info_index, np.asarray(image_info, np.float32))
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(index)
                for name, index in zip(OUTPUT_NAMES, self.output_indices)}

    def predict(self, images):
        """images: list of uint8 [h, w, 3] → list of detections dicts, one per image (batch 1 each)."""
        detections = []
        for image in images:
            canvas, image_info = preprocessing.preprocess_batch([image], self.image_size)
            detections.append(postprocess.unpack_detections(self.run(canvas, image_info), 0))
        return detections

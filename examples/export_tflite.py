"""Export a trained model to TFLite and run it on one image with LiteRT, as a phone app would.

    python examples/export_tflite.py [MODEL.keras IMAGE]

Without arguments it takes the model and a validation image that `keras-maskrcnn demo` (or
`make demo`) writes under outputs/demo. Writes the float32 `.tflite` file next to the model (`keras-maskrcnn export
--help` lists the quantized variants) and prints the detections scoring at least 0.5.
"""

import os
import sys

from ai_edge_litert.interpreter import Interpreter

from keras_maskrcnn import postprocess, preprocessing
from keras_maskrcnn.data.images import decode_image
from keras_maskrcnn.export.litert import read_config
from keras_maskrcnn.export.tflite import OUTPUT_NAMES, export_tflite
from keras_maskrcnn.inference import load_model

DEMO_MODEL = os.path.join("outputs", "demo", "run", "model.keras")
DEMO_IMAGE = os.path.join("outputs", "demo", "data", "val", "images", "000000.png")
SCORE_THRESHOLD = 0.5
NUM_THREADS = 2


def main(model_path, image_path):
    tflite_path = os.path.splitext(model_path)[0] + ".tflite"
    export_tflite(load_model(model_path), tflite_path)
    print(f"wrote {tflite_path}")

    interpreter = Interpreter(model_path=tflite_path, num_threads=NUM_THREADS)
    interpreter.allocate_tensors()
    inputs = {detail["name"]: detail for detail in interpreter.get_input_details()}
    # The model's config, with its canvas, class names and dataset category ids, travels
    # inside the .tflite file.
    config = read_config(tflite_path)

    # What the app does before each call: resize (keeping the aspect ratio) and zero-pad into
    # the fixed canvas, 0..255 floats, and describe the resize in image_info.
    image = decode_image(image_path)
    canvas, image_info = preprocessing.resize_and_pad(image, config.input.image_size,
                                                      config.input.size_limits)
    interpreter.set_tensor(inputs["images"]["index"], canvas.numpy()[None])
    interpreter.set_tensor(inputs["image_info"]["index"], image_info.numpy()[None])
    interpreter.invoke()
    # The file has no signature: the outputs come in the order of OUTPUT_NAMES.
    outputs = {name: interpreter.get_tensor(detail["index"])
               for name, detail in zip(OUTPUT_NAMES, interpreter.get_output_details())}

    detections = postprocess.unpack_detections(outputs, 0)
    masks = postprocess.paste_masks(detections["masks"], detections["boxes"], image.shape[:2],
                                    method=config.detection.paste_method)
    names = dict(zip(config.dataset_category_ids(), config.class_names or ()))
    print(f"{image_path} ({image.shape[0]}×{image.shape[1]}):")
    for box, score, category_id, mask in zip(detections["boxes"], detections["scores"],
                                             detections["category_ids"], masks):
        if score >= SCORE_THRESHOLD:
            y1, x1, y2, x2 = box
            print(f"  {names.get(category_id, category_id)!s:>10}  score {score:.2f}  "
                  f"box y1 {y1:.0f} x1 {x1:.0f} y2 {y2:.0f} x2 {x2:.0f}  mask {mask.sum()} px")


if __name__ == "__main__":
    main(*(sys.argv[1:3] if len(sys.argv) > 2 else (DEMO_MODEL, DEMO_IMAGE)))

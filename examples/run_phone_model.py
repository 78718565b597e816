"""Run a phone-ready `.tflite` file as an app would: LiteRT and numpy, nothing of this project.

    keras-maskrcnn export --model MODEL.keras --format tflite --camera-size 480 640 \
        [--quantize int8 --calibration-data ANN.json] --out model_phone.tflite
    python examples/run_phone_model.py model_phone.tflite IMAGE [--threads N]

The file takes one uint8 RGB camera frame [1, h, w, 3] of the size it was exported for, and
resizes, pads and normalises it itself; boxes come back in the frame's pixels. Its metadata
entry `keras_maskrcnn_config` (JSON) holds the class names and dataset category ids. IMAGE
stands in for the camera: Pillow decodes it (the app's camera hands over pixels instead) and
numpy resizes it to the frame size by nearest neighbour if it differs. Prints the
detections scoring at least SCORE_THRESHOLD, each with its mask's area in frame pixels.
"""

import argparse
import json

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

CONFIG_METADATA = "keras_maskrcnn_config"
SCORE_THRESHOLD = 0.5
# The outputs, in the order the file returns them.
OUTPUTS = ("boxes", "scores", "category_ids", "count", "masks")


def read_config(tflite_path):
    """The model config (a dict) stored in the file's metadata."""
    with open(tflite_path, "rb") as file:
        model = schema.Model.GetRootAsModel(file.read(), 0)
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name().decode() == CONFIG_METADATA:
            data = model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy()
            return json.loads(data.tobytes().decode())
    raise ValueError(f"{tflite_path} has no {CONFIG_METADATA} metadata")


def class_names(config):
    """{dataset category id: class name}."""
    ids = config["category_ids"] or list(range(1, config["num_classes"] + 1))
    names = config["class_names"] or [f"class {i}" for i in ids]
    return dict(zip(ids, names))


def resize_nearest(frame, height, width):
    """uint8 [h, w, 3] → [height, width, 3] by nearest neighbour."""
    rows = (np.arange(height) + 0.5) * frame.shape[0] / height
    cols = (np.arange(width) + 0.5) * frame.shape[1] / width
    return frame[rows.astype(int)[:, None], cols.astype(int)[None, :]]


def paste_mask(mask, box, height, width):
    """A box-frame mask [M, M] of probabilities → bool [height, width], by nearest neighbour."""
    y1, x1, y2, x2 = box
    rows, cols = np.arange(height) + 0.5, np.arange(width) + 0.5
    inside_rows = (rows >= y1) & (rows < y2)
    inside_cols = (cols >= x1) & (cols < x2)
    size = mask.shape[0]
    mask_rows = np.clip(((rows - y1) / max(y2 - y1, 1e-6) * size).astype(int), 0, size - 1)
    mask_cols = np.clip(((cols - x1) / max(x2 - x1, 1e-6) * size).astype(int), 0, size - 1)
    pasted = mask[mask_rows[:, None], mask_cols[None, :]] >= 0.5
    return pasted & inside_rows[:, None] & inside_cols[None, :]


def detect(interpreter, frame):
    """One uint8 RGB frame [h, w, 3] of the file's size → list of detection dicts."""
    (frame_input,) = interpreter.get_input_details()
    interpreter.set_tensor(frame_input["index"], frame[None])
    interpreter.invoke()
    outputs = {name: interpreter.get_tensor(detail["index"])[0]
               for name, detail in zip(OUTPUTS, interpreter.get_output_details())}
    count = int(outputs["count"])
    return [{"box": outputs["boxes"][i], "score": float(outputs["scores"][i]),
             "category_id": int(round(float(outputs["category_ids"][i]))),
             "mask": outputs["masks"][i]} for i in range(count)]


def main(tflite_path, image_path, num_threads=2):
    from PIL import Image  # only to stand in for the camera

    interpreter = Interpreter(model_path=tflite_path, num_threads=num_threads)
    interpreter.allocate_tensors()
    (frame_input,) = interpreter.get_input_details()
    if frame_input["dtype"] != np.uint8:
        raise SystemExit(f"{tflite_path} takes {frame_input['name']} {frame_input['dtype']}: "
                         "export it with --camera-size H W for this runner")
    height, width = (int(side) for side in frame_input["shape"][1:3])
    names = class_names(read_config(tflite_path))
    with Image.open(image_path) as image:
        frame = np.asarray(image.convert("RGB"))
    if frame.shape[:2] != (height, width):
        frame = resize_nearest(frame, height, width)
    detections = [d for d in detect(interpreter, frame) if d["score"] >= SCORE_THRESHOLD]
    print(f"{image_path} as a {height}×{width} frame: {len(detections)} detections "
          f"scoring ≥ {SCORE_THRESHOLD}")
    for found in detections:
        y1, x1, y2, x2 = found["box"]
        area = int(paste_mask(found["mask"], found["box"], height, width).sum())
        print(f"  {names.get(found['category_id'], found['category_id'])}: score "
              f"{found['score']:.2f}, box y1 {y1:.1f} x1 {x1:.1f} y2 {y2:.1f} x2 {x2:.1f}, "
              f"mask {area} px")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", metavar="MODEL.tflite")
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    main(args.model, args.image, args.threads)

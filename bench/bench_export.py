"""File size and latency of every export variant, next to the Keras model, in one run.

Writes JSON (default bench/results/export.json). Cases: `tiny` at its 128 × 128 canvas and
`r50_fpn` at 640 × 640 and 1024 × 1024, all with random weights (latency does not depend on
them: every shape in the graph is static). Per case, after one warm-up call, the median of
`repeats` calls at batch 1:
- keras: the compiled forward pass on a preprocessed canvas (as bench_core.py measures it);
- saved_model: its `serve_images` signature on a uint8 image of the canvas size (so it
  includes the in-graph resize and pad);
- tflite_<quantize>: LiteRT with TFLITE_THREADS threads on the preprocessed canvas. int8 is
  calibrated on a few random images and checked on one more (its export time includes that
  check), enough to time it, not to judge its accuracy (bench/eval_export_accuracy.py does that).

  .venv/bin/python bench/bench_export.py [--out PATH] [--tiny-only]
"""

import argparse
import dataclasses
import json
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from benchutil import machine_info, median_seconds, write_report
from bench_core import inference_latency, synthetic_batch
from keras_maskrcnn.config import preset
from keras_maskrcnn.export.litert import TFLitePredictor
from keras_maskrcnn.export.saved_model import export_saved_model
from keras_maskrcnn.export.tflite import QUANTIZATIONS, export_tflite
from keras_maskrcnn.model import MaskRCNN

TFLITE_THREADS = 2
# (preset, canvas or None for the preset's own, timed calls per runtime)
CASES = (("tiny", None, 20), ("r50_fpn", (640, 640), 5), ("r50_fpn", (1024, 1024), 5))
CALIBRATION_IMAGES = 4


def size_bytes(path):
    """Bytes of a file, or of every file under a folder."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(path) for name in names)


def timed_export(export, *args, **kwargs):
    """(seconds, result) of one export call."""
    start = time.perf_counter()
    result = export(*args, **kwargs)
    return time.perf_counter() - start, result


def bench_case(name, image_size, repeats, work_dir):
    """Rows {variant, file_bytes, export_seconds, latency_ms} for one preset and canvas."""
    config = preset(name)
    if image_size is not None:
        config = config.replace(input=dataclasses.replace(config.input, image_size=image_size))
    keras.utils.set_random_seed(0)
    model = MaskRCNN(config)
    batch = synthetic_batch(config, 1)
    height, width = config.input.image_size
    rows = []

    def row(variant, path, export_seconds, seconds):
        rows.append({"preset": name, "image_size": [height, width], "variant": variant,
                     "file_bytes": size_bytes(path),
                     "export_seconds": None if export_seconds is None else round(export_seconds, 1),
                     "latency_ms": round(1000 * seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)

    keras_path = os.path.join(work_dir, "model.keras")
    model.save(keras_path)
    row("keras", keras_path, None, inference_latency(model, batch, repeats))

    saved_model_dir = os.path.join(work_dir, "saved_model")
    seconds, _ = timed_export(export_saved_model, model, saved_model_dir)
    serve_images = tf.saved_model.load(saved_model_dir).signatures["serve_images"]
    image = tf.constant(batch["images"][:1].astype(np.uint8))
    row("saved_model", saved_model_dir, seconds,
        median_seconds(lambda: serve_images(images=image)["num_detections"].numpy(), repeats))

    rng = np.random.default_rng(0)
    calibration = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                   for _ in range(CALIBRATION_IMAGES)]
    canvas, image_info = batch["images"][:1], batch["image_info"][:1]
    for quantize in QUANTIZATIONS:
        path = os.path.join(work_dir, f"model_{quantize}.tflite")
        seconds, _ = timed_export(export_tflite, model, path, quantize, calibration[:-1],
                                  calibration[-1:])
        predictor = TFLitePredictor(path, num_threads=TFLITE_THREADS)
        row(f"tflite_{quantize}", path, seconds,
            median_seconds(lambda: predictor.run(canvas, image_info), repeats))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/export.json")
    parser.add_argument("--tiny-only", action="store_true", help="only the tiny preset")
    args = parser.parse_args()
    results = []
    for name, image_size, repeats in CASES:
        if args.tiny_only and name != "tiny":
            continue
        with tempfile.TemporaryDirectory() as work_dir:
            results.extend(bench_case(name, image_size, repeats, work_dir))
    write_report({"machine": machine_info(tensorflow=tf.__version__, keras=keras.__version__),
                  "batch_size": 1, "tflite_threads": TFLITE_THREADS, "results": results}, args.out)


if __name__ == "__main__":
    main()

"""`KerasPredictor.predict` (what `evaluate`, `predict` and the COCO callback run) against the
model called eagerly, as it ran before, side by side in one run; writes JSON (default
bench/results/predictor.json).

Random weights with a low score threshold, so that detections and their masks fill the outputs
as a trained model's do. Times are medians of `--repeats` calls after a warm-up, for `tiny` at
batch 8 (128 px) and `r50_fpn` at batch 1 (800 × 1344), on images of one photo-like size.

  .venv/bin/python bench/bench_predictor.py [--repeats N]
"""

import argparse
import dataclasses

import keras
import numpy as np
import tensorflow as tf

from benchutil import machine_info, median_seconds, write_report
from keras_maskrcnn import postprocess, preprocessing
from keras_maskrcnn.config import r50_fpn, tiny
from keras_maskrcnn.inference import KerasPredictor
from keras_maskrcnn.model import MaskRCNN

CASES = {"tiny": (tiny, 8, (96, 128)), "r50_fpn": (r50_fpn, 1, (480, 640))}
SCORE_THRESHOLD = 0.001


def eager_predict(model, images):
    """The former `KerasPredictor.predict`: the model called eagerly on the batch."""
    config = model.model_config.input
    canvases, image_info = preprocessing.preprocess_batch(images, config.image_size,
                                                          config.size_limits)
    outputs = model({"images": canvases, "image_info": image_info})
    outputs = {name: np.asarray(value) for name, value in outputs.items()}
    return [postprocess.unpack_detections(outputs, i) for i in range(len(images))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench/results/predictor.json")
    args = parser.parse_args()

    results = {}
    for name, (make_config, batch_size, image_hw) in CASES.items():
        keras.utils.set_random_seed(0)
        config = make_config(num_classes=3)
        model = MaskRCNN(config.replace(detection=dataclasses.replace(
            config.detection, score_threshold=SCORE_THRESHOLD)), seed=0)
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8) for _ in range(batch_size)]
        predictor = KerasPredictor(model)
        found = predictor.predict(images)
        compiled = median_seconds(lambda: predictor.predict(images), args.repeats)
        eager = median_seconds(lambda: eager_predict(model, images), args.repeats)
        results[name] = {"batch_size": batch_size, "image_hw": image_hw,
                         "detections_per_image": float(np.mean([len(f["scores"]) for f in found])),
                         "keras_predictor_ms": round(1000 * compiled, 1),
                         "eager_ms": round(1000 * eager, 1),
                         "speed_up": round(eager / compiled, 2)}
    write_report({"machine": machine_info(tensorflow=tf.__version__, keras=keras.__version__),
                  "repeats": args.repeats, "results": results}, args.out)


if __name__ == "__main__":
    main()

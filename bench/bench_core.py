"""Training throughput and inference latency of the `tiny` and `r50_fpn` presets.

Writes JSON (default bench/results/core.json). Not part of `make test`: timings depend on
the machine and on what else runs on it, so compare numbers from one run only.

  .venv/bin/python bench/bench_core.py [--out PATH] [--skip-r50]
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from benchutil import machine_info, median_seconds, write_report
from keras_maskrcnn.config import preset
from keras_maskrcnn.model import MaskRCNN

MAX_GT = 8


def synthetic_batch(config, batch_size, seed=0):
    """Random images with MAX_GT random boxes and full-box mini-masks per image."""
    rng = np.random.default_rng(seed)
    height, width = config.input.image_size
    corners = rng.uniform(0, 0.6, (batch_size, MAX_GT, 2)) * (height, width)
    sizes = rng.uniform(0.1, 0.4, (batch_size, MAX_GT, 2)) * (height, width)
    size = config.mask_head.gt_mask_size
    return {
        "images": rng.uniform(0, 255, (batch_size, height, width, 3)).astype(np.float32),
        "image_info": np.tile(np.array([[1.0, height, width, height, width]], np.float32), (batch_size, 1)),
        "gt_boxes": np.concatenate([corners, corners + sizes], -1).astype(np.float32),
        "gt_classes": rng.integers(1, config.num_classes + 1, (batch_size, MAX_GT)).astype(np.int32),
        "gt_masks": np.ones((batch_size, MAX_GT, size, size), np.float32),
    }


def training_throughput(model, batch, steps):
    """Images per second of `model.fit` steps after one warm-up epoch (tracing excluded)."""
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9))
    # The first fit of a given length runs slower throughout (measured ~1.7× on tiny), not only
    # its first step: warm up with a fit as long as the timed one.
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    elapsed = time.perf_counter() - start
    return len(batch["images"]) * steps / elapsed


def inference_latency(model, batch, repeats):
    """Median seconds of one compiled forward pass (batch as given)."""
    inputs = {"images": tf.constant(batch["images"][:1]), "image_info": tf.constant(batch["image_info"][:1])}
    forward = tf.function(lambda x: model(x, training=False))
    return median_seconds(lambda: forward(inputs)["num_detections"].numpy(), repeats)


def bench_preset(name, image_size, batch_size, train_steps, repeats, roi_align_impl="gather"):
    config = preset(name, **({} if image_size is None else {"input": {"image_size": image_size}}))
    keras.utils.set_random_seed(0)
    model = MaskRCNN(config, roi_align_impl=roi_align_impl)
    batch = synthetic_batch(config, batch_size)
    latency = inference_latency(model, batch, repeats)
    throughput = training_throughput(model, batch, train_steps)
    return {"preset": name, "roi_align_impl": roi_align_impl, "image_size": list(config.input.image_size), "train_batch_size": batch_size,
            "train_steps_timed": train_steps, "train_images_per_second": round(throughput, 3),
            "inference_batch_size": 1, "inference_latency_ms": round(1000 * latency, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/core.json")
    parser.add_argument("--skip-r50", action="store_true", help="only the tiny preset")
    args = parser.parse_args()
    results = [bench_preset("tiny", None, batch_size=8, train_steps=20, repeats=20, roi_align_impl=impl)
               for impl in ("gather", "crop_and_resize")]
    if not args.skip_r50:
        # 800×1333 resized images pad to this canvas (multiples of 32).
        results.append(bench_preset("r50_fpn", (800, 1344), batch_size=1, train_steps=3, repeats=5))
    write_report({"machine": machine_info(tensorflow=tf.__version__, keras=keras.__version__),
                  "results": results}, args.out)


if __name__ == "__main__":
    main()

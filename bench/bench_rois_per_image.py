"""Training speed of `r50_fpn` against the number of RoIs sampled per image (`train
--rois-per-image`, `RoIConfig.samples_per_image`), at the fine-tuning example's 256 × 256
canvas and batch 2, side by side in one run; writes JSON (default
bench/results/rois_per_image.json).

  .venv/bin/python bench/bench_rois_per_image.py [--steps N]
"""

import argparse
import dataclasses

import keras
import tensorflow as tf

from bench_core import synthetic_batch, training_throughput
from benchutil import machine_info, write_report
from keras_maskrcnn.config import r50_fpn
from keras_maskrcnn.model import MaskRCNN

ROIS_PER_IMAGE = (512, 256, 128, 64)  # 512: r50_fpn's (torchvision's) default
CANVAS = (256, 256)
BATCH_SIZE = 2
NUM_CLASSES = 3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    parser.add_argument("--out", default="bench/results/rois_per_image.json")
    args = parser.parse_args()

    results = []
    for rois in ROIS_PER_IMAGE:
        config = r50_fpn(num_classes=NUM_CLASSES, input={"image_size": CANVAS})
        config = config.replace(roi=dataclasses.replace(config.roi, samples_per_image=rois))
        keras.utils.set_random_seed(0)
        model = MaskRCNN(config, seed=0)
        images_per_second = training_throughput(model, synthetic_batch(config, BATCH_SIZE),
                                                args.steps)
        results.append({"rois_per_image": rois, "mask_head_rois_per_image": model.num_fg_slots,
                        "seconds_per_step": round(BATCH_SIZE / images_per_second, 2),
                        "images_per_second": round(images_per_second, 3)})
    slowest = results[0]["seconds_per_step"]
    for result in results:
        result["speed_up_over_512"] = round(slowest / result["seconds_per_step"], 2)
    write_report({"machine": machine_info(tensorflow=tf.__version__, keras=keras.__version__),
                  "canvas": CANVAS, "batch_size": BATCH_SIZE, "steps": args.steps,
                  "results": results}, args.out)


if __name__ == "__main__":
    main()

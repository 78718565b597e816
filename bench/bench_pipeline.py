"""Input-pipeline throughput next to training-step throughput, at 128 px and 1024 px.

For each canvas size: the tf.data training pipeline alone (decode, mini-masks, flip, scale
jitter, resize, batch) on synthetic shapes images of that size written to disk; training
steps on one batch held in memory (the model's own speed); and training fed by the pipeline.
When the pipeline alone is not well above the in-memory training speed, training is
input-bound. Writes JSON (default bench/results/pipeline.json). Not part of `make test`.

  .venv/bin/python bench/bench_pipeline.py [--out PATH]
  .venv/bin/python bench/bench_pipeline.py --sizes 128 --presets tiny --images 8 --steps 2  # quick check
"""

import argparse
import json
import os
import tempfile
import time

import keras
import tensorflow as tf

from benchutil import machine_info, write_report
from keras_maskrcnn.config import preset
from keras_maskrcnn.data import CocoDataset, make_dataset, write_shapes_split
from keras_maskrcnn.model import MaskRCNN
from keras_maskrcnn.train_config import PRESET_SCHEDULES

SCALE_JITTER = (0.8, 1.25)


def pipeline_throughput(dataset, image_size, batch_size, max_instances, gt_mask_size, batches,
                        cache):
    """Images per second drawn from `make_dataset` after one warm-up batch."""
    stream = iter(make_dataset(dataset, image_size, batch_size, max_instances, gt_mask_size,
                               training=True, scale_jitter=SCALE_JITTER, cache=cache, repeat=True))
    next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)["images"].numpy()
    return batch_size * batches / (time.perf_counter() - start)


def training_throughput(model, data, steps, batch_size):
    """Images per second of `model.fit` steps on `data` after one warm-up step (tracing)."""
    model.fit(data, epochs=1, steps_per_epoch=1, verbose=0)
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return batch_size * steps / (time.perf_counter() - start)


def bench_size(size, preset_name, num_images, batch_size, steps, work_dir):
    """Pipeline, in-memory training and pipeline-fed training throughput at one size."""
    annotation_file = write_shapes_split(os.path.join(work_dir, f"shapes_{size}"), num_images,
                                         size, seed=0)
    dataset = CocoDataset(annotation_file)
    config = preset(preset_name, num_classes=dataset.num_classes, input={"image_size": (size, size)})
    max_instances = PRESET_SCHEDULES[preset_name].max_instances
    gt_mask_size = config.mask_head.gt_mask_size
    result = {"image_size": size, "preset": preset_name, "batch_size": batch_size,
              "images_on_disk": num_images, "scale_jitter": list(SCALE_JITTER)}
    pipeline_batches = max(steps, 2 * num_images // batch_size)
    result["pipeline_images_per_second"] = round(pipeline_throughput(
        dataset, config.input.image_size, batch_size, max_instances, gt_mask_size,
        pipeline_batches, cache=False), 2)
    result["cached_pipeline_images_per_second"] = round(pipeline_throughput(
        dataset, config.input.image_size, batch_size, max_instances, gt_mask_size,
        pipeline_batches, cache=True), 2)

    keras.utils.set_random_seed(0)
    model = MaskRCNN(config)
    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9))
    pipeline = make_dataset(dataset, config.input.image_size, batch_size, max_instances,
                            gt_mask_size, training=True, scale_jitter=SCALE_JITTER, repeat=True)
    in_memory = tf.data.Dataset.from_tensors(next(iter(pipeline))).repeat()
    result["train_images_per_second"] = round(
        training_throughput(model, in_memory, steps, batch_size), 3)
    result["train_from_pipeline_images_per_second"] = round(
        training_throughput(model, pipeline, steps, batch_size), 3)
    result["pipeline_to_train_ratio"] = round(
        result["pipeline_images_per_second"] / result["train_images_per_second"], 2)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/pipeline.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 1024],
                        help="canvas sides, multiples of 32 (default: %(default)s)")
    parser.add_argument("--presets", nargs="+", default=["tiny", "r50_fpn"],
                        help="model per size, in the order of --sizes (default: %(default)s)")
    parser.add_argument("--images", type=int, default=64, help="images written per size")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: 8 for tiny, 1 otherwise")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed training steps (default: 20 for tiny, 3 otherwise)")
    args = parser.parse_args()
    if len(args.presets) != len(args.sizes):
        parser.error("give one preset per size")
    results = []
    with tempfile.TemporaryDirectory() as work_dir:
        for size, preset_name in zip(args.sizes, args.presets):
            small = preset_name == "tiny"
            results.append(bench_size(size, preset_name, args.images,
                                      args.batch_size or (8 if small else 1),
                                      args.steps or (20 if small else 3), work_dir))
            print(json.dumps(results[-1]), flush=True)
    write_report({"machine": machine_info(tensorflow=tf.__version__, keras=keras.__version__),
                  "results": results}, args.out)


if __name__ == "__main__":
    main()

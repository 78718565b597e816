"""The `mobile` preset on LiteRT: file size, latency at 1 and 2 threads, and where the time goes.

  .venv/bin/python bench/bench_mobile.py [--preset mobile] [--repeats 20] [--out PATH]

Random weights (latency does not depend on them: every shape in the graph is static, and the
mask head runs on all `detection.max_detections` slots). For float32 ("none"), dynamic-range
and int8 TFLite at the preset's canvas: the file size and the median LiteRT latency of
`repeats` calls after a warm-up, on 1 and on 2 threads. int8 calibrates on CALIBRATION_IMAGES
shapes images of the canvas size, with every op of `int8.INT8_LAYERS` quantized
(`min_int8_levels=0`): random weights leave many activations near-constant (ranges of 1e-5),
which the export's coarse-step check would keep float, timing a graph no trained model
converts to.

Where the time goes: LiteRT's Python packages have no per-op profiler, so the model is cut
after each stage (backbone; + FPN; + RPN head and proposals; + box head and detections; the
whole model with the mask head) and each cut converted the same way and timed on 1 thread; a
stage's time is its cut's minus the one before. All of a variant's interpreters are timed in
turn, round after round, and each reports its median. Writes JSON (default
bench/results/mobile.json).
"""

import argparse
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from benchutil import machine_info, time_in_turn, write_report
from keras_maskrcnn import commands, preprocessing
from keras_maskrcnn.config import preset
from keras_maskrcnn.data.images import decode_image
from keras_maskrcnn.export import tflite
from keras_maskrcnn.model import MaskRCNN

VARIANTS = ("none", "dynamic", "int8")
THREADS = (1, 2)
CALIBRATION_IMAGES = 8
# Every op of int8.INT8_LAYERS quantized: see the module docstring.
MIN_INT8_LEVELS = 0
# The stages in model order; the last one's cut is the whole model.
STAGES = ("backbone", "FPN", "RPN head and proposals", "box head and detections", "mask head")


def shapes_images(size, count, work_dir):
    """`count` uint8 shapes images of size × size (the demo's generator)."""
    train_ann, _ = commands.make_shapes(os.path.join(work_dir, "shapes"), count, 1, size, seed=0)
    image_dir = os.path.join(os.path.dirname(train_ann), "images")
    return [decode_image(os.path.join(image_dir, name)) for name in sorted(os.listdir(image_dir))]


def stage_functions(model):
    """[(stage name, concrete function of (images, image_info))] for every stage but the last,
    each cut one stage later (the last stage's cut is the whole model)."""
    height, width = model.model_config.input.image_size
    signature = [tf.TensorSpec([1, height, width, 3], tf.float32, name="images"),
                 tf.TensorSpec([1, 5], tf.float32, name="image_info")]

    def backbone(images, image_info):
        return model.backbone(images)

    def fpn(images, image_info):
        return model.extract_features(images, image_info)

    def proposals(images, image_info):
        features = fpn(images, image_info)
        return model.proposal_layer(*model.rpn_head(features), image_info)

    def detections(images, image_info):
        features = fpn(images, image_info)
        rois, rois_valid = model.proposal_layer(*model.rpn_head(features), image_info)
        class_logits, box_deltas = model.box_branch(features, rois)
        return model.detection_layer(class_logits, box_deltas, rois, rois_valid, image_info)

    functions = (backbone, fpn, proposals, detections)
    return [(name, tf.function(fn, input_signature=signature).get_concrete_function())
            for name, fn in zip(STAGES, functions)]


def litert_call(tflite_bytes, inputs, threads):
    """A function that runs a LiteRT interpreter of `tflite_bytes` once on `inputs`
    ({input name: array})."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite_bytes, num_threads=threads)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], inputs[detail["name"]])
    return interpreter.invoke


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobile")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="bench/results/mobile.json")
    args = parser.parse_args()
    config = preset(args.preset)
    keras.utils.set_random_seed(0)
    model = tflite.builtin_ops_model(MaskRCNN(config))
    height, width = config.input.image_size
    results = {"variants": {}}
    with tempfile.TemporaryDirectory() as work_dir:
        images = shapes_images(height, CALIBRATION_IMAGES + 2, work_dir)
        canvas, image_info = preprocessing.preprocess_batch(images[:1], config.input.image_size)
        inputs = {"images": canvas.astype(np.float32), "image_info": image_info.astype(np.float32)}
        calibration = tflite.representative_dataset(images[:CALIBRATION_IMAGES], config.input)
        for quantize in VARIANTS:
            path = os.path.join(work_dir, f"model_{quantize}.tflite")
            tflite.export_tflite(model, path, quantize, images[:CALIBRATION_IMAGES],
                                 images[CALIBRATION_IMAGES:], min_int8_levels=MIN_INT8_LEVELS)
            with open(path, "rb") as file:
                file_bytes = file.read()
            calls = {f"threads={threads}": litert_call(file_bytes, inputs, threads)
                     for threads in THREADS}
            for name, function in stage_functions(model):
                stage_bytes, _ = tflite.convert_function(function, quantize, calibration,
                                                         MIN_INT8_LEVELS)
                calls[name] = litert_call(stage_bytes, inputs, 1)
            medians = {name: median for name, (_, median)
                       in time_in_turn(calls, args.repeats).items()}
            cumulative = [medians[name] for name in STAGES[:-1]] + [medians["threads=1"]]
            results["variants"][quantize] = {
                "file_bytes": os.path.getsize(path),
                "latency_ms": {threads: medians[f"threads={threads}"] for threads in THREADS},
                "stages_ms": [{"stage": name, "cumulative_ms": total,
                               "stage_ms": round(total - before, 1)}
                              for name, total, before
                              in zip(STAGES, cumulative, [0.0] + cumulative[:-1])]}
            print(quantize, results["variants"][quantize], flush=True)
    report = {"machine": machine_info(tensorflow=tf.__version__), "preset": args.preset,
              "image_size": [height, width], "max_detections": config.detection.max_detections,
              "repeats": args.repeats, **results}
    write_report(report, args.out)


if __name__ == "__main__":
    main()

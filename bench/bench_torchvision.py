"""Latency of torchvision's `maskrcnn_resnet50_fpn` and of the same weights converted to Keras.

Writes JSON (default bench/results/torchvision.json). A randomly initialised torchvision model
(seeded) is saved as a state dict and converted by `convert.torchvision`; both then run at
batch 1 on an 800 × 1333 image (which neither resizes: canvas 800 × 1344) and a 480 × 640
photo (resized to 800 × 1066: canvas 800 × 1088). Each gets `threads` CPU threads: torch
through `torch.set_num_threads`, TensorFlow as intra-op threads with one inter-op thread, so
that neither runs two ops side by side. Per image, one warm-up call each, then `repeats` rounds
in which every variant is timed in turn (`benchutil.time_in_turn`; min and median ms):
- torch: `model([image])`, which normalises, runs the network and pastes the masks into the
  image (its public inference call);
- keras_<precision>_end_to_end: the same work through the public API,
  `KerasPredictor.predict([image], full_masks=True)`: preprocessing, the compiled model,
  masks pasted into the image (torchvision's method);
- keras_<precision>_model: the compiled model alone on the preprocessed canvas
  (`KerasPredictor.forward`);
- keras_<precision>_paste: pasting the model's masks alone (host post-processing);
for precision float32 and bfloat16 (`inference.with_precision`).
Also reported: detections kept by each (score ≥ `score_threshold`: torchvision skips the mask
head for missing ones, ours fills its 100 slots), and the model's multiply-adds per image
counted by TensorFlow's profiler on the traced graph (convolutions and matrix products) with
the rate they imply against the measured model time, this CPU's probe convolution in both
precisions (`precision.conv_rates`: a 3×3, 256→256 convolution on 200×336, GFLOP/s; bfloat16
is fast where it reaches 1.5× float32) to compare that rate with, and `machine_info` (CPU
model, commit, library versions): bfloat16's speed-up is the CPU's as much as the code's.

  .venv/bin/python bench/bench_torchvision.py [--repeats N] [--threads T] [--out PATH]
"""

import argparse
import dataclasses
import os
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from benchutil import machine_info, time_in_turn, write_report

from keras_maskrcnn import preprocessing
from keras_maskrcnn.config import torchvision_r50_fpn
from keras_maskrcnn.convert.torchvision import convert_state_dict, load_state_dict
from keras_maskrcnn.inference import KerasPredictor, with_precision
from keras_maskrcnn.precision import conv_rates

IMAGE_SIZES = {"800x1333": (800, 1333), "480x640": (480, 640)}
TORCH_BATCH_NORM_EPSILON = 1e-5  # BatchNorm2d's: weights=None builds the backbone with it
DEFAULT_SCORE_THRESHOLD = 0.05  # both models' default
PRECISIONS = ("float32", "bfloat16")


def import_torch():
    """torch and torchvision, imported after TensorFlow."""
    # torchvision imports TorchDynamo, which loads Triton's LLVM; with TensorFlow's LLVM already
    # loaded that crashes the process. Triton only serves torch.compile on GPUs: hide it.
    sys.modules.setdefault("triton", None)
    import torch
    import torchvision
    return torch, torchvision


def bench_image(image_hw, seed=0):
    """A deterministic uint8 [h, w, 3] image: smooth colour blobs with pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (image_hw[0] // 40, image_hw[1] // 40, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, image_hw, method="bicubic").numpy()
    return np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)


def save_seeded_torch_model(torch, torchvision, seed, score_threshold, path):
    """A random-init torchvision `maskrcnn_resnet50_fpn` (torch seeded with `seed`, in eval
    mode), its state dict saved at `path` → the model."""
    torch.manual_seed(seed)
    torch_model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, box_score_thresh=score_threshold).eval()
    torch.save(torch_model.state_dict(), path)
    return torch_model


def converted_pair(torch, torchvision, seed, score_threshold, work_dir):
    """(torchvision model, `MaskRCNN` holding its weights), via a saved state dict."""
    path = os.path.join(work_dir, "maskrcnn.pth")
    torch_model = save_seeded_torch_model(torch, torchvision, seed, score_threshold, path)
    config = torchvision_r50_fpn()
    config = config.replace(detection=dataclasses.replace(config.detection,
                                                          score_threshold=score_threshold))
    return torch_model, convert_state_dict(load_state_dict(path), config, TORCH_BATCH_NORM_EPSILON)


def converted_model(seed, score_threshold=DEFAULT_SCORE_THRESHOLD):
    """The `MaskRCNN` of `converted_pair` alone (its torchvision model dropped)."""
    torch, torchvision = import_torch()
    with tempfile.TemporaryDirectory() as work_dir:
        return converted_pair(torch, torchvision, seed, score_threshold, work_dir)[1]


def multiply_adds(model, canvas_hw):
    """Multiply-adds of one forward pass on a canvas_hw canvas, by TensorFlow's profiler (ops
    with registered FLOP counts: convolutions, matrix products), i.e. FLOPs / 2."""
    spec = [tf.TensorSpec([1, *canvas_hw, 3], tf.float32), tf.TensorSpec([1, 5], tf.float32)]
    function = tf.function(lambda images, info: model({"images": images, "image_info": info}))
    graph = function.get_concrete_function(*spec).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    flops = tf.compat.v1.profiler.profile(graph, options=options).total_float_ops
    return flops / 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score-threshold", type=float, default=DEFAULT_SCORE_THRESHOLD)
    parser.add_argument("--out", default="bench/results/torchvision.json")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    torch, torchvision = import_torch()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as work_dir:
        torch_model, model = converted_pair(torch, torchvision, args.seed, args.score_threshold,
                                            work_dir)
    predictors = {precision: KerasPredictor(with_precision(model, precision))
                  for precision in PRECISIONS}
    results = {}
    for name, image_hw in IMAGE_SIZES.items():
        image = bench_image(image_hw, args.seed)
        tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
        canvas, image_info = preprocessing.preprocess_for_model([image], model.model_config.input)

        def run_torch():
            with torch.inference_mode():
                return torch_model([tensor])[0]

        functions = {"torch": run_torch}
        detections = {}
        for precision, predictor in predictors.items():
            found = predictor.predict([image])[0]
            detections[precision] = found
            functions[f"keras_{precision}_end_to_end"] = (
                lambda p=predictor: p.predict([image], full_masks=True))
            functions[f"keras_{precision}_model"] = (
                lambda p=predictor: p.forward(canvas, image_info))
            functions[f"keras_{precision}_paste"] = (
                lambda p=predictor, d=found: p.add_full_masks(dict(d), image_hw))
        times = time_in_turn(functions, args.repeats)
        torch_ms = times["torch"][1]
        entry = {"canvas_hw": list(canvas.shape[1:3]),
                 "median_ms": {k: v[1] for k, v in times.items()},
                 "min_ms": {k: v[0] for k, v in times.items()},
                 "torch_detections": len(run_torch()["boxes"])}
        for precision in PRECISIONS:
            end_to_end = times[f"keras_{precision}_end_to_end"][1]
            model_ms = times[f"keras_{precision}_model"][1]
            entry[precision] = {
                "end_to_end_speedup_over_torch": round(torch_ms / end_to_end, 2),
                "model_speedup_over_torch": round(torch_ms / model_ms, 2),
                "paste_share_of_end_to_end": round(
                    times[f"keras_{precision}_paste"][1] / end_to_end, 3),
                "detections": len(detections[precision]["boxes"]),
            }
        macs = multiply_adds(model, tuple(canvas.shape[1:3]))
        entry["model_giga_multiply_adds"] = round(macs / 1e9, 1)
        for precision in PRECISIONS:
            seconds = times[f"keras_{precision}_model"][1] / 1000
            entry[precision]["model_gflop_per_s"] = round(2 * macs / 1e9 / seconds, 1)
        results[name] = entry
        print(name, entry, flush=True)
    # The probe the export and the server run: is this CPU's bfloat16 fast (precision module)?
    conv_probe = conv_rates().to_dict()
    print("conv probe", conv_probe, flush=True)
    write_report({"machine": machine_info(tensorflow=tf.__version__, keras=keras.__version__,
                                          torch=torch.__version__, torchvision=torchvision.__version__),
                  "conv_probe": conv_probe, "threads": args.threads, "batch_size": 1, "repeats": args.repeats,
                  "seed": args.seed, "score_threshold": args.score_threshold, "results": results},
                 args.out)


if __name__ == "__main__":
    main()

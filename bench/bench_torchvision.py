"""Latency of torchvision's `maskrcnn_resnet50_fpn` and of the same weights converted to Keras.

Writes JSON (default bench/results/torchvision.json). A randomly initialised torchvision model
(seeded) is saved as a state dict and converted by `convert.torchvision`; both then run at
batch 1 on one 800 × 1333 image, which neither resizes and both pad to 800 × 1344. Each gets
`threads` CPU threads: torch through `torch.set_num_threads`, TensorFlow as intra-op threads
with one inter-op thread, so that neither runs two ops side by side. After one warm-up call,
the median of `repeats` calls of:
- torch: `model([image])`, which normalises, runs the network and pastes the masks into the
  image (its public inference call);
- keras_end_to_end: the same work here: `preprocessing.preprocess_batch`, the compiled
  forward pass and `postprocess.paste_mask_probabilities` (torchvision's method);
- keras_model: the compiled forward pass alone, on the preprocessed canvas.
Both models keep detections scoring at least `score_threshold`; their counts are reported,
since torchvision skips the mask head for missing ones and ours always fills its 100 slots.

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

from benchutil import machine_info, median_seconds, write_report
from keras_maskrcnn import postprocess, preprocessing
from keras_maskrcnn.config import torchvision_r50_fpn
from keras_maskrcnn.convert.torchvision import convert_state_dict, load_state_dict

IMAGE_HW = (800, 1333)  # the largest image torchvision's default transform leaves unresized
TORCH_BATCH_NORM_EPSILON = 1e-5  # BatchNorm2d's: weights=None builds the backbone with it
DEFAULT_SCORE_THRESHOLD = 0.05  # both models' default


def import_torch():
    """torch and torchvision, imported after TensorFlow."""
    # torchvision imports torch._dynamo, which loads Triton's LLVM; with TensorFlow's LLVM already
    # loaded that crashes the process. Triton only serves torch.compile on GPUs: hide it.
    sys.modules.setdefault("triton", None)
    import torch
    import torchvision
    return torch, torchvision


def bench_image(seed=0):
    """A deterministic uint8 [800, 1333, 3] image: smooth colour blobs with pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (IMAGE_HW[0] // 40, IMAGE_HW[1] // 40, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, IMAGE_HW, method="bicubic").numpy()
    return np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)


def converted_pair(torch, torchvision, seed, score_threshold, work_dir):
    """(torchvision model, `MaskRCNN` holding its weights), via a saved state dict."""
    torch.manual_seed(seed)
    torch_model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, box_score_thresh=score_threshold).eval()
    path = os.path.join(work_dir, "maskrcnn.pth")
    torch.save(torch_model.state_dict(), path)
    config = torchvision_r50_fpn()
    config = config.replace(detection=dataclasses.replace(config.detection,
                                                          score_threshold=score_threshold))
    return torch_model, convert_state_dict(load_state_dict(path), config, TORCH_BATCH_NORM_EPSILON)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
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
    image = bench_image(args.seed)
    image_size = model.model_config.input.image_size
    size_limits = model.model_config.input.size_limits
    forward = tf.function(lambda inputs: model(inputs, training=False))

    def run_torch():
        with torch.inference_mode():
            tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
            return torch_model([tensor])[0]

    def run_keras_model(canvas, image_info):
        outputs = forward({"images": tf.constant(canvas), "image_info": tf.constant(image_info)})
        return {name: value.numpy() for name, value in outputs.items()}

    def run_keras_end_to_end():
        canvas, image_info = preprocessing.preprocess_batch([image], image_size, size_limits)
        detections = postprocess.unpack_detections(run_keras_model(canvas, image_info), 0)
        masks = postprocess.paste_mask_probabilities(detections["masks"], detections["boxes"],
                                                     IMAGE_HW, method="torchvision")
        return detections, masks

    canvas, image_info = preprocessing.preprocess_batch([image], image_size, size_limits)
    torch_ms = round(1000 * median_seconds(run_torch, args.repeats), 1)
    keras_model_ms = round(1000 * median_seconds(lambda: run_keras_model(canvas, image_info), args.repeats), 1)
    keras_end_to_end_ms = round(1000 * median_seconds(run_keras_end_to_end, args.repeats), 1)
    keras_detections, _ = run_keras_end_to_end()
    result = {
        "torch_ms": torch_ms,
        "keras_end_to_end_ms": keras_end_to_end_ms,
        "keras_model_ms": keras_model_ms,
        "keras_end_to_end_over_torch": round(keras_end_to_end_ms / torch_ms, 3),
        "keras_model_over_torch": round(keras_model_ms / torch_ms, 3),
        "torch_detections": len(run_torch()["boxes"]),
        "keras_detections": len(keras_detections["boxes"]),
    }
    write_report({"machine": machine_info(tensorflow=tf.__version__, keras=keras.__version__,
                                          torch=torch.__version__, torchvision=torchvision.__version__),
                  "threads": args.threads, "batch_size": 1, "image_hw": list(IMAGE_HW),
                  "canvas_hw": list(image_size), "repeats": args.repeats, "seed": args.seed,
                  "score_threshold": args.score_threshold, "results": result}, args.out)


if __name__ == "__main__":
    main()

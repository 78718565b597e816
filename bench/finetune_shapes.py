"""Fine-tuning on the shapes set through the command line, as docs/training.md's worked example, for
three starting points side by side; writes AP, commands and wall times to JSON (default
bench/results/finetune_shapes.json).

- `torchvision`: a `maskrcnn_resnet50_fpn` checkpoint → `convert-torchvision` → `train --preset
  r50_fpn --init-from ... --trainable-stages 3` at a small canvas → `evaluate`.
- `mobilenetv3_fpn`: keras.applications MobileNetV3Large weights → `train --preset
  mobilenetv3_fpn --backbone-weights ... --trainable-stages 0` at the same canvas → `evaluate`.
  (Training the random stand-in's whole backbone as well diverged: the loss went 5.36, 5.79,
  6.34 over the first three epochs at rate 0.005, and 5.08, 4.94 at 0.001; with the backbone
  frozen it went 4.96, 4.59.)
- `tiny`: `train --preset tiny` with its own schedule (the `make demo` model) → `evaluate`.

Each step runs `keras-maskrcnn` in its own process, as a user would. Nothing can be downloaded
here, so unless `--checkpoint` gives torchvision's published COCO file, both pretrained starts
are stand-ins: networks with random convolutions whose batch-norm statistics are measured on
the training images (torchvision's and Keras' random initialisations leave mean 0, variance 1,
and with the batch norm frozen as fine-tuning keeps it, a random ResNet-50's activations then
grow by orders of magnitude: the first training loss was 1e23). Their AP is that of heads
trained on random features, a lower bound for what real weights give.

  .venv/bin/python bench/finetune_shapes.py [--models torchvision mobilenetv3_fpn tiny]
      [--checkpoint PTH] [--steps-per-epoch N] ...
"""

import argparse
import json
import multiprocessing
import os
import time

import numpy as np
from PIL import Image

from benchutil import machine_info, run_cli
from keras_maskrcnn.config import TORCHVISION_BATCH_NORM_EPSILON  # TensorFlow-free

MODELS = ("torchvision", "mobilenetv3_fpn", "tiny")
RANDOM_CHECKPOINT_BATCH_NORM_EPSILON = 1e-5  # BatchNorm2d's, which weights=None builds
MOBILENET_TRAINABLE_STAGES = 0  # the backbone frozen: see the module docstring
STATISTICS_IMAGES = 64  # training images the stand-ins' batch-norm statistics are measured on
STATISTICS_BATCH = 8
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's


def training_images(annotation_file, canvas, count):
    """The first `count` images of a COCO set, resized to `canvas`², as float32 [N, S, S, 3] in
    0..255. (PIL, not TensorFlow: TensorFlow and torch at work in one process crash.)"""
    with open(annotation_file) as f:
        entries = json.load(f)["images"][:count]
    folder = os.path.dirname(annotation_file)
    return np.stack([np.asarray(Image.open(os.path.join(folder, entry["file_name"])).convert("RGB")
                                .resize((canvas, canvas), Image.BILINEAR), np.float32)
                     for entry in entries])


def in_child_process(function, *args):
    """Run `function(*args)` in a fresh Python process (torch and TensorFlow each get their own)."""
    child = multiprocessing.get_context("spawn").Process(target=function, args=args)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"{function.__name__} failed with exit code {child.exitcode}")


def write_torchvision_stand_in(path, images, seed):
    """torch.save of a seeded random `maskrcnn_resnet50_fpn` state dict whose batch norms hold
    the mean and variance of their inputs over `images` [N, H, W, 3]."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    trunk = model.backbone.body
    for module in trunk.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over all batches
    pixels = (torch.from_numpy(images).permute(0, 3, 1, 2) / 255
              - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    trunk.train()
    with torch.no_grad():
        for start in range(0, len(pixels), STATISTICS_BATCH):
            trunk(pixels[start:start + STATISTICS_BATCH])
    torch.save(model.state_dict(), path)


def write_mobilenet_stand_in(path, images, seed):
    """Weights file of a seeded random keras.applications MobileNetV3Large (include_top=False)
    whose batch norms hold the mean and variance of their inputs over `images` [N, H, W, 3]."""
    import keras

    keras.utils.set_random_seed(seed)
    network = keras.applications.MobileNetV3Large(
        input_shape=images.shape[1:], include_top=False, weights=None, include_preprocessing=False)
    norms = [layer for layer in network.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    pixels = images / 127.5 - 1  # mobilenetv3_fpn's normalisation
    # Momentum k/(k+1) at batch k makes the moving statistics the average of the batches'.
    for batch, start in enumerate(range(0, len(pixels), STATISTICS_BATCH)):
        for layer in norms:
            layer.momentum = batch / (batch + 1)
        network(pixels[start:start + STATISTICS_BATCH], training=True)
    network.save_weights(path)


def run(command, timings, name):
    """Run `keras-maskrcnn COMMAND...` in a new process, recording its wall time under `name`."""
    timings[name] = round(run_cli(command), 1)


def starting_point(model, args, data, work, timings):
    """Write the model's starting weights; return the `train` options that use them."""
    train_ann = os.path.join(data, "train", "annotations.json")
    canvas = ["--input-size", args.canvas, args.canvas, "--rois-per-image", args.rois_per_image]
    schedule = ["--epochs", args.epochs, "--steps-per-epoch", args.steps_per_epoch,
                "--batch-size", args.batch_size, "--learning-rate", args.learning_rate,
                "--warmup-steps", args.warmup_steps]
    if model == "tiny":
        return ["--preset", "tiny"]
    start = time.perf_counter()
    if model == "torchvision":
        checkpoint, epsilon = args.checkpoint, TORCHVISION_BATCH_NORM_EPSILON
        if checkpoint is None:
            checkpoint = os.path.join(work, "stand_in_maskrcnn.pth")
            epsilon = RANDOM_CHECKPOINT_BATCH_NORM_EPSILON
            in_child_process(write_torchvision_stand_in, checkpoint, training_images(
                train_ann, args.canvas, STATISTICS_IMAGES), args.seed)
            timings["stand_in"] = round(time.perf_counter() - start, 1)
        converted = os.path.join(work, "converted.keras")
        run(["convert-torchvision", checkpoint, "--out", converted, "--batch-norm-epsilon", epsilon],
            timings, "convert")
        return ["--preset", "r50_fpn", "--init-from", converted, "--trainable-stages",
                args.trainable_stages, *canvas, *schedule]
    weights = os.path.join(work, "stand_in_mobilenet_v3_large.weights.h5")
    in_child_process(write_mobilenet_stand_in, weights,
                     training_images(train_ann, args.canvas, STATISTICS_IMAGES), args.seed)
    timings["stand_in"] = round(time.perf_counter() - start, 1)
    return ["--preset", "mobilenetv3_fpn", "--backbone-weights", weights, "--trainable-stages",
            MOBILENET_TRAINABLE_STAGES, *canvas, *schedule]


def fine_tune(model, args, data):
    """Train and evaluate one starting point; its report entry."""
    work = os.path.join(args.work_dir, model)
    run_dir, metrics_path = os.path.join(work, "run"), os.path.join(work, "metrics.json")
    os.makedirs(work, exist_ok=True)
    timings, commands = {}, {}
    train_options = starting_point(model, args, data, work, timings)
    commands["train"] = ["train", "--train", os.path.join(data, "train", "annotations.json"),
                         *train_options, "--seed", args.seed, "--out", run_dir]
    commands["evaluate"] = ["evaluate", "--model", os.path.join(run_dir, "model.keras"),
                            "--data", os.path.join(data, "val", "annotations.json"),
                            "--out", metrics_path]
    for name, command in commands.items():
        run(command, timings, name)
    with open(metrics_path) as f:
        metrics = json.load(f)
    with open(os.path.join(run_dir, "history.json")) as f:
        history = json.load(f)
    return {"commands": {name: " ".join(["keras-maskrcnn", *map(str, command)])
                         for name, command in commands.items()},
            "seconds": timings, "epochs": len(history["loss"]),
            "first_loss": history["loss"][0], "final_loss": history["loss"][-1],
            "bbox_AP": metrics["bbox"]["AP"], "bbox_AP50": metrics["bbox"]["AP50"],
            "segm_AP": metrics["segm"]["AP"], "segm_AP50": metrics["segm"]["AP50"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--checkpoint", help="a maskrcnn_resnet50_fpn state dict (default: a "
                        "random stand-in)")
    parser.add_argument("--work-dir", default="outputs/finetune_shapes",
                        help="data, starting weights and run folders")
    parser.add_argument("--out", default="bench/results/finetune_shapes.json")
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--canvas", type=int, default=256, help="square canvas side, px")
    parser.add_argument("--rois-per-image", type=int, default=128)
    parser.add_argument("--trainable-stages", type=int, default=3)
    # For torchvision and mobilenetv3_fpn; tiny keeps its preset's schedule. The rate is
    # torchvision's fine-tuning tutorial's for batch 2.
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=0.005)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = os.path.join(args.work_dir, "data")
    timings = {}
    run(["make-shapes", data, "--train", args.train_images, "--val", args.val_images,
         "--seed", args.seed], timings, "make_shapes")
    report = {"machine": machine_info(),
              "checkpoint": args.checkpoint or "random stand-ins",
              "settings": vars(args), "models": {}}
    if os.path.exists(args.out):  # keep the other models' entries of an earlier run
        with open(args.out) as f:
            report["models"] = json.load(f).get("models", {})
    for model in args.models:
        report["models"][model] = fine_tune(model, args, data)
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

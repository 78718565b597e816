"""Fine-tuning end to end, as the README's worked example: a torchvision `maskrcnn_resnet50_fpn`
checkpoint → `convert-torchvision` → `train --init-from ... --trainable-stages 3` on the shapes
set at a small canvas → `evaluate`. Writes the AP, the commands and each step's wall time to
JSON (default bench/results/finetune_shapes.json).

Each step runs the `keras-maskrcnn` command line in its own process, as a user would. Without
`--checkpoint` the checkpoint is a seeded torchvision model with random weights (built with
weights=None, so its batch norms use ε = 1e-5), saved with torch.save(model.state_dict()): it
times the steps, but its features are no better than noise, so its AP says little. With the
published COCO file (maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth) the AP is that of fine-tuning.

  .venv/bin/python bench/finetune_shapes.py [--checkpoint PTH] [--epochs E] [--steps-per-epoch N]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

RANDOM_CHECKPOINT_BATCH_NORM_EPSILON = 1e-5  # BatchNorm2d's, which weights=None builds
PUBLISHED_BATCH_NORM_EPSILON = 0.0  # see convert.torchvision.PUBLISHED_BATCH_NORM_EPSILON
SCHEDULE_PRESET = "r50_fpn"  # SGD with warmup and a step schedule; the model is the checkpoint's


def write_random_checkpoint(path, seed):
    """torch.save of a seeded, randomly initialised maskrcnn_resnet50_fpn's state dict."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    torch.save(model.state_dict(), path)


def run(command, timings, name):
    """Run `keras-maskrcnn COMMAND...` in a new process, recording its wall time under `name`."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "keras_maskrcnn", *map(str, command)], check=True)
    timings[name] = round(time.perf_counter() - start, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a maskrcnn_resnet50_fpn state dict (default: random "
                        "weights)")
    parser.add_argument("--work-dir", default="outputs/finetune_shapes",
                        help="data, converted model and run folder")
    parser.add_argument("--out", default="bench/results/finetune_shapes.json")
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--canvas", type=int, default=256, help="square canvas side, px")
    parser.add_argument("--trainable-stages", type=int, default=3)
    # About an hour on 2 CPU cores (12 s a step); the rate is torchvision's fine-tuning
    # tutorial's for batch 2.
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=0.005)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    work = args.work_dir
    data, converted, run_dir = (os.path.join(work, "data"), os.path.join(work, "coco.keras"),
                                os.path.join(work, "run"))
    metrics_path = os.path.join(work, "metrics.json")
    os.makedirs(work, exist_ok=True)
    timings = {}
    checkpoint, epsilon = args.checkpoint, PUBLISHED_BATCH_NORM_EPSILON
    if checkpoint is None:
        checkpoint = os.path.join(work, "random_maskrcnn.pth")
        epsilon = RANDOM_CHECKPOINT_BATCH_NORM_EPSILON
        start = time.perf_counter()
        write_random_checkpoint(checkpoint, args.seed)
        timings["random_checkpoint"] = round(time.perf_counter() - start, 1)

    commands = {
        "make_shapes": ["make-shapes", data, "--train", args.train_images, "--val", args.val_images,
                        "--seed", args.seed],
        "convert": ["convert-torchvision", checkpoint, "--out", converted,
                    "--batch-norm-epsilon", epsilon],
        "train": ["train", "--train", os.path.join(data, "train", "annotations.json"),
                  "--preset", SCHEDULE_PRESET, "--init-from", converted,
                  "--input-size", args.canvas, args.canvas,
                  "--trainable-stages", args.trainable_stages, "--epochs", args.epochs,
                  "--steps-per-epoch", args.steps_per_epoch, "--batch-size", args.batch_size,
                  "--learning-rate", args.learning_rate, "--warmup-steps", args.warmup_steps,
                  "--seed", args.seed, "--out", run_dir],
        "evaluate": ["evaluate", "--model", os.path.join(run_dir, "model.keras"),
                     "--data", os.path.join(data, "val", "annotations.json"),
                     "--out", metrics_path],
    }
    for name, command in commands.items():
        run(command, timings, name)
    with open(metrics_path) as f:
        metrics = json.load(f)
    with open(os.path.join(run_dir, "history.json")) as f:
        history = json.load(f)

    steps = args.epochs * args.steps_per_epoch
    report = {
        "machine": {"cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine()},
        "checkpoint": args.checkpoint or "random weights",
        "commands": {name: " ".join(["keras-maskrcnn", *map(str, command)])
                     for name, command in commands.items()},
        "seconds": timings,
        # Includes loading, weight copying and the first step's tracing.
        "train_seconds_per_step": round(timings["train"] / steps, 2),
        "final_loss": history["loss"][-1],
        "bbox_AP": metrics["bbox"]["AP"], "segm_AP": metrics["segm"]["AP"],
        "bbox_AP50": metrics["bbox"]["AP50"], "segm_AP50": metrics["segm"]["AP50"],
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

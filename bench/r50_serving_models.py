"""The models and images `bench_serve.py --plan heavy` serves: a converted R50-FPN as
SavedModels in float32 and bfloat16, and 480 × 640 JPEGs.

In OUT (default outputs/r50_serving):
- r50_fpn.pth: the state dict of a random-init torchvision `maskrcnn_resnet50_fpn`, torch seeded
  with --seed, as bench_torchvision.py builds it (score threshold 0.05, torchvision's default);
- r50_fpn.keras: it converted by `keras-maskrcnn convert-torchvision --batch-norm-epsilon 1e-5`
  (the ε of a model built with weights=None), whose config keeps the 0.05 threshold;
- float32/1 and bfloat16/1: `keras-maskrcnn export --format saved_model`, then with
  `--precision bfloat16`, with no `--input-size`: the converted config's canvas per image
  resizes each image by torchvision's rule (a 480 × 640 image to 800 × 1066) and pads it to
  multiples of 32 (800 × 1088);
- images/: --images JPEGs of 480 × 640 (quality 90) of smooth colour blobs with pixel noise
  (`bench_torchvision.bench_image`, seeds 0, 1, ...).

  flock /tmp/heavy.lock .venv/bin/python bench/r50_serving_models.py [--out DIR]
"""

import argparse
import os

from PIL import Image

from bench_torchvision import (DEFAULT_SCORE_THRESHOLD, TORCH_BATCH_NORM_EPSILON, bench_image,
                               import_torch, save_seeded_torch_model)
from benchutil import run_cli

IMAGE_HW = (480, 640)
JPEG_QUALITY = 90


def write_images(folder, count):
    """`count` JPEGs of IMAGE_HW in `folder`, image_000.jpg, ... (seed = index)."""
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        Image.fromarray(bench_image(IMAGE_HW, seed=index)).save(
            os.path.join(folder, f"image_{index:03d}.jpg"), quality=JPEG_QUALITY)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/r50_serving", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="torch's seed for the weights")
    parser.add_argument("--images", type=int, default=16, help="how many JPEGs")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    write_images(os.path.join(args.out, "images"), args.images)
    torch, torchvision = import_torch()
    checkpoint = os.path.join(args.out, "r50_fpn.pth")
    save_seeded_torch_model(torch, torchvision, args.seed, DEFAULT_SCORE_THRESHOLD, checkpoint)
    model = os.path.join(args.out, "r50_fpn.keras")
    run_cli(["convert-torchvision", checkpoint, "--out", model,
             "--batch-norm-epsilon", TORCH_BATCH_NORM_EPSILON])
    for precision in ("float32", "bfloat16"):
        run_cli(["export", "--model", model, "--format", "saved_model", "--precision", precision,
                 "--out", os.path.join(args.out, precision, "1")])


if __name__ == "__main__":
    main()

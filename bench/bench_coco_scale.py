"""The data path at COCO train2017's size: `show-data` and a 5-step `train` on 118,287 images.

Builds, in a temporary folder, an annotation file shaped like instances_train2017.json:
118,287 images and about 860k annotations (7.3 per image; 1 % crowd regions as uncompressed
RLE, the rest polygons of 8-40 points; about 370 MiB of JSON), whose image files are hard
links to a few real JPEGs of COCO's common sizes. Then runs, each as a new process, as a
user would:

  keras-maskrcnn show-data ANN --images IMAGES --out OUT
  keras-maskrcnn train --train ANN --train-images IMAGES --preset tiny --epochs 1 \
      --steps-per-epoch 5 --out RUN

and records each one's wall time and peak resident memory (the child's ru_maxrss), so that
growth in the data path (reading, the bad-data scan, indexing) shows up. Writes JSON (default
bench/results/coco_scale.json) with the commit and the CPU (`benchutil.machine_info`). Not part of `make test`:

  flock /tmp/heavy.lock .venv/bin/python bench/bench_coco_scale.py
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from benchutil import machine_info, write_report

COCO_TRAIN_IMAGES = 118287
ANNOTATIONS_PER_IMAGE = 7.3  # 860,001 in instances_train2017.json
CROWD_FRACTION = 0.01  # 9,046 of them are crowd regions (uncompressed RLE)
# (width, height) of the real JPEGs the image files link to: COCO's most common sizes.
IMAGE_SIZES = ((640, 480), (640, 427), (480, 640), (640, 426), (427, 640), (500, 375))
CATEGORIES = 80
POLYGON_POINTS = (8, 40)


def write_images(folder, count, rng):
    """`count` image files in `folder`, hard links to one JPEG per IMAGE_SIZES → the size
    (w, h) of each."""
    os.makedirs(folder)
    sources = []
    for index, (width, height) in enumerate(IMAGE_SIZES):
        path = os.path.join(folder, f"source_{index}.jpg")
        pixels = rng.integers(0, 256, (height // 8, width // 8, 3), np.uint8)
        Image.fromarray(pixels).resize((width, height)).save(path, quality=90)
        sources.append(path)
    picks = rng.integers(0, len(IMAGE_SIZES), count)
    for image_id, pick in enumerate(picks, 1):
        os.link(sources[pick], os.path.join(folder, f"{image_id:012d}.jpg"))
    return [IMAGE_SIZES[pick] for pick in picks]


def polygon(rng, width, height):
    """A star-shaped polygon inside the image: flat [x, y, ...] with 2 decimals, its bbox and
    area."""
    points = rng.integers(*POLYGON_POINTS)
    cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
    radius = rng.uniform(4, 0.3 * min(width, height))
    angles = np.sort(rng.uniform(0, 2 * np.pi, points))
    radii = radius * rng.uniform(0.5, 1.0, points)
    xs = np.clip(cx + radii * np.cos(angles), 0, width - 1).round(2)
    ys = np.clip(cy + radii * np.sin(angles), 0, height - 1).round(2)
    area = 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))
    bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()),
            float(ys.max() - ys.min())]
    return np.stack([xs, ys], 1).ravel().tolist(), bbox, float(area)


def crowd_rle(rng, width, height):
    """An uncompressed RLE (COCO's crowd form) of a rectangle, with its bbox and area."""
    w, h = int(rng.integers(20, width // 2)), int(rng.integers(20, height // 2))
    x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
    # Column-major runs: x columns of background, then per column y, h, height - y - h.
    counts = [x * height + y]
    for _ in range(w - 1):
        counts += [h, height - h]
    counts += [h, (width - x - w) * height + height - y - h]
    return {"size": [height, width], "counts": counts}, [x, y, w, h], float(w * h)


def write_annotations(path, sizes, rng):
    """The annotation file for images of `sizes` → (annotation count, crowd count)."""
    images, annotations, crowd = [], [], 0
    per_image = rng.poisson(ANNOTATIONS_PER_IMAGE, len(sizes))
    for image_id, ((width, height), count) in enumerate(zip(sizes, per_image), 1):
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width,
                       "height": height})
        for _ in range(count):
            is_crowd = rng.random() < CROWD_FRACTION
            if is_crowd:
                segmentation, bbox, area = crowd_rle(rng, width, height)
                crowd += 1
            else:
                points, bbox, area = polygon(rng, width, height)
                segmentation = [points]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(rng.integers(1, CATEGORIES + 1)),
                                "iscrowd": int(is_crowd), "bbox": bbox, "area": area,
                                "segmentation": segmentation})
    categories = [{"id": i, "name": f"class_{i}", "supercategory": "thing"}
                  for i in range(1, CATEGORIES + 1)]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return len(annotations), crowd


def measured(argv, log_path):
    """Run `keras-maskrcnn ARGV` in a new process, output to `log_path` → {"seconds",
    "peak_rss_mib"}; a failure raises, showing the log's end."""
    argv = [str(arg) for arg in argv]
    print("$ keras-maskrcnn " + " ".join(argv), flush=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "keras_maskrcnn", *argv],
                                   stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        with open(log_path) as log:
            raise RuntimeError(f"keras-maskrcnn {argv[0]} failed:\n{log.read()[-3000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=COCO_TRAIN_IMAGES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", help="build here and keep it (default: a temporary "
                        "folder, removed at the end)")
    parser.add_argument("--out", default=os.path.join("bench", "results", "coco_scale.json"))
    args = parser.parse_args()

    work = args.work_dir or tempfile.mkdtemp(prefix="coco_scale_")
    try:
        rng = np.random.default_rng(args.seed)
        image_dir = os.path.join(work, "train2017")
        annotation_file = os.path.join(work, "annotations", "instances_train2017.json")
        os.makedirs(os.path.dirname(annotation_file), exist_ok=True)
        start = time.perf_counter()
        sizes = write_images(image_dir, args.images, rng)
        num_annotations, num_crowd = write_annotations(annotation_file, sizes, rng)
        build_seconds = time.perf_counter() - start
        print(f"built {args.images} images, {num_annotations} annotations in "
              f"{build_seconds:.0f} s", flush=True)
        show = measured(["show-data", annotation_file, "--images", image_dir,
                         "--out", os.path.join(work, "shown")], os.path.join(work, "show.log"))
        train = measured(["train", "--train", annotation_file, "--train-images", image_dir,
                          "--preset", "tiny", "--epochs", "1", "--steps-per-epoch", "5",
                          "--out", os.path.join(work, "run")], os.path.join(work, "train.log"))
        report = {
            "machine": machine_info(python=sys.version.split()[0]),
            "data": {"images": args.images, "annotations": num_annotations,
                     "crowd_annotations": num_crowd,
                     "annotation_file_mib": round(os.path.getsize(annotation_file) / 2**20),
                     "build_seconds": round(build_seconds, 1)},
            "show_data": show,
            "train_tiny_5_steps": train,
        }
        write_report(report, args.out)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""YOLO11n-seg trained from scratch beside `tiny`, on a shapes set, scored by the project's
own pycocotools code (keras_maskrcnn/evaluation.py) so both models are scored identically.

Makes the set (`keras-maskrcnn make-shapes`, with --hard for the hard preset) or takes one
(--data), converts it to YOLO's format (images linked, one polygon per instance, classes
numbered by sorted category id), trains ultralytics' `yolo11n-seg.yaml` (no pretrained weights,
imgsz 128, batch 16) for a wall-clock budget with YOLO_OFFLINE=1 and 2 threads, predicts the
validation images (confidence ≥ 0.001, ≤ 100 per image, masks at the image's size), and
writes bbox and segm AP/AP50/AP75, training seconds and images/s as JSON. Both the last
weights (as `tiny` is scored: the model training ends with) and ultralytics' best.pt (chosen
on the same validation set, so flattered) are scored.

ultralytics is not a dependency of the project: it runs in an environment of its own,
through bench/yolo_worker.py. Make that environment once:

  python3.11 -m venv /work/yolo-venv
  /work/yolo-venv/bin/python -m pip install ultralytics==8.4.190 torch==2.14.1 \\
      torchvision==0.29.1 pycocotools==2.0.11

Then (10 minutes of training, as the side-by-side runs use):

  flock /tmp/heavy.lock .venv/bin/python bench/yolo_shapes.py --hard --seed 101 \\
      --out bench/results/yolo_shapes_hard.json
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

from benchutil import machine_info, run_cli, write_report

from keras_maskrcnn.commands import DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES  # TensorFlow-free

DEFAULT_YOLO_PYTHON = "/work/yolo-venv/bin/python"
DEFAULT_BUDGET_SECONDS = 600
BATCH = 16
THREADS = 2
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "yolo_worker.py")


def merged_outline(loops):
    """Outer outlines (flat [x1, y1, ...] lists) of one instance → one polygon [[x, y], ...]
    for inclusive filling (`inclusive_vertices`), parts joined by zero-width bridges between their nearest vertices, there and back, as
    YOLO's format holds one polygon per instance."""
    parts = [inclusive_vertices(np.asarray(loop, float).reshape(-1, 2)) for loop in loops]
    parts.sort(key=lambda part: -_area(part))
    merged = parts[0]
    for part in parts[1:]:
        distances = ((merged[:, None, :] - part[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(np.argmin(distances), distances.shape)
        merged = np.concatenate([merged[:i + 1], part[j:], part[:j + 1], merged[i:]])
    return merged


def inclusive_vertices(points):
    """Pixel-edge outline [N, 2] (corners only, clockwise on screen) → the polygon whose filling
    with boundary pixels included (cv2.fillPoly, which ultralytics uses for its masks, and PIL)
    covers the same pixels: vertices on a right edge move left by 1, on a bottom edge up by 1."""
    before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    incoming, outgoing = points - before, after - points
    horizontal = np.where((incoming[:, 1] == 0)[:, None], incoming, outgoing)
    vertical = np.where((incoming[:, 0] == 0)[:, None], incoming, outgoing)
    return points - np.stack([vertical[:, 1] > 0, horizontal[:, 0] < 0], axis=1)


def _area(points):
    """Shoelace area of [N, 2] points, positive for outlines running clockwise on screen."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def convert_to_yolo(annotation_file, out_dir, split, category_ids):
    """Write `out_dir/images/<split>/` (links to the set's images) and `out_dir/labels/<split>/`
    (one "class x1 y1 x2 y2 ..." line per instance, coordinates over the image's size).
    Holes are filled: YOLO's polygons cannot hold them. Returns the number of images."""
    from keras_maskrcnn.data.coco import CocoDataset
    from keras_maskrcnn.data.polygons import mask_outlines

    dataset = CocoDataset(annotation_file)
    image_dir = os.path.join(out_dir, "images", split)
    label_dir = os.path.join(out_dir, "labels", split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    for image_id in dataset.image_ids:
        info = dataset.image_info(image_id)
        stem = os.path.splitext(os.path.basename(info["file_name"]))[0]
        link = os.path.join(image_dir, os.path.basename(info["file_name"]))
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(info["path"]), link)
        lines = []
        for annotation in dataset.coco.loadAnns(dataset.coco.getAnnIds(imgIds=[image_id])):
            mask = dataset.coco.annToMask(annotation).astype(bool)
            outer = [loop for loop in mask_outlines(mask)
                     if _area(np.reshape(loop, (-1, 2))) > 0]
            if not outer:
                continue
            polygon = merged_outline(outer) / [info["width"], info["height"]]
            lines.append(" ".join([str(category_ids.index(annotation["category_id"]))]
                                  + [f"{v:.6f}" for v in polygon.ravel()]))
        with open(os.path.join(label_dir, stem + ".txt"), "w") as f:
            f.write("\n".join(lines) + ("\n" if lines else ""))
    return len(dataset.image_ids)


def write_yolo_set(data, out_dir):
    """The shapes set at `data` in YOLO's layout → (data.yaml path, category ids by class
    index, names by class index, training image count)."""
    with open(os.path.join(data, "train", "annotations.json")) as f:
        categories = sorted(json.load(f)["categories"], key=lambda c: c["id"])
    category_ids = [c["id"] for c in categories]
    train_images = convert_to_yolo(os.path.join(data, "train", "annotations.json"), out_dir,
                                   "train", category_ids)
    convert_to_yolo(os.path.join(data, "val", "annotations.json"), out_dir, "val", category_ids)
    yaml_path = os.path.join(out_dir, "data.yaml")
    with open(yaml_path, "w") as f:
        f.write(f"path: {os.path.abspath(out_dir)}\ntrain: images/train\nval: images/val\n"
                "names:\n" + "".join(f"  {k}: {c['name']}\n" for k, c in enumerate(categories)))
    return yaml_path, category_ids, train_images


def run_worker(yolo_python, argv):
    """bench/yolo_worker.py ARGV... in the YOLO environment, offline, on THREADS threads."""
    env = dict(os.environ, YOLO_OFFLINE="1", OMP_NUM_THREADS=str(THREADS),
               MKL_NUM_THREADS=str(THREADS), TORCH_THREADS=str(THREADS),
               YOLO_VERBOSE="False")
    argv = [yolo_python, WORKER, *map(str, argv)]
    print("$ " + " ".join(map(shlex.quote, argv)), flush=True)
    subprocess.run(argv, check=True, env=env)


def score(val_annotation, results):
    """The project's pycocotools scoring of COCO `results` on the validation set."""
    from keras_maskrcnn import evaluation
    from keras_maskrcnn.data.coco import CocoDataset

    return evaluation.evaluate_coco(CocoDataset(val_annotation).coco, results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="an existing shapes set (DIR/train, DIR/val); "
                        "default: make one with --seed (and --hard)")
    parser.add_argument("--seed", type=int, default=0, help="the set's seed (make-shapes --seed) "
                        "and YOLO's training seed")
    parser.add_argument("--hard", action="store_true", help="make-shapes --hard")
    parser.add_argument("--train-images", type=int, default=DEMO_TRAIN_IMAGES)
    parser.add_argument("--val-images", type=int, default=DEMO_VAL_IMAGES)
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_SECONDS,
                        help="training wall time in seconds (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=THREADS,
                        help="ultralytics' data-loading processes (default: %(default)s)")
    parser.add_argument("--yolo-python", default=DEFAULT_YOLO_PYTHON)
    parser.add_argument("--work", default=os.path.join("outputs", "yolo_shapes"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if not os.path.exists(args.yolo_python):
        parser.error(f"--yolo-python {args.yolo_python} does not exist; make the environment "
                     "as this script's docstring says")
    name = f"shapes-{'hard-' if args.hard else ''}{args.seed}-{args.train_images}"
    data = args.data
    if data is None:
        data = os.path.join(args.work, name)
        run_cli(["make-shapes", data, "--seed", args.seed, "--train", args.train_images,
                 "--val", args.val_images, *(["--hard"] if args.hard else [])])
    yolo_dir = os.path.join(args.work, f"yolo-{os.path.basename(os.path.normpath(data))}")
    yaml_path, category_ids, train_images = write_yolo_set(data, yolo_dir)
    run_dir = os.path.abspath(os.path.join(yolo_dir, "run"))
    start = time.perf_counter()
    run_worker(args.yolo_python, ["train", yaml_path, run_dir, args.budget, BATCH, args.workers,
                                  args.seed])
    process_seconds = time.perf_counter() - start
    with open(os.path.join(run_dir, "train_record.json")) as f:
        trained = json.load(f)

    val_annotation = os.path.join(data, "val", "annotations.json")
    from keras_maskrcnn.data.coco import CocoDataset
    val = CocoDataset(val_annotation)
    listing = os.path.join(yolo_dir, "val_images.json")
    with open(listing, "w") as f:
        json.dump({"category_ids": category_ids,
                   "images": [{"id": int(i), "path": os.path.abspath(val.image_info(i)["path"])}
                              for i in val.image_ids]}, f)
    scored = {}
    for weights in ("last", "best"):
        out_json = os.path.join(yolo_dir, f"predictions_{weights}.json")
        run_worker(args.yolo_python, ["predict", os.path.join(run_dir, "weights", f"{weights}.pt"),
                                      listing, out_json])
        with open(out_json) as f:
            predicted = json.load(f)
        scored[weights] = {"metrics": score(val_annotation, predicted["results"]),
                           "detections": len(predicted["results"]),
                           "predict_images_per_second": round(
                               len(val.image_ids) / predicted["predict_seconds"], 1)}

    report = read_json(args.out) if os.path.exists(args.out) else {"runs": []}
    report["machine"] = machine_info()
    report.setdefault("commands", []).append(" ".join(map(shlex.quote, sys.argv)))
    record = {"data": data, "data_seed": args.seed, "hard": args.hard,
              "train_images": train_images, "val_images": len(val.image_ids),
              "model": "yolo11n-seg.yaml (from scratch)", "imgsz": 128, "batch": BATCH,
              "threads": THREADS, "workers": args.workers, "budget_seconds": args.budget,
              "train_process_seconds": round(process_seconds, 1), **trained,
              "images_per_second": round(trained["epochs"] * train_images
                                         / trained["train_seconds"], 1),
              "last": scored["last"], "best": scored["best"]}
    report["runs"] = [run for run in report["runs"] if run["data"] != data] + [record]
    write_report(report, args.out)


def read_json(path):
    with open(path) as f:
        return json.load(f)


if __name__ == "__main__":
    main()

"""The YOLO11n-seg side of bench/yolo_shapes.py; runs in the YOLO environment, not the project's.

  train DATA_YAML RUN_DIR BUDGET_S BATCH WORKERS SEED → RUN_DIR/train_record.json
  predict WEIGHTS IMAGE_LIST_JSON OUT_JSON → COCO results (compressed RLE masks)

It imports only ultralytics, torch, numpy and pycocotools (all in /work/yolo-venv; see
bench/yolo_shapes.py for how that environment is made). Threads are set by the caller
(OMP_NUM_THREADS, torch.set_num_threads below from TORCH_THREADS).
"""

import csv
import json
import os
import sys
import time

import numpy as np
import torch
from pycocotools import mask as mask_utils
from ultralytics import YOLO

IMAGE_SIZE = 128
MODEL_YAML = "yolo11n-seg.yaml"  # the architecture only: no pretrained weights
# Scoring wants every detection a model would rank: pycocotools' own cap is 100 per image.
PREDICT_CONFIDENCE = 0.001
MAX_DETECTIONS = 100


def train(data_yaml, run_dir, budget_seconds, batch, workers, seed):
    """Train from scratch for `budget_seconds` of wall time (ultralytics' `time`, which also
    fits its learning-rate schedule into it); writes and returns the run's record."""
    model = YOLO(MODEL_YAML)
    start = time.perf_counter()
    model.train(data=data_yaml, imgsz=IMAGE_SIZE, epochs=1000, time=budget_seconds / 3600,
                batch=batch, workers=workers, device="cpu", pretrained=False, seed=seed,
                project=os.path.dirname(run_dir), name=os.path.basename(run_dir), exist_ok=True,
                plots=False, amp=False, verbose=False)
    seconds = time.perf_counter() - start
    with open(os.path.join(run_dir, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    record = {"train_seconds": round(seconds, 1), "epochs": len(rows),
              "epoch_end_seconds": [round(float(row["time"]), 1) for row in rows],
              "ultralytics_val": {key.strip(): float(value) for key, value in rows[-1].items()
                                  if key.strip().startswith("metrics/")}}
    with open(os.path.join(run_dir, "train_record.json"), "w") as f:
        json.dump(record, f, indent=2)
    return record


def predict(weights, image_list, out_json):
    """Detections on each image of `image_list` ([{"id", "path"}]) → COCO results file, with
    the model's class index k written as the k-th category id of `image_list`'s header."""
    with open(image_list) as f:
        listing = json.load(f)
    category_ids = listing["category_ids"]
    model = YOLO(weights)
    results = []
    start = time.perf_counter()
    for entry in listing["images"]:
        found = model.predict(entry["path"], imgsz=IMAGE_SIZE, conf=PREDICT_CONFIDENCE,
                              max_det=MAX_DETECTIONS, retina_masks=True, device="cpu",
                              verbose=False)[0]
        if found.masks is None:
            continue
        boxes = found.boxes.xyxy.numpy()
        masks = found.masks.data.numpy() > 0.5  # [K, H, W] at the image's size (retina_masks)
        rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        for (x1, y1, x2, y2), score, cls, rle in zip(boxes, found.boxes.conf.numpy(),
                                                     found.boxes.cls.numpy(), rles):
            results.append({"image_id": entry["id"], "category_id": category_ids[int(cls)],
                            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                            "score": float(score),
                            "segmentation": {"size": [int(s) for s in rle["size"]],
                                             "counts": rle["counts"].decode("ascii")}})
    seconds = time.perf_counter() - start
    with open(out_json, "w") as f:
        json.dump({"predict_seconds": round(seconds, 2), "results": results}, f)


def main():
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    command, *args = sys.argv[1:]
    if command == "train":
        data_yaml, run_dir, budget, batch, workers, seed = args
        train(data_yaml, run_dir, float(budget), int(batch), int(workers), int(seed))
    elif command == "predict":
        predict(*args)
    else:
        raise SystemExit(f"unknown command {command!r}: train or predict")


if __name__ == "__main__":
    main()

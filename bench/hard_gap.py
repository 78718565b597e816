"""Where two models' AP differs on a shapes set: AP at each IoU threshold from 0.5 to 0.95, per
category, per size, and over occluded shapes, bbox and segm, from the same pycocotools
COCOeval the project scores with (keras_maskrcnn/evaluation.py). Writes JSON.

  .venv/bin/python bench/hard_gap.py --data outputs/tiny_shapes/shapes-hard-101-2000 \\
      --model tiny=outputs/tiny_shapes/default-hard-101-2000/model.keras \\
      --results yolo=outputs/yolo_shapes/yolo-shapes-hard-101-2000/predictions_last.json \\
      --out bench/results/hard_gap.json

--model predicts the validation images with a saved model (`load_predictor`); --results takes
COCO results already written (bench/yolo_shapes.py's predictions_*.json, its "results" list).

Subsets are scored as COCO scores its size ranges: a ground-truth shape outside the subset is
ignored, and so is a detection matched to none whose own area lies outside it. Sizes are
visible areas below 16², 16² to 32², and above (the images are 128 px). The annotations hold
only each shape's visible part, so occlusion is estimated: a shape is occluded when its visible
area fills less than OCCLUDED_FILL of what its kind fills of its own box unoccluded (a square
all of it, a circle π/4, a triangle half).
"""

import argparse
import contextlib
import copy
import io
import json
import os
import shlex
import sys

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from benchutil import machine_info, write_report

IOU_THRESHOLDS = np.round(np.linspace(0.5, 0.95, 10), 2)
SIZES = {"small (< 16²)": (0, 16 ** 2), "medium (16²–32²)": (16 ** 2, 32 ** 2),
         "large (> 32²)": (32 ** 2, 1e10)}
UNOCCLUDED_FILL = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}
OCCLUDED_FILL = 0.7
# Subsets that are not size ranges are scored through the area range: each ground-truth shape
# gets area IN_SUBSET or OUT_OF_SUBSET, and the range takes the first.
IN_SUBSET, OUT_OF_SUBSET = 1.0, 1e12


def model_results(model_path, dataset):
    """COCO results of the saved model at `model_path` on every image of `dataset`."""
    from keras_maskrcnn.evaluation import detections_to_coco_results
    from keras_maskrcnn.inference import load_predictor, predict_in_batches

    predictor = load_predictor(model_path)
    images = (dataset.load_image(image_id) for image_id in dataset.image_ids)
    results = []
    for image_id, found in zip(dataset.image_ids,
                               predict_in_batches(predictor, images, 8, None, full_masks=True)):
        results.extend(detections_to_coco_results(image_id, found))
    return results


def occluded(annotation, category_names):
    x, y, w, h = annotation["bbox"]
    fill = annotation["area"] / max(w * h, 1.0)
    return fill < OCCLUDED_FILL * UNOCCLUDED_FILL[category_names[annotation["category_id"]]]


def precision(coco_gt, results, iou_type, category_ids=None, area_range=None):
    """pycocotools' accumulated precision [T, R, K] (max 100 detections) for one subset."""
    with contextlib.redirect_stdout(io.StringIO()):
        detections = [dict(result) for result in results]
        if iou_type == "segm":
            for result in detections:  # as evaluation does when it loads results: the mask's area
                result.pop("bbox", None)
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if category_ids is not None:
            evaluator.params.catIds = list(category_ids)
        if area_range is not None:
            evaluator.params.areaRng = [list(area_range)]
            evaluator.params.areaRngLbl = ["subset"]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][:, :, :, 0, -1]


def average(values):
    values = values[values > -1]
    return round(float(values.mean()), 4) if values.size else None


def scores(coco_gt, results, iou_type, **subset):
    """{"AP", "AP50", "AP75", "AP90", "AP_by_iou": [10]} for one subset."""
    table = precision(coco_gt, results, iou_type, **subset)
    by_iou = [average(table[t]) for t in range(len(IOU_THRESHOLDS))]
    index = {float(t): i for i, t in enumerate(IOU_THRESHOLDS)}
    return {"AP": average(table), "AP50": by_iou[index[0.5]], "AP75": by_iou[index[0.75]],
            "AP90": by_iou[index[0.9]], "AP_by_iou": by_iou}


def with_subset_areas(coco_gt, chosen):
    """A copy of `coco_gt` whose annotation areas put `chosen(annotation)` in IN_SUBSET."""
    dataset = copy.deepcopy(coco_gt.dataset)
    for annotation in dataset["annotations"]:
        annotation["area"] = IN_SUBSET if chosen(annotation) else OUT_OF_SUBSET
    with contextlib.redirect_stdout(io.StringIO()):
        subset = COCO()
        subset.dataset = dataset
        subset.createIndex()
    return subset


def analyse(coco_gt, results):
    names = {c["id"]: c["name"] for c in coco_gt.dataset["categories"]}
    flagged = with_subset_areas(coco_gt, lambda a: occluded(a, names))
    report = {}
    for iou_type in ("bbox", "segm"):
        report[iou_type] = {
            "all": scores(coco_gt, results, iou_type),
            "by_category": {names[c]: scores(coco_gt, results, iou_type, category_ids=[c])
                            for c in sorted(names)},
            "by_size": {label: scores(coco_gt, results, iou_type, area_range=rng)
                        for label, rng in SIZES.items()},
            "occluded": scores(flagged, results, iou_type, area_range=(0, 2 * IN_SUBSET)),
        }
    return report


def named_path(text):
    name, separator, path = text.partition("=")
    if not separator or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a shapes set (DIR/val/annotations.json)")
    parser.add_argument("--model", type=named_path, action="append", default=[])
    parser.add_argument("--results", type=named_path, action="append", default=[])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from keras_maskrcnn.data import CocoDataset

    dataset = CocoDataset(os.path.join(args.data, "val", "annotations.json"))
    coco_gt = dataset.coco
    names = {c["id"]: c["name"] for c in coco_gt.dataset["categories"]}
    annotations = coco_gt.dataset["annotations"]
    report = {"sets": []}
    if os.path.exists(args.out):
        with open(args.out) as f:
            report = json.load(f)
    report["machine"] = machine_info()
    report.setdefault("commands", []).append(" ".join(map(shlex.quote, sys.argv)))
    entry = {"data": args.data, "val_images": len(dataset.image_ids),
             "shapes": len(annotations),
             "occluded_shapes": sum(occluded(a, names) for a in annotations),
             "occluded_fill": OCCLUDED_FILL, "models": {}}
    for name, path in args.model:
        entry["models"][name] = analyse(coco_gt, model_results(path, dataset))
    for name, path in args.results:
        with open(path) as f:
            results = json.load(f)
        entry["models"][name] = analyse(coco_gt, results["results"] if isinstance(results, dict)
                                        else results)
    report["sets"] = [s for s in report["sets"] if s["data"] != args.data] + [entry]
    write_report(report, args.out)


if __name__ == "__main__":
    main()

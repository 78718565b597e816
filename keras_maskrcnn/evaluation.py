"""COCO bbox and segm AP through pycocotools, of a predictor on a COCO-format set.

Shapes: K detections, H, W original image size.

Detections use `[y1, x1, y2, x2]` boxes; this module is one of the two places (with `data/`)
that converts them to COCO's `[x, y, w, h]`.
"""

import contextlib
import copy
import io

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from keras_maskrcnn.data.coco import DataError
from keras_maskrcnn.data.validation import report_decode_failure
from keras_maskrcnn.inference import predict_in_batches

IOU_TYPES = ("bbox", "segm")
# The first six entries of COCOeval.stats, in pycocotools' order.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def detections_to_coco_results(image_id, detections):
    """Convert one image's detections (from `Predictor.predict(..., full_masks=True)`) to COCO results.

    Args:
      image_id: the COCO image id.
      detections: dict with `boxes` [K, 4], `scores` [K], `category_ids` [K] and `full_masks`
        bool [K, H, W].
    Returns:
      list of K dicts with `image_id`, `category_id`, `bbox` [x, y, w, h], `score` and
      `segmentation` (compressed RLE, `counts` as str).
    """
    boxes = np.asarray(detections["boxes"], np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return []
    full_masks = np.asarray(detections["full_masks"])
    # pycocotools reads column-major [H, W, K] uint8.
    rles = mask_util.encode(np.asfortranarray(full_masks.transpose(1, 2, 0).astype(np.uint8)))
    results = []
    for (y1, x1, y2, x2), score, category_id, rle in zip(
            boxes, detections["scores"], detections["category_ids"], rles):
        results.append({
            "image_id": int(image_id),
            "category_id": int(category_id),
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(score),
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        })
    return results


def evaluate_predictor(predictor, dataset, batch_size, bad_data=None, progress=None):
    """COCO bbox and segm AP of `predictor` (a `Predictor`) on `dataset` (a `CocoDataset`).

    Images that fail to decode are reported to `bad_data` (a `BadDataPolicy`): in mode "skip"
    they are left out of the evaluation; without a policy, or in mode "error", the `DataError`
    is raised. `progress` is called with the size of each batch predicted.
    Returns {"bbox": {...}, "segm": {...}} as `evaluate_coco` does.
    """
    image_ids = []

    def readable_images():
        for image_id in dataset.image_ids:
            try:
                image = dataset.load_image(image_id)
            except DataError as error:
                if bad_data is None:
                    raise
                report_decode_failure(bad_data, error, image_id)
                continue
            image_ids.append(image_id)
            yield image

    results = []
    detections = predict_in_batches(predictor, readable_images(), batch_size, progress, full_masks=True)
    # A batch's detections come after its images were read, so image_ids is ahead.
    for index, found in enumerate(detections):
        results.extend(detections_to_coco_results(image_ids[index], found))
    return evaluate_coco(dataset.coco, results, image_ids=image_ids)


def _load_results(coco_gt, results, iou_type):
    """COCO object holding `results` (may be empty) for one IoU type."""
    if not results:
        # COCO.loadRes indexes results[0]; an empty detection set is built by hand instead.
        coco_dt = COCO()
        coco_dt.dataset = {"images": list(coco_gt.dataset["images"]),
                           "categories": copy.deepcopy(coco_gt.dataset["categories"]),
                           "annotations": []}
        coco_dt.createIndex()
        return coco_dt
    # loadRes writes into the dicts it is given, so it gets copies.
    results = [dict(result) for result in results]
    if iou_type == "segm":
        # With a bbox present loadRes sets each detection's area to the box area; without it the
        # mask area is used, so small/medium/large follow the mask as they do for ground truth.
        for result in results:
            result.pop("bbox", None)
    return coco_gt.loadRes(results)


def evaluate_iou_type(coco_gt, results, iou_type, image_ids=None):
    """Run COCOeval for one IoU type ("bbox" or "segm").

    Args:
      coco_gt: pycocotools COCO ground truth.
      results: list of COCO result dicts.
      image_ids: images to evaluate; None evaluates every image in `coco_gt`.
    Returns:
      (dict METRIC_NAMES -> float, str pycocotools summary). Metrics with no ground truth in
      their area range are -1, as pycocotools reports them.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = _load_results(coco_gt, results, iou_type)
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    metrics = {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats)}
    return metrics, summary.getvalue()


def evaluate_coco(coco_gt, results, image_ids=None, verbose=False):
    """COCO bbox and segm AP.

    Args:
      coco_gt: pycocotools COCO ground truth.
      results: list of COCO result dicts (e.g. from `detections_to_coco_results`).
      image_ids: images that were evaluated; None means every image in `coco_gt`. Images
        without results count as having no detections.
      verbose: print pycocotools' summaries.
    Returns:
      {"bbox": {AP, AP50, AP75, APs, APm, APl}, "segm": {...}} floats.
    """
    metrics = {}
    for iou_type in IOU_TYPES:
        metrics[iou_type], summary = evaluate_iou_type(coco_gt, results, iou_type, image_ids)
        if verbose:
            print(f"{iou_type}:\n{summary}", end="")
    return metrics


def format_metrics_table(metrics):
    """Aligned text table: one row per IoU type, columns METRIC_NAMES, 3 decimals → str."""
    name_width = max((len(iou_type) for iou_type in metrics), default=0)
    lines = [" ".join([f"{'':<{name_width}}"] + [f"{name:>6}" for name in METRIC_NAMES])]
    for iou_type, values in metrics.items():
        lines.append(" ".join([f"{iou_type:<{name_width}}"] + [f"{values[name]:6.3f}" for name in METRIC_NAMES]))
    return "\n".join(lines)

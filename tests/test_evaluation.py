"""Tests for keras_maskrcnn.evaluation against a tiny in-memory COCO ground truth."""

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from keras_maskrcnn import evaluation, postprocess
from keras_maskrcnn.config import PASTE_METHODS

IMAGE_HW = (200, 240)
# Per image: (category id, [y1, x1, y2, x2]); sizes span COCO's small, medium and large ranges.
GT_OBJECTS = {
    1: [(1, [10, 10, 30, 30]), (2, [50, 40, 110, 100]), (1, [60, 110, 190, 230])],
    2: [(2, [5, 150, 25, 175]), (1, [40, 10, 180, 150])],
}


def _rect_mask(box):
    mask = np.zeros(IMAGE_HW, np.uint8)
    y1, x1, y2, x2 = box
    mask[y1:y2, x1:x2] = 1
    return mask


def _coco_gt():
    annotations = []
    for image_id, objects in GT_OBJECTS.items():
        for category_id, box in objects:
            rle = mask_util.encode(np.asfortranarray(_rect_mask(box)))
            y1, x1, y2, x2 = box
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(mask_util.area(rle)), "iscrowd": 0,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            })
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "height": IMAGE_HW[0], "width": IMAGE_HW[1]} for i in GT_OBJECTS],
        "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "blob"}],
        "annotations": annotations,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _results(shift=0, image_ids=tuple(GT_OBJECTS)):
    """Results whose boxes are the ground truth moved down-right by `shift` and full box masks."""
    results = []
    for image_id in image_ids:
        objects = GT_OBJECTS[image_id]
        detections = {
            "boxes": np.array([box for _, box in objects], np.float32) + shift,
            "scores": np.linspace(0.9, 0.6, len(objects)).astype(np.float32),
            "category_ids": np.array([category_id for category_id, _ in objects]),
            "masks": np.ones((len(objects), 28, 28), np.float32),
        }
        results += evaluation.detections_to_coco_results(image_id, detections, IMAGE_HW)
    return results


def _pycocotools_metrics(coco_gt, results, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(evaluation.METRIC_NAMES, evaluator.stats[:6]))


def test_results_format():
    results = _results(image_ids=[1])
    assert len(results) == 3
    first = results[0]
    assert set(first) == {"image_id", "category_id", "bbox", "score", "segmentation"}
    assert first["image_id"] == 1 and first["category_id"] == 1
    assert first["bbox"] == [10.0, 10.0, 20.0, 20.0] and all(isinstance(v, float) for v in first["bbox"])
    assert first["score"] == pytest.approx(0.9)
    assert isinstance(first["segmentation"]["counts"], str)
    expected_rle = mask_util.encode(np.asfortranarray(_rect_mask([10, 10, 30, 30])))
    assert first["segmentation"] == {"size": list(IMAGE_HW), "counts": expected_rle["counts"].decode("ascii")}


def test_results_paste_masks_by_the_given_method():
    masks = np.random.default_rng(0).uniform(size=(2, 28, 28)).astype(np.float32)
    boxes = np.array([[3.2, 5.7, 30.1, 22.4], [10.5, 20.0, 39.0, 59.5]], np.float32)
    detections = {"boxes": boxes, "scores": np.array([0.9, 0.8], np.float32),
                  "category_ids": np.array([1, 2]), "masks": masks}
    pasted = {}
    for method in PASTE_METHODS:
        results = evaluation.detections_to_coco_results(1, detections, IMAGE_HW, paste_method=method)
        pasted[method] = mask_util.decode([dict(r["segmentation"], counts=r["segmentation"]["counts"].encode())
                                           for r in results]).transpose(2, 0, 1)
        np.testing.assert_array_equal(pasted[method],
                                      postprocess.paste_masks(masks, boxes, IMAGE_HW, method=method))
    assert not np.array_equal(*pasted.values())  # so the method is not ignored


def test_empty_detections_give_no_results():
    detections = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "category_ids": np.zeros(0, int),
                  "masks": np.zeros((0, 28, 28))}
    assert evaluation.detections_to_coco_results(1, detections, IMAGE_HW) == []


def test_perfect_results_give_ap_one():
    metrics = evaluation.evaluate_coco(_coco_gt(), _results())
    assert set(metrics) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        assert set(metrics[iou_type]) == set(evaluation.METRIC_NAMES)
        for value in metrics[iou_type].values():
            assert value == pytest.approx(1.0)


def test_shifted_results_match_pycocotools_and_score_lower():
    coco_gt, results = _coco_gt(), _results(shift=4)
    original_results = copy.deepcopy(results)
    metrics = evaluation.evaluate_coco(coco_gt, results)
    assert results == original_results
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] < 1.0
        expected = _pycocotools_metrics(coco_gt, results, iou_type)
        for name in evaluation.METRIC_NAMES:
            assert metrics[iou_type][name] == pytest.approx(expected[name])


def test_image_ids_restrict_evaluation():
    coco_gt, results = _coco_gt(), _results(image_ids=[1])
    assert evaluation.evaluate_coco(coco_gt, results, image_ids=[1])["segm"]["AP"] == pytest.approx(1.0)
    assert evaluation.evaluate_coco(coco_gt, results)["segm"]["AP"] < 1.0


def test_empty_results_give_zeros_and_keep_stdout_clean(capsys):
    metrics = evaluation.evaluate_coco(_coco_gt(), [])
    assert capsys.readouterr().out == ""
    for iou_type in ("bbox", "segm"):
        assert all(value == 0.0 for value in metrics[iou_type].values())


def test_summary_is_available():
    metrics, summary = evaluation.evaluate_iou_type(_coco_gt(), _results(), "bbox")
    assert "Average Precision" in summary
    assert metrics["AP"] == pytest.approx(1.0)


def test_format_metrics_table():
    metrics = {"bbox": dict.fromkeys(evaluation.METRIC_NAMES, 0.5),
               "segm": dict(zip(evaluation.METRIC_NAMES, [0.25, 0.5, 0.125, -1.0, 0.0, 1.0]))}
    lines = evaluation.format_metrics_table(metrics).splitlines()
    assert len(lines) == 3
    assert lines[0].split() == list(evaluation.METRIC_NAMES)
    assert lines[1].split() == ["bbox"] + ["0.500"] * 6
    assert lines[2].split() == ["segm", "0.250", "0.500", "0.125", "-1.000", "0.000", "1.000"]
    assert len({len(line) for line in lines}) == 1

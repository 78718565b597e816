"""Tests for keras_maskrcnn.evaluation against a tiny in-memory COCO ground truth."""

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from keras_maskrcnn import evaluation
from keras_maskrcnn.config import tiny
from keras_maskrcnn.data import DataError
from keras_maskrcnn.data.validation import BadDataPolicy
from keras_maskrcnn.inference import Predictor

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


def _detections(image_id, shift=0):
    """The ground truth of `image_id` moved down-right by `shift`, with full box masks."""
    objects = GT_OBJECTS[image_id]
    boxes = np.array([box for _, box in objects]) + shift
    return {
        "boxes": boxes.astype(np.float32),
        "scores": np.linspace(0.9, 0.6, len(objects)).astype(np.float32),
        "category_ids": np.array([category_id for category_id, _ in objects]),
        "masks": np.ones((len(objects), 28, 28), np.float32),
        "full_masks": np.stack([_rect_mask(box) for box in boxes]).astype(bool),
    }


def _results(shift=0, image_ids=tuple(GT_OBJECTS)):
    """COCO results of `_detections` for `image_ids`."""
    results = []
    for image_id in image_ids:
        results += evaluation.detections_to_coco_results(image_id, _detections(image_id, shift))
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


def test_results_encode_the_given_full_masks():
    detections = _detections(1)
    detections["full_masks"][0, :5] = True  # not the box: the mask is taken as given
    results = evaluation.detections_to_coco_results(1, detections)
    decoded = mask_util.decode([dict(r["segmentation"], counts=r["segmentation"]["counts"].encode())
                                for r in results]).transpose(2, 0, 1)
    np.testing.assert_array_equal(decoded, detections["full_masks"])


def test_empty_detections_give_no_results():
    detections = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "category_ids": np.zeros(0, int),
                  "masks": np.zeros((0, 28, 28)), "full_masks": np.zeros((0, *IMAGE_HW), bool)}
    assert evaluation.detections_to_coco_results(1, detections) == []


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


class _GroundTruthPredictor(Predictor):
    """Detects each image's ground truth; images carry their id in pixel (0, 0)."""

    config = tiny()

    def __init__(self):
        self.batches = []

    def detect(self, images):
        self.batches.append(len(images))
        return [_detections(int(image[0, 0, 0])) for image in images]


class _Dataset:
    """The `CocoDataset` interface `evaluate_predictor` reads; `unreadable` images fail to decode."""

    def __init__(self, unreadable=()):
        self.coco = _coco_gt()
        self.image_ids = list(GT_OBJECTS)
        self.unreadable = unreadable

    def load_image(self, image_id):
        if image_id in self.unreadable:
            raise DataError(f"image {image_id}: truncated", kind="truncated_image")
        return np.full((*IMAGE_HW, 3), image_id, np.uint8)


def test_evaluate_predictor_predicts_in_batches_and_reports_progress():
    predictor, done = _GroundTruthPredictor(), []
    metrics = evaluation.evaluate_predictor(predictor, _Dataset(), batch_size=1, progress=done.append)
    assert predictor.batches == [1, 1] and done == [1, 1]
    assert metrics["segm"]["AP"] == pytest.approx(1.0) and metrics["bbox"]["AP"] == pytest.approx(1.0)


def test_evaluate_predictor_leaves_out_unreadable_images_in_skip_mode(capsys):
    policy = BadDataPolicy("skip")
    metrics = evaluation.evaluate_predictor(_GroundTruthPredictor(), _Dataset(unreadable={2}), 8,
                                            bad_data=policy)
    # Image 2 is not evaluated, so its unfound objects do not lower the AP.
    assert metrics["segm"]["AP"] == pytest.approx(1.0)
    assert "image 2: truncated" in capsys.readouterr().err
    assert policy.counts == {"truncated_image": 1}


@pytest.mark.parametrize("mode", [None, "error"])
def test_evaluate_predictor_raises_on_unreadable_images_otherwise(mode):
    bad_data = None if mode is None else BadDataPolicy(mode)
    with pytest.raises(DataError, match="image 2: truncated"):
        evaluation.evaluate_predictor(_GroundTruthPredictor(), _Dataset(unreadable={2}), 8, bad_data)

"""Synthetic shapes dataset: files, COCO validity, determinism and visible masks."""

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from keras_maskrcnn.data.shapes import CATEGORIES, make_shapes, write_shapes_split

IMAGE_SIZE = 64


def _load_coco(path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(path)


def test_make_shapes_writes_both_splits(tmp_path):
    train_json, val_json = make_shapes(tmp_path, num_train=4, num_val=2, image_size=IMAGE_SIZE, seed=0)
    assert train_json == os.path.join(tmp_path, "train", "annotations.json")
    assert val_json == os.path.join(tmp_path, "val", "annotations.json")
    for path, count in ((train_json, 4), (val_json, 2)):
        coco = _load_coco(path)
        assert len(coco.getImgIds()) == count
        assert sorted(coco.getCatIds()) == [1, 2, 3]
        assert [coco.cats[i]["name"] for i in (1, 2, 3)] == [c["name"] for c in CATEGORIES]
        for image in coco.dataset["images"]:
            pixels = np.asarray(Image.open(os.path.join(os.path.dirname(path), image["file_name"])))
            assert pixels.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and pixels.dtype == np.uint8
    assert Path(train_json).read_bytes() != Path(val_json).read_bytes()


def test_same_seed_same_bytes(tmp_path):
    first = write_shapes_split(tmp_path / "a", 5, IMAGE_SIZE, seed=7)
    second = write_shapes_split(tmp_path / "b", 5, IMAGE_SIZE, seed=7)
    other = write_shapes_split(tmp_path / "c", 5, IMAGE_SIZE, seed=8)
    assert Path(first).read_bytes() == Path(second).read_bytes()
    assert Path(first).read_bytes() != Path(other).read_bytes()
    assert ((tmp_path / "a/images/000003.png").read_bytes()
            == (tmp_path / "b/images/000003.png").read_bytes())


def test_visible_masks_match_boxes_pixels_and_do_not_overlap(tmp_path):
    path = write_shapes_split(tmp_path, 12, IMAGE_SIZE, seed=3)
    coco = _load_coco(path)
    for image_id in coco.getImgIds():
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert 1 <= len(annotations) <= 4
        pixels = np.asarray(Image.open(tmp_path / coco.imgs[image_id]["file_name"]))
        union = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.int32)
        for annotation in annotations:
            assert isinstance(annotation["segmentation"]["counts"], str)
            mask = coco.annToMask(annotation).astype(bool)
            assert annotation["area"] == mask.sum() >= 20
            rows, cols = np.nonzero(mask)
            x, y, w, h = annotation["bbox"]
            assert (x, y, x + w - 1, y + h - 1) == (cols.min(), rows.min(), cols.max(), rows.max())
            # A visible region shows only its own shape's colour: occluded parts are cut out.
            assert len(np.unique(pixels[mask], axis=0)) == 1
            union += mask
        assert union.max() == 1
        # Everything outside the annotated regions is background: no unannotated shape remains.
        assert len(np.unique(pixels[union == 0], axis=0)) <= 1


def test_annotations_are_plain_json(tmp_path):
    path = write_shapes_split(tmp_path, 2, IMAGE_SIZE, seed=0)
    data = json.loads(Path(path).read_text())
    assert {"images", "annotations", "categories"} <= data.keys()
    assert all(a["iscrowd"] == 0 for a in data["annotations"])

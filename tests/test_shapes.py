"""Synthetic shapes dataset: files, COCO validity, determinism and visible masks."""

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from keras_maskrcnn.data.shapes import (CATEGORIES, HARD, MIN_COLOUR_DISTANCE, NOISE_STDDEV,
                                        SHAPE_NAMES, ShapesOptions, make_shapes,
                                        write_shapes_split)

CIRCLE = 2  # its category id in the default set

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


# The default set, as `make demo` has always trained on it: sha256 of each split's
# annotations.json and of its decoded pixels (PNG bytes depend on the zlib build).
DEFAULT_SET_DIGESTS = {
    "train": ("72e618e99c1210a68fed518ae51a474bd9a9c7ee05eeb135fb2909cefbd55cba",
              "d046ec856215565f82b48fdb4c848d8609dd66cd77021c15b55fce6e65729a72"),
    "val": ("9d35bddd0288f5c8a983757d304a250261bf4ac91d9dfdb549f8cf4fbbd3fc15",
            "9fb5495fc6092dd8a32a402b012e6bf8caee71230ce8f0ca2dc11245a1ad3c18"),
}


def _digests(split_dir):
    pixels = hashlib.sha256()
    for name in sorted(os.listdir(split_dir / "images")):
        pixels.update(np.asarray(Image.open(split_dir / "images" / name)).tobytes())
    return hashlib.sha256((split_dir / "annotations.json").read_bytes()).hexdigest(), pixels.hexdigest()


def test_default_set_is_the_one_it_always_was(tmp_path):
    make_shapes(tmp_path, 6, 3, image_size=64, seed=5)
    make_shapes(tmp_path / "explicit", 6, 3, image_size=64, seed=5, options=ShapesOptions())
    for split, expected in DEFAULT_SET_DIGESTS.items():
        assert _digests(tmp_path / split) == expected
        assert _digests(tmp_path / "explicit" / split) == expected


def _hard_split(tmp_path, options, seed=3, count=24):
    path = write_shapes_split(tmp_path, count, IMAGE_SIZE, seed, options)
    return path, _load_coco(path)


def test_category_ids_are_the_given_ones(tmp_path):
    options = ShapesOptions(category_ids=(3, 7, 42))
    path, coco = _hard_split(tmp_path, options)
    assert {c["id"]: c["name"] for c in coco.dataset["categories"]} == {
        3: "square", 7: "circle", 42: "triangle"}
    assert {a["category_id"] for a in coco.dataset["annotations"]} == {3, 7, 42}
    # The same shapes as the default set, only renamed.
    plain = _load_coco(write_shapes_split(tmp_path / "plain", 24, IMAGE_SIZE, 3))
    renamed = {1: 3, 2: 7, 3: 42}
    assert ([renamed[a["category_id"]] for a in plain.dataset["annotations"]]
            == [a["category_id"] for a in coco.dataset["annotations"]])


def test_rle_for_named_shapes_exact_polygons_for_the_others(tmp_path):
    options = ShapesOptions(rle_shapes=("circle",), min_visible_fraction=0.0)
    _, coco = _hard_split(tmp_path, options, count=40)
    rle = plain_kinds = 0
    reference = _load_coco(write_shapes_split(tmp_path / "rle", 40, IMAGE_SIZE, 3,
                                              dataclasses.replace(options, rle_shapes=SHAPE_NAMES)))
    for annotation, same in zip(coco.dataset["annotations"], reference.dataset["annotations"]):
        if annotation["category_id"] == CIRCLE:
            assert isinstance(annotation["segmentation"], dict)
        elif isinstance(annotation["segmentation"], list):
            plain_kinds += 1
            assert all(len(polygon) >= 6 for polygon in annotation["segmentation"])
        else:
            rle += 1  # a visible part with a hole
        # Polygons or RLE, pycocotools reads the same pixels.
        np.testing.assert_array_equal(coco.annToMask(annotation), reference.annToMask(same))
        assert annotation["bbox"] == same["bbox"] and annotation["area"] == same["area"]
    assert plain_kinds > 20 and rle < plain_kinds


def test_occlusion_down_to_the_visible_pixel_minimum(tmp_path):
    # At 128 px the smallest whole shape (a triangle in a 19-pixel circle) covers about 150
    # pixels, so the default 0.3 visible fraction keeps no part under about 45.
    def areas(name, options):
        coco = _load_coco(write_shapes_split(tmp_path / name, 60, 128, 4, options))
        return np.array([a["area"] for a in coco.dataset["annotations"]])

    default = areas("default", ShapesOptions())
    occluded = areas("occluded", ShapesOptions(min_visible_fraction=0.0, min_visible_pixels=20))
    assert default.min() >= 40 and len(occluded) > len(default)
    assert occluded.min() >= 20 and (occluded < 40).any()
    assert areas("large", ShapesOptions(min_visible_fraction=0.0, min_visible_pixels=300)).min() >= 300


def test_colour_distance_to_the_background(tmp_path):
    def distances(options):
        folder = tmp_path / str(options.min_colour_distance)
        coco = _load_coco(write_shapes_split(folder, 40, IMAGE_SIZE, 5, options))
        found = []
        for image_id in coco.getImgIds():
            pixels = np.asarray(Image.open(folder / coco.imgs[image_id]["file_name"])).astype(int)
            masks = [coco.annToMask(a).astype(bool)
                     for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))]
            background = pixels[~np.any(masks, axis=0)][0]
            found.extend(np.abs(pixels[mask][0] - background).sum() for mask in masks)
        return np.array(found)

    assert distances(ShapesOptions()).min() >= MIN_COLOUR_DISTANCE
    assert distances(ShapesOptions(min_colour_distance=0)).min() < MIN_COLOUR_DISTANCE


def test_textured_background_varies_and_shapes_stay_where_annotated(tmp_path):
    path, coco = _hard_split(tmp_path, ShapesOptions(background="texture"), count=6)
    plain_path = write_shapes_split(tmp_path / "plain", 6, IMAGE_SIZE, 3)
    plain = _load_coco(plain_path)
    assert coco.dataset["annotations"] == plain.dataset["annotations"]  # the same shapes
    for image_id in coco.getImgIds():
        pixels = np.asarray(Image.open(tmp_path / coco.imgs[image_id]["file_name"])).astype(float)
        union = np.zeros(pixels.shape[:2], bool)
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            union |= coco.annToMask(annotation).astype(bool)
        background = pixels[~union]
        assert len(np.unique(background, axis=0)) > 100
        # Blotches: the background's two halves differ in mean by more than noise would.
        assert background.std(axis=0).mean() > NOISE_STDDEV


def test_hard_preset_is_deterministic_and_has_every_difficulty(tmp_path):
    first = make_shapes(tmp_path / "a", 12, 2, image_size=IMAGE_SIZE, seed=9, options=HARD)
    second = make_shapes(tmp_path / "b", 12, 2, image_size=IMAGE_SIZE, seed=9, options=HARD)
    for one, other in zip(first, second):
        assert Path(one).read_bytes() == Path(other).read_bytes()
    assert _digests(tmp_path / "a" / "train") == _digests(tmp_path / "b" / "train")
    data = json.loads(Path(first[0]).read_text())
    assert data["info"]["make_shapes_options"]["category_ids"] == [3, 7, 42]
    kinds = {(a["category_id"], type(a["segmentation"]).__name__) for a in data["annotations"]}
    assert (7, "dict") in kinds and (3, "list") in kinds and (42, "list") in kinds


@pytest.mark.parametrize("field, value, message", [
    ("min_colour_distance", -1, "min_colour_distance must lie in [0, 765]"),
    ("min_visible_pixels", 0, "min_visible_pixels must be at least 1"),
    ("min_visible_fraction", 1.5, "min_visible_fraction must lie in [0, 1]"),
    ("background", "stripes", "background must be one of"),
    ("category_ids", (1, 1, 2), "3 distinct positive ids"),
    ("category_ids", (0, 1, 2), "3 distinct positive ids"),
    ("rle_shapes", ("hexagon",), "unknown shapes ['hexagon']"),
])
def test_bad_options_are_refused(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ShapesOptions(**{field: value})


def test_make_shapes_command_line_options(tmp_path, capsys):
    from keras_maskrcnn import cli

    code = cli.main(["make-shapes", str(tmp_path / "set"), "--train", "3", "--val", "1",
                     "--size", "64", "--hard", "--category-ids", "5", "6", "8",
                     "--rle-shapes"])
    assert code == 0
    data = json.loads((tmp_path / "set" / "train" / "annotations.json").read_text())
    options = data["info"]["make_shapes_options"]
    assert options["category_ids"] == [5, 6, 8] and options["rle_shapes"] == []
    assert options["background"] == HARD.background  # the preset under the given options
    code = cli.main(["make-shapes", str(tmp_path / "bad"), "--category-ids", "4", "4", "9"])
    assert code == 2 and "--category-ids must be 3 distinct" in capsys.readouterr().err

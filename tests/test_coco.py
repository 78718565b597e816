"""CocoDataset on a hand-written annotation file covering every segmentation format."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from keras_maskrcnn.data.coco import CocoDataset, DataError

H, W = 20, 30
# Labels follow sorted category ids: 3 → 1, 7 → 2 (never annotated), 42 → 3.
CATEGORY_IDS = (3, 7, 42)


def _uncompressed_rle(mask):
    """COCO uncompressed RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"size": list(mask.shape), "counts": runs}


def _block(top, left, bottom, right):
    """uint8 [H, W] with rows top..bottom-1 and columns left..right-1 set."""
    mask = np.zeros((H, W), np.uint8)
    mask[top:bottom, left:right] = 1
    return mask


COMPRESSED = _block(0, 20, 5, 26)
UNCOMPRESSED = _block(12, 18, 19, 30)
CROWD = _block(15, 0, 20, 6)


@pytest.fixture
def coco_dir(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    (tmp_path / "gray").mkdir()
    Image.fromarray(np.full((8, 6), 77, np.uint8), mode="L").save(tmp_path / "gray" / "g.png")
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 128
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "gray" / "rgba.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")

    compressed = mask_utils.encode(np.asfortranarray(COMPRESSED))
    compressed["counts"] = compressed["counts"].decode("ascii")
    data = {
        "images": [
            {"id": 10, "file_name": "rgb.png", "height": H, "width": W},
            {"id": 20, "file_name": "gray/g.png", "height": 8, "width": 6},
            {"id": 5, "file_name": "gray/rgba.png", "height": 4, "width": 5},
            {"id": 30, "file_name": "missing.png", "height": 4, "width": 4},
            {"id": 31, "file_name": "broken.png", "height": 4, "width": 4},
            {"id": 32, "file_name": "rgb.png", "height": W, "width": H},
        ],
        "categories": [{"id": 42, "name": "forty-two"}, {"id": 3, "name": "three"},
                       {"id": 7, "name": "seven"}],
        "annotations": [
            # One object made of two rectangles; its bbox runs past the image to test clipping.
            {"id": 1, "image_id": 10, "category_id": 3, "iscrowd": 0, "area": 52.0,
             "bbox": [2, 3, 30, 11],
             "segmentation": [[2, 3, 8, 3, 8, 9, 2, 9], [12, 10, 16, 10, 16, 14, 12, 14]]},
            {"id": 2, "image_id": 10, "category_id": 42, "iscrowd": 0, "area": 30.0,
             "bbox": [20, 0, 6, 5], "segmentation": compressed},
            {"id": 3, "image_id": 10, "category_id": 42, "iscrowd": 0, "area": 84.0,
             "bbox": [18, 12, 12, 7], "segmentation": _uncompressed_rle(UNCOMPRESSED)},
            {"id": 4, "image_id": 10, "category_id": 3, "iscrowd": 1, "area": 30.0,
             "bbox": [0, 15, 6, 5], "segmentation": _uncompressed_rle(CROWD)},
            {"id": 5, "image_id": 5, "category_id": 42, "iscrowd": 0, "area": 4.0,
             "bbox": [1, 1, 2, 2], "segmentation": [[1, 1, 3, 1, 3, 3, 1, 3]]},
        ],
    }
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    return tmp_path


def test_categories_and_label_mapping(coco_dir):
    dataset = CocoDataset(str(coco_dir / "annotations.json"))
    assert dataset.category_ids == list(CATEGORY_IDS)
    assert dataset.num_classes == 3
    assert dataset.class_names == ["three", "seven", "forty-two"]
    assert dataset.category_id_to_label == {3: 1, 7: 2, 42: 3}
    np.testing.assert_array_equal(dataset.label_to_category_id(np.array([[3, 1], [2, 2]])),
                                  [[42, 3], [7, 7]])
    for category_id, label in dataset.category_id_to_label.items():
        assert dataset.label_to_category_id(np.array([label]))[0] == category_id
    with pytest.raises(ValueError):
        dataset.label_to_category_id(np.array([0]))


def test_image_ids_and_info(coco_dir):
    dataset = CocoDataset(str(coco_dir / "annotations.json"))
    assert dataset.image_ids == [10, 20, 5, 30, 31, 32]
    info = dataset.image_info(20)
    assert info == {"file_name": "gray/g.png", "height": 8, "width": 6,
                    "path": str(coco_dir / "gray" / "g.png")}
    elsewhere = CocoDataset(str(coco_dir / "annotations.json"), image_dir="/data/images")
    assert elsewhere.image_info(20)["path"] == "/data/images/gray/g.png"


def test_load_image_converts_to_rgb(coco_dir):
    dataset = CocoDataset(str(coco_dir / "annotations.json"))
    rgb = dataset.load_image(10)
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.asarray(Image.open(coco_dir / "rgb.png")))
    gray = dataset.load_image(20)
    assert gray.shape == (8, 6, 3) and gray.dtype == np.uint8 and (gray == 77).all()
    rgba = dataset.load_image(5)
    assert rgba.shape == (4, 5, 3)
    np.testing.assert_array_equal(rgba[0, 0], [10, 20, 30])


def test_load_image_applies_exif_orientation(tmp_path):
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[0, 0] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: the stored pixels must be turned 90° clockwise for display.
    image.save(tmp_path / "rotated.png", exif=exif)
    (tmp_path / "a.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "rotated.png", "height": 6, "width": 4}],
        "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    loaded = CocoDataset(str(tmp_path / "a.json")).load_image(1)
    assert loaded.shape == (6, 4, 3)
    assert loaded[0, -1].tolist() == [255, 255, 255]


@pytest.mark.parametrize("image_id, problem", [(30, "not found"), (31, "cannot read"),
                                               (32, "annotations say")])
def test_bad_image_raises_data_error_naming_the_file(coco_dir, image_id, problem):
    dataset = CocoDataset(str(coco_dir / "annotations.json"))
    with pytest.raises(DataError, match=problem) as error:
        dataset.load_image(image_id)
    assert dataset.image_info(image_id)["file_name"] in str(error.value)
    assert isinstance(error.value, ValueError)


def test_load_annotations_all_segmentation_formats(coco_dir):
    dataset = CocoDataset(str(coco_dir / "annotations.json"))
    annotations = dataset.load_annotations(10)
    assert annotations["boxes"].dtype == np.float32 and annotations["boxes"].shape == (4, 4)
    assert annotations["labels"].dtype == np.int32
    assert annotations["masks"].dtype == np.uint8 and annotations["masks"].shape == (4, H, W)
    assert annotations["is_crowd"].dtype == bool
    np.testing.assert_array_equal(annotations["labels"], [1, 3, 3, 1])
    np.testing.assert_array_equal(annotations["is_crowd"], [False, False, False, True])
    np.testing.assert_array_equal(annotations["boxes"], [[3, 2, 14, 30], [0, 20, 5, 26],
                                                         [12, 18, 19, 30], [15, 0, 20, 6]])

    # Each polygon rasterises to its rectangle give or take the pixels along its edges.
    polygons = annotations["masks"][0].astype(bool)
    core, allowed = np.zeros((H, W), bool), np.zeros((H, W), bool)
    smallest = largest = 0
    for left, top, right, bottom in ((2, 3, 8, 9), (12, 10, 16, 14)):
        core[top + 1:bottom - 1, left + 1:right - 1] = True
        allowed[top - 1:bottom + 1, left - 1:right + 1] = True
        smallest += (right - left - 1) * (bottom - top - 1)
        largest += (right - left + 1) * (bottom - top + 1)
    assert polygons[core].all() and not polygons[~allowed].any()
    assert smallest <= polygons.sum() <= largest
    np.testing.assert_array_equal(annotations["masks"][1], COMPRESSED)
    np.testing.assert_array_equal(annotations["masks"][2], UNCOMPRESSED)
    np.testing.assert_array_equal(annotations["masks"][3], CROWD)


def test_image_without_annotations_gives_empty_arrays(coco_dir):
    annotations = CocoDataset(str(coco_dir / "annotations.json")).load_annotations(20)
    assert annotations["boxes"].shape == (0, 4) and annotations["boxes"].dtype == np.float32
    assert annotations["labels"].shape == (0,) and annotations["labels"].dtype == np.int32
    assert annotations["masks"].shape == (0, 8, 6) and annotations["masks"].dtype == np.uint8
    assert annotations["is_crowd"].shape == (0,) and annotations["is_crowd"].dtype == bool


def test_coco_object_is_exposed_quietly(coco_dir, capsys):
    dataset = CocoDataset(str(coco_dir / "annotations.json"))
    assert capsys.readouterr().out == ""
    assert len(dataset.coco.getAnnIds()) == 5

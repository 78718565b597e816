"""Real-world data: every image format and every kind of bad data, on a set the tests write.

The fixture writes one COCO file whose good part covers the format cases (several polygons
per object, compressed and uncompressed RLE, crowd regions, non-contiguous category ids, a
category without annotations, an image without annotations, sub-folder file names,
grayscale, RGBA, palette, 16-bit PNG, CMYK JPEG, EXIF-rotated JPEG) and whose bad part holds
one entry of each kind of `validation.KINDS`.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pycocotools import mask as mask_utils

from keras_maskrcnn import cli, visualize
from keras_maskrcnn.data.coco import CocoDataset, DataError, load_coco_json
from keras_maskrcnn.data.images import decode_image
from keras_maskrcnn.data.pipeline import make_dataset
from keras_maskrcnn.data.validation import KINDS, BadDataPolicy

from image_files import png_header

H, W = 20, 30
RED, CYAN = (220, 20, 20), (0, 255, 255)
# Labels follow sorted category ids: 3 → 1, 7 → 2 (never annotated), 42 → 3.
CATEGORIES = [{"id": 42, "name": "forty-two"}, {"id": 3, "name": "three"},
              {"id": 7, "name": "seven"}]
GOOD_IMAGE_IDS = [1, 2, 3, 4, 5, 6, 7, 8]
GRAY16 = np.array([[0, 257 * 128, 65535]], np.uint16).repeat(4, axis=0)
PALETTE_COLOR = (0, 204, 51)  # in PIL's web palette, so palette conversion keeps it exactly


def _rect_polygon(left, top, right, bottom):
    return [left, top, right, top, right, bottom, left, bottom]


def _block(top, left, bottom, right, shape=(H, W)):
    mask = np.zeros(shape, np.uint8)
    mask[top:bottom, left:right] = 1
    return mask


def _compressed_rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(mask):
    """COCO uncompressed RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def _annotation(annotation_id, image_id, segmentation, bbox, category_id=3, crowd=0):
    return {"id": annotation_id, "image_id": image_id, "category_id": category_id,
            "iscrowd": crowd, "bbox": bbox, "area": 1.0, "segmentation": segmentation}


def _write_images(root):
    """The image files; returns nothing, every check reads them back through the dataset."""
    rgb = np.full((H, W, 3), 40, np.uint8)
    rgb[3:9, 2:8] = RED
    Image.fromarray(rgb).save(root / "rgb.png")
    (root / "sub" / "dir").mkdir(parents=True)
    Image.fromarray(np.full((8, 6), 77, np.uint8), mode="L").save(root / "sub" / "dir" / "gray.png")
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (10, 20, 30), 0  # fully transparent: the colour still counts
    Image.fromarray(rgba, mode="RGBA").save(root / "rgba.png")
    Image.new("RGB", (W, H), PALETTE_COLOR).convert("P").save(root / "palette.png")
    Image.fromarray(GRAY16).save(root / "gray16.png")
    Image.new("CMYK", (W, H), (255, 0, 0, 0)).save(root / "cmyk.jpg", quality=95)
    # Stored 30 wide × 20 high with a red top-left block; EXIF orientation 6 says "turn 90°
    # clockwise to display", so the image is 20 wide × 30 high with the block at the top right.
    stored = np.full((H, W, 3), 40, np.uint8)
    stored[0:10, 0:10] = RED
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(root / "rotated.jpg", quality=95, exif=exif)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / "plain.png")
    (root / "garbage.png").write_bytes(b"this is not an image")
    (root / "bomb.png").write_bytes(png_header(20000, 20000))
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(
        root / "full.png")
    data = (root / "full.png").read_bytes()
    (root / "truncated.png").write_bytes(data[:len(data) // 2])
    os.remove(root / "full.png")


def _good_entries():
    images = [
        {"id": 1, "file_name": "rgb.png", "height": H, "width": W},
        {"id": 2, "file_name": "sub/dir/gray.png", "height": 8, "width": 6},
        {"id": 3, "file_name": "rgba.png", "height": H, "width": W},
        {"id": 4, "file_name": "palette.png", "height": H, "width": W},
        {"id": 5, "file_name": "gray16.png", "height": 4, "width": 3},
        {"id": 6, "file_name": "cmyk.jpg", "height": H, "width": W},
        {"id": 7, "file_name": "rotated.jpg", "height": W, "width": H},
        {"id": 8, "file_name": "plain.png", "height": H, "width": W},
    ]
    annotations = [
        # One object drawn as two polygons.
        _annotation(1, 1, [_rect_polygon(2, 3, 8, 9), _rect_polygon(12, 10, 16, 14)], [2, 3, 14, 11]),
        _annotation(2, 1, _compressed_rle(_block(0, 20, 5, 26)), [20, 0, 6, 5], category_id=42),
        _annotation(3, 1, _uncompressed_rle(_block(12, 18, 19, 30)), [18, 12, 12, 7], category_id=42),
        _annotation(4, 1, _uncompressed_rle(_block(15, 0, 20, 6)), [0, 15, 6, 5], crowd=1),
        _annotation(5, 3, [_rect_polygon(1, 1, 9, 9)], [1, 1, 8, 8]),
        _annotation(6, 4, [_rect_polygon(1, 1, 9, 9)], [1, 1, 8, 8], category_id=42),
        _annotation(7, 5, [_rect_polygon(0, 0, 3, 4)], [0, 0, 3, 4]),
        _annotation(8, 6, [_rect_polygon(4, 4, 14, 14)], [4, 4, 10, 10]),
        # In the displayed (rotated) frame: the red block is at x 10..20, y 0..10.
        _annotation(9, 7, [_rect_polygon(10, 0, 20, 10)], [10, 0, 10, 10]),
        _annotation(10, 8, [_rect_polygon(2, 2, 12, 12)], [2, 2, 10, 10]),
    ]
    return images, annotations


# One bad entry per kind: (kind, image entries to add, annotation entries to add, a text the
# message must contain to name the culprit).
BAD_CASES = {
    "missing_image": ([{"id": 20, "file_name": "missing.png", "height": H, "width": W}], [],
                      "missing.png"),
    "unreadable_image": ([{"id": 21, "file_name": "garbage.png", "height": H, "width": W}], [],
                         "garbage.png"),
    "image_too_large": ([{"id": 25, "file_name": "bomb.png", "height": 20000, "width": 20000}],
                        [], "bomb.png"),
    "image_size_mismatch": ([{"id": 23, "file_name": "plain.png", "height": W, "width": H}], [],
                            "plain.png"),
    "bad_image_size": ([{"id": 24, "file_name": "plain.png", "height": H, "width": 0}], [],
                       "image 24"),
    "duplicate_image_id": ([{"id": 8, "file_name": "rgb.png", "height": H, "width": W}], [],
                           "image 8"),
    "unknown_image": ([], [_annotation(30, 999, [_rect_polygon(1, 1, 5, 5)], [1, 1, 4, 4])],
                      "annotation 30"),
    "unknown_category": ([], [_annotation(31, 8, [_rect_polygon(1, 1, 5, 5)], [1, 1, 4, 4],
                                          category_id=5)], "annotation 31"),
    "bad_box": ([], [_annotation(32, 8, [_rect_polygon(1, 1, 5, 5)], [1, 1, 0, 4])],
                "annotation 32"),
    "box_outside_image": ([], [_annotation(33, 8, [_rect_polygon(1, 1, 5, 5)], [40, 1, 4, 4])],
                          "annotation 33"),
    "box_clipped": ([], [_annotation(34, 8, [_rect_polygon(25, 1, 30, 5)], [25, 1, 10, 4])],
                    "annotation 34"),
    "missing_segmentation": ([], [_annotation(35, 8, [], [1, 1, 4, 4])], "annotation 35"),
    "bad_polygon": ([], [_annotation(36, 8, [[1, 1, 5, 5]], [1, 1, 4, 4]),
                         # One good and one two-point polygon: the good one is kept.
                         _annotation(37, 8, [_rect_polygon(1, 1, 5, 5), [6, 6, 9, 9]],
                                     [1, 1, 8, 8])], "annotation 36"),
    "bad_rle": ([], [_annotation(38, 8, _compressed_rle(_block(0, 0, 5, 5, (H + 1, W))),
                                 [0, 0, 5, 5])], "annotation 38"),
}
# The truncated file's header is fine: only decoding its pixels finds it.
TRUNCATED = {"id": 22, "file_name": "truncated.png", "height": 64, "width": 64}


def _write_json(path, images, annotations):
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": CATEGORIES}))
    return str(path)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    _write_images(root)
    images, annotations = _good_entries()
    _write_json(root / "good.json", images, annotations)
    bad_images = [image for case in BAD_CASES.values() for image in case[0]] + [TRUNCATED]
    bad_annotations = [annotation for case in BAD_CASES.values() for annotation in case[1]]
    _write_json(root / "all.json", images + bad_images, annotations + bad_annotations)
    for kind, (extra_images, extra_annotations, _) in BAD_CASES.items():
        _write_json(root / f"{kind}.json", images + extra_images, annotations + extra_annotations)
    _write_json(root / "truncated.json", images + [TRUNCATED], annotations)
    return root


@pytest.fixture(scope="module")
def good(root):
    return CocoDataset(str(root / "good.json"))


# Format cases.

def test_good_set_scans_clean(root, good):
    policy = BadDataPolicy("error")
    cleaned = policy.scan(good, check_pixels=True)
    assert policy.counts == {}
    assert cleaned.image_ids == GOOD_IMAGE_IDS
    assert len(cleaned.coco.getAnnIds()) == len(good.coco.getAnnIds())


def test_non_contiguous_categories_and_one_without_annotations(good):
    assert good.category_ids == [3, 7, 42]
    assert good.category_id_to_label == {3: 1, 7: 2, 42: 3}
    assert good.class_names == ["three", "seven", "forty-two"]
    assert not good.coco.getAnnIds(catIds=[7])


def test_several_polygons_per_object(good):
    mask = good.load_annotations(1)["masks"][0].astype(bool)
    # Both rectangles are in the one mask, and nothing between them.
    assert mask[4:8, 3:7].all() and mask[11:13, 13:15].all()
    assert not mask[10:14, 9:11].any()


def test_compressed_and_uncompressed_rle(good):
    masks = good.load_annotations(1)["masks"]
    np.testing.assert_array_equal(masks[1], _block(0, 20, 5, 26))
    np.testing.assert_array_equal(masks[2], _block(12, 18, 19, 30))


def test_crowd_regions_are_flagged_and_left_out_of_targets(good):
    annotations = good.load_annotations(1)
    np.testing.assert_array_equal(annotations["is_crowd"], [False, False, False, True])
    (batch,) = [b for b in _batches(good, (32, 48)) if b["image_id"][0] == 1]
    assert (batch["gt_classes"][0] > 0).sum() == 3


def test_image_without_annotations_is_kept_as_a_negative(good):
    assert 2 in good.image_ids and good.load_annotations(2)["boxes"].shape == (0, 4)
    (batch,) = [b for b in _batches(good, (32, 48)) if b["image_id"][0] == 2]
    assert not batch["gt_classes"].any()


def test_sub_folder_file_names_and_grayscale(root, good):
    assert good.image_info(2)["path"] == str(root / "sub" / "dir" / "gray.png")
    gray = good.load_image(2)
    assert gray.shape == (8, 6, 3) and (gray == 77).all()


def test_rgba_drops_alpha_and_palette_expands(good):
    rgba = good.load_image(3)
    assert rgba.shape == (H, W, 3) and (rgba == (10, 20, 30)).all()
    palette = good.load_image(4)
    assert palette.shape == (H, W, 3) and (palette == PALETTE_COLOR).all()


def test_16_bit_png_is_scaled_not_clipped(good):
    pixels = good.load_image(5)
    assert pixels.dtype == np.uint8 and pixels.shape == (4, 3, 3)
    np.testing.assert_array_equal(pixels[0, :, 0], [0, 128, 255])
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_cmyk_jpeg_becomes_rgb(good):
    pixels = good.load_image(6).astype(int)
    assert pixels.shape == (H, W, 3)
    assert np.abs(pixels - CYAN).max() <= 8


def test_exif_rotated_jpeg_matches_annotations_in_the_rotated_frame(good):
    pixels = good.load_image(7).astype(int)
    assert pixels.shape == (W, H, 3)
    mask = good.load_annotations(7)["masks"][0].astype(bool)
    assert mask.shape == (W, H)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 90)
    # JPEG blurs the block's edges, so compare the bulk of the pixels.
    assert red[1:9, 11:19].all() and not red[12:, :].any()
    assert (red & mask).sum() >= 0.9 * mask.sum() and (red & ~mask).sum() <= 0.1 * mask.sum()


def test_every_format_goes_through_the_pipeline(good):
    seen = {int(batch["image_id"][0]): batch for batch in _batches(good, (32, 48))}
    assert sorted(seen) == GOOD_IMAGE_IDS
    for batch in seen.values():
        assert batch["images"].shape == (1, 32, 48, 3)
        assert 0 <= batch["images"].min() and batch["images"].max() <= 255


def _batches(dataset, image_size, **kwargs):
    stream = make_dataset(dataset, image_size, 1, 8, 14, training=False, **kwargs)
    return [{k: v.numpy() for k, v in batch.items()} for batch in stream]


# Bad cases.

def test_not_coco_always_raises(tmp_path):
    for name, text, problem in [("text.json", "{not json", "not JSON"),
                                ("list.json", "[1, 2]", "top level is a list"),
                                ("no_images.json", '{"annotations": [], "categories": []}',
                                 "no 'images' list"),
                                ("no_image_id.json", json.dumps({
                                    "images": [], "categories": [],
                                    "annotations": [{"id": 1, "category_id": 1}]}),
                                 r"annotations\[0\] has no 'image_id'")]:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(DataError, match=problem) as error:
            load_coco_json(str(path))
        assert str(path) in str(error.value) and error.value.kind == "not_coco"


def test_skip_drops_and_counts_every_kind(root):
    policy = BadDataPolicy("skip")
    cleaned = policy.scan(CocoDataset(str(root / "all.json")))
    expected = {kind: 1 for kind in BAD_CASES}
    expected["bad_polygon"] = 2
    assert policy.counts == expected
    assert set(KINDS) - set(expected) == {"truncated_image"}
    # Bad images are gone, good ones stay (the truncated file passes the header check).
    assert cleaned.image_ids == GOOD_IMAGE_IDS + [TRUNCATED["id"]]
    kept = {annotation["id"]: annotation for annotation in cleaned.coco.dataset["annotations"]}
    assert set(kept) == set(range(1, 11)) | {34, 37}
    assert kept[34]["bbox"] == [25, 1, 5, 4]
    assert kept[37]["segmentation"] == [_rect_polygon(1, 1, 5, 5)]
    # The input dataset is left as it was.
    assert (len(CocoDataset(str(root / "all.json")).coco.dataset["annotations"])
            == 10 + sum(len(case[1]) for case in BAD_CASES.values()))
    summary = policy.summary("all.json")
    assert all(kind in summary for kind in expected)


@pytest.mark.parametrize("kind", sorted(BAD_CASES))
def test_each_kind_is_named_and_skipped_or_raised(root, kind):
    dataset = CocoDataset(str(root / f"{kind}.json"))
    skip = BadDataPolicy("skip")
    cleaned = skip.scan(dataset)
    assert list(skip.counts) == [kind]
    culprit = BAD_CASES[kind][2]
    assert culprit in skip.messages[kind][0]
    assert all(f"{kind}.json" in message for message in skip.messages[kind])
    bad_annotation_ids = {annotation["id"] for annotation in BAD_CASES[kind][1]}
    kept_ids = {annotation["id"] for annotation in cleaned.coco.dataset["annotations"]}
    if kind in ("box_clipped",):
        assert bad_annotation_ids <= kept_ids
    elif kind == "bad_polygon":
        assert kept_ids & bad_annotation_ids == {37}
    else:
        assert not kept_ids & bad_annotation_ids
    assert cleaned.image_ids == GOOD_IMAGE_IDS
    if kind == "box_clipped":
        # Clipping repairs the box, so it is counted but never stops a run.
        BadDataPolicy("error").scan(dataset)
        return
    with pytest.raises(DataError) as error:
        BadDataPolicy("error").scan(dataset)
    assert error.value.kind == kind and culprit in str(error.value)


def test_truncated_image_found_up_front_with_check_pixels(root):
    dataset = CocoDataset(str(root / "truncated.json"))
    policy = BadDataPolicy("skip")
    assert policy.scan(dataset).image_ids == GOOD_IMAGE_IDS + [22]
    assert policy.scan(dataset, check_pixels=True).image_ids == GOOD_IMAGE_IDS
    assert policy.counts == {"truncated_image": 1}
    assert "truncated.png" in policy.messages["truncated_image"][0]
    with pytest.raises(DataError, match="truncated.png") as error:
        decode_image(str(root / "truncated.png"))
    assert error.value.kind == "truncated_image"


@pytest.mark.parametrize("cache", [False, True])
def test_pipeline_skips_and_counts_an_image_that_fails_to_decode(root, cache, capsys):
    dataset = BadDataPolicy("skip").scan(CocoDataset(str(root / "truncated.json")))
    policy = BadDataPolicy("skip")
    ids = [int(b["image_id"][0]) for b in _batches(dataset, (32, 48), bad_data=policy, cache=cache)]
    assert ids == GOOD_IMAGE_IDS
    assert policy.counts == {"truncated_image": 1}
    assert "truncated.png" in capsys.readouterr().err
    training = make_dataset(dataset, (32, 48), 3, 8, 14, training=True, bad_data=policy, repeat=True)
    seen = {int(i) for batch in training.take(9) for i in batch["image_id"].numpy()}
    assert seen == set(GOOD_IMAGE_IDS) and policy.counts == {"truncated_image": 1}


def test_pipeline_without_policy_or_in_error_mode_stops(root):
    dataset = BadDataPolicy("skip").scan(CocoDataset(str(root / "truncated.json")))
    with pytest.raises(tf.errors.OpError, match="truncated.png"):
        _batches(dataset, (32, 48))
    policy = BadDataPolicy("error")
    with pytest.raises(tf.errors.OpError):
        _batches(dataset, (32, 48), bad_data=policy)
    assert policy.raised.kind == "truncated_image" and "truncated.png" in str(policy.raised)


# The command line on the set.

def test_show_data_draws_ground_truth(root, tmp_path, capsys):
    image = np.full((64, 64, 3), 100, np.uint8)
    Image.fromarray(image).save(tmp_path / "big.png")
    _write_json(tmp_path / "show.json",
                [{"id": 1, "file_name": "big.png", "height": 64, "width": 64},
                 {"id": 2, "file_name": "gone.png", "height": 64, "width": 64}],
                [_annotation(1, 1, [_rect_polygon(20, 30, 50, 60)], [20, 30, 30, 30])])
    out = tmp_path / "shown"
    code = cli.main(["show-data", str(tmp_path / "show.json"), "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0 and "missing_image" in stdout and "drew 1 images" in stdout
    assert os.listdir(out) == ["1_big.png"]
    drawn = np.asarray(Image.open(out / "1_big.png")).astype(float)
    scale = visualize.canvas_scale(64, 64)  # drawn upscaled, pixel for pixel
    assert drawn.shape == (64 * scale, 64 * scale, 3)
    # Inside the mask, away from its outline and the box's (the label sits above the box),
    # the image is blended half and half with the first instance colour.
    blended = 0.5 * 100 + 0.5 * np.array(visualize.instance_color(0))
    inside = drawn[35 * scale:55 * scale, 25 * scale:45 * scale]
    np.testing.assert_allclose(inside, np.broadcast_to(blended, inside.shape), atol=1)
    assert (drawn[:, :15 * scale] == 100).all() and (drawn[:, 55 * scale:] == 100).all()


def test_train_in_error_mode_stops_naming_the_file(root, tmp_path, capsys):
    code = cli.main(["train", "--train", str(root / "missing_image.json"), "--preset", "tiny",
                     "--on-bad-data", "error", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "missing.png" in err and "Traceback" not in err

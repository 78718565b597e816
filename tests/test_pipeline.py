"""tf.data pipeline: batch layout, box scaling, mini-masks, flips and determinism."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pycocotools import mask as mask_utils

from keras_maskrcnn import preprocessing
from keras_maskrcnn.data.coco import CocoDataset
from keras_maskrcnn.data.pipeline import make_dataset
from keras_maskrcnn.data.shapes import write_shapes_split
from keras_maskrcnn.preprocessing import compute_scale

RED = (255, 0, 0)
# An L shape (polygon, x y pairs) in the left half of a 30 × 50 image: mirroring it is visible
# both in the image and in its mini-mask.
L_SHAPE = [4, 5, 20, 5, 20, 11, 10, 11, 10, 25, 4, 25]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return CocoDataset(write_shapes_split(str(root), 6, 64, seed=1))


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    """Image 1: one red L on black. Image 2: blocks of areas 16, 64 and 36 plus a large crowd
    region. Image 3: nothing."""
    root = tmp_path_factory.mktemp("handmade")
    # Paint exactly the pixels pycocotools rasterises, so image and mask agree to the pixel.
    one = np.zeros((30, 50, 3), np.uint8)
    one[mask_utils.decode(mask_utils.frPyObjects([L_SHAPE], 30, 50))[..., 0] > 0] = RED
    Image.fromarray(one).save(root / "one.png")
    Image.new("RGB", (50, 30)).save(root / "two.png")

    def block(annotation_id, x, y, side, crowd=0):
        return {"id": annotation_id, "image_id": 2, "category_id": 9, "iscrowd": crowd,
                "bbox": [x, y, side, side], "area": side * side,
                "segmentation": [[x, y, x + side, y, x + side, y + side, x, y + side]]}

    data = {
        "images": [{"id": 1, "file_name": "one.png", "height": 30, "width": 50},
                   {"id": 2, "file_name": "two.png", "height": 30, "width": 50},
                   {"id": 3, "file_name": "two.png", "height": 30, "width": 50}],
        "categories": [{"id": 9, "name": "thing"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 9, "iscrowd": 0, "bbox": [4, 5, 16, 20],
             "area": 216, "segmentation": [L_SHAPE]},
            block(2, 1, 1, 4), block(3, 10, 2, 8), block(4, 30, 5, 6), block(5, 20, 10, 20, crowd=1),
        ],
    }
    (root / "annotations.json").write_text(json.dumps(data))
    return CocoDataset(str(root / "annotations.json"))


def _paste(mini_mask, box, shape):
    """Mini-mask [S, S] read back at the pixel centres inside its box; bool [h, w]."""
    size = mini_mask.shape[0]
    y1, x1, y2, x2 = box
    rows, cols = np.arange(shape[0]) + 0.5, np.arange(shape[1]) + 0.5
    r = np.floor((rows - y1) / (y2 - y1) * size).astype(int)
    c = np.floor((cols - x1) / (x2 - x1) * size).astype(int)
    inside = ((r >= 0) & (r < size))[:, None] & ((c >= 0) & (c < size))[None, :]
    values = mini_mask[np.clip(r, 0, size - 1)[:, None], np.clip(c, 0, size - 1)[None, :]]
    return inside & (values >= 0.5)


def _dilate(mask):
    """bool [h, w] grown by one pixel in each of the 8 directions."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    return np.max([padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)


def _as_numpy(dataset):
    return [{k: v.numpy() for k, v in batch.items()} for batch in dataset]


def test_batch_shapes_and_dtypes(shapes):
    train = make_dataset(shapes, (48, 40), batch_size=4, max_instances=5, gt_mask_size=14, training=True)
    expected = {"images": ((4, 48, 40, 3), tf.float32), "image_info": ((4, 5), tf.float32),
                "gt_boxes": ((4, 5, 4), tf.float32), "gt_classes": ((4, 5), tf.int32),
                "gt_masks": ((4, 5, 14, 14), tf.float32), "image_id": ((4,), tf.int64)}
    assert {k: (tuple(s.shape), s.dtype) for k, s in train.element_spec.items()} == expected
    batches = _as_numpy(train)
    assert len(batches) == 1  # 6 images, the partial batch is dropped
    batch = batches[0]
    assert 0 <= batch["images"].min() and batch["images"].max() <= 255
    assert 0 <= batch["gt_masks"].min() and batch["gt_masks"].max() <= 1
    assert set(np.unique(batch["gt_classes"])) <= {0, 1, 2, 3}

    evaluation = _as_numpy(make_dataset(shapes, (48, 40), 4, 5, 14, training=False))
    assert [len(b["image_id"]) for b in evaluation] == [4, 2]
    assert np.concatenate([b["image_id"] for b in evaluation]).tolist() == shapes.image_ids


# The 64-px shapes fit a 48 × 40 canvas at 40 px; size limits (short, long) can make them smaller.
@pytest.mark.parametrize("size_limits, valid_side", [(None, 40), ((30, 100), 30), ((100, 27), 27)])
def test_boxes_are_scaled_to_the_canvas(shapes, size_limits, valid_side):
    image_size = (48, 40)
    (batch,) = _as_numpy(make_dataset(shapes, image_size, 6, 5, 14, training=False,
                                      size_limits=size_limits))
    for i, image_id in enumerate(batch["image_id"]):
        info = shapes.image_info(image_id)
        scale = compute_scale(info["height"], info["width"], image_size, size_limits)
        np.testing.assert_allclose(batch["image_info"][i], [scale, valid_side, valid_side, 64, 64],
                                   rtol=1e-6)
        annotations = shapes.coco.loadAnns(shapes.coco.getAnnIds(imgIds=[int(image_id)]))
        expected = sorted(tuple(np.multiply([y, x, y + h, x + w], valid_side / 64))
                          for x, y, w, h in (a["bbox"] for a in annotations))
        count = len(annotations)
        assert (batch["gt_classes"][i, :count] > 0).all() and (batch["gt_classes"][i, count:] == 0).all()
        assert (batch["gt_boxes"][i, count:] == 0).all() and (batch["gt_masks"][i, count:] == 0).all()
        np.testing.assert_allclose(sorted(map(tuple, batch["gt_boxes"][i, :count])), expected, rtol=1e-5)


def test_mini_masks_paste_back_onto_the_full_masks(shapes):
    (batch,) = _as_numpy(make_dataset(shapes, (64, 64), 6, 5, 28, training=False))
    checked = 0
    for i, image_id in enumerate(batch["image_id"]):
        annotations = shapes.load_annotations(int(image_id))
        for box, mini_mask in zip(batch["gt_boxes"][i], batch["gt_masks"][i]):
            if not box.any():
                continue
            match = np.flatnonzero(np.abs(annotations["boxes"] - box).sum(axis=1) < 1e-3)
            full = annotations["masks"][match[0]].astype(bool)
            pasted = _paste(mini_mask, box, full.shape)
            assert (pasted & full).sum() / (pasted | full).sum() > 0.9
            checked += 1
    assert checked >= 6


def test_crowd_regions_dropped_largest_instances_kept_and_empty_images(handmade):
    (_, batch, empty) = _as_numpy(make_dataset(handmade, (30, 50), 1, 2, 14, training=False))
    np.testing.assert_array_equal(batch["gt_classes"][0], [1, 1])
    np.testing.assert_allclose(batch["gt_boxes"][0], [[2, 10, 10, 18], [5, 30, 11, 36]])
    assert empty["image_id"][0] == 3
    assert not empty["gt_classes"].any() and not empty["gt_boxes"].any() and not empty["gt_masks"].any()


def test_flip_moves_image_boxes_and_mini_masks_together(handmade):
    image_size = (48, 64)
    dataset = make_dataset(handmade, image_size, 1, 3, 28, training=True, seed=3, shuffle=False)
    flipped = set()
    for batch in _as_numpy(dataset.repeat(6)):
        if batch["image_id"][0] != 1:
            continue
        image = batch["images"][0]
        box = batch["gt_boxes"][0, 0]
        pasted = _paste(batch["gt_masks"][0, 0], box, image.shape[:2])
        red = (image[..., 0] > 128) & (image[..., 1] < 128)
        # Resizing blurs the edges, so compare the bulk of the pixels, not every one.
        assert red[pasted].mean() > 0.9
        assert (red & ~pasted).sum() < 0.1 * pasted.sum()
        flipped.add(bool(box[1] > batch["image_info"][0, 2] / 2))
    assert flipped == {False, True}


def test_same_seed_gives_the_same_batches(shapes):
    def epochs(seed):
        dataset = make_dataset(shapes, (32, 32), 2, 5, 14, training=True, seed=seed)
        return _as_numpy(dataset.repeat(2))

    first, second, other = epochs(5), epochs(5), epochs(6)
    assert len(first) == len(second) == 6
    for a, b in zip(first, second):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a["images"], b["images"]) for a, b in zip(first, other))


def test_preprocess_batch_resizes_and_pads_each_image():
    images = [np.full((20, 10, 3), 200, np.uint8), np.full((8, 16, 3), 100, np.uint8)]
    canvases, infos = preprocessing.preprocess_batch(images, (32, 32))
    assert canvases.shape == (2, 32, 32, 3) and canvases.dtype == np.float32
    np.testing.assert_allclose(infos, [[1.6, 32, 16, 20, 10], [2, 16, 32, 8, 16]], rtol=1e-6)
    assert canvases[0, :, :16].min() == 200 and canvases[0, :, 16:].max() == 0


def _assert_mask_on_object(pasted, drawn):
    """The pasted mini-mask (bool [h, w]) covers the drawn object's pixels (bool [h, w]).
    Resizing blurs edges by a pixel and a mini-mask cut by a crop is coarse, so a 1-pixel band
    is allowed and a few stray pixels beyond it."""
    assert (drawn & ~_dilate(pasted)).sum() <= 0.05 * drawn.sum()
    assert (pasted & ~_dilate(drawn)).sum() <= 0.05 * pasted.sum()


def test_flip_and_scale_jitter_keep_masks_on_the_object(handmade):
    # tf.data's random streams also depend on the global seed, which other tests change.
    tf.random.set_seed(0)
    image_size = (48, 64)
    fit_scale = compute_scale(30, 50, image_size)
    dataset = make_dataset(handmade, image_size, 1, 3, 28, training=True, seed=4, shuffle=False,
                           scale_jitter=(0.5, 2.5))
    scales, flips, cut, compared = [], set(), 0, 0
    for batch in _as_numpy(dataset.repeat(20)):
        if batch["image_id"][0] != 1:
            continue
        image, info = batch["images"][0], batch["image_info"][0]
        scales.append(info[0] / fit_scale)
        red = (image[..., 0] > 128) & (image[..., 1] < 128)
        if not batch["gt_classes"][0].any():
            # The crop left the L out: then none of it may show either.
            assert red.sum() < 4
            continue
        box = batch["gt_boxes"][0, 0]
        assert 0 <= box[0] < box[2] <= info[1] and 0 <= box[1] < box[3] <= info[2]
        pasted = _paste(batch["gt_masks"][0, 0], box, image.shape[:2])
        if pasted.sum() < 20:
            # The crop kept a sliver of the L: too few pixels to compare shapes.
            assert red.sum() < 40
            continue
        _assert_mask_on_object(pasted, red)
        compared += 1
        # The full L is 16 wide × 20 high; a box that is not is one the crop cut.
        cut += not np.isclose((box[3] - box[1]) / (box[2] - box[0]), 16 / 20, atol=0.05)
        flips.add(bool(red[:, : image.shape[1] // 2].sum() < red[:, image.shape[1] // 2:].sum()))
    assert min(scales) < 0.9 and max(scales) > 1.5, scales
    assert all(0.5 - 1e-6 <= s <= 2.5 + 1e-6 for s in scales)
    assert cut > 0 and len(flips) == 2 and compared >= 10


def _orientation(red):
    """Which of the 8 symmetries of the square the handmade L (16 wide, 20 high, its bars at the
    top and the left) shows in a bool [h, w] image: (lies on its side, more of it on the left,
    more of it at the top)."""
    rows, cols = np.nonzero(red)
    middle_row, middle_col = (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2
    return (bool(np.ptp(cols) > np.ptp(rows)),
            bool((cols < middle_col).sum() > (cols > middle_col).sum()),
            bool((rows < middle_row).sum() > (rows > middle_row).sum()))


@pytest.mark.parametrize("flips, orientations", [
    ("all", {(side, left, top) for side in (False, True) for left in (False, True)
             for top in (False, True)}),
    ("left-right", {(False, True, True), (False, False, True)}),
])
def test_flips_give_their_orientations_with_masks_on_the_object(handmade, flips, orientations):
    tf.random.set_seed(0)
    dataset = make_dataset(handmade, (64, 64), 1, 3, 28, training=True, seed=3, shuffle=False,
                           flips=flips)
    seen = []
    for batch in _as_numpy(dataset.repeat(48)):
        if batch["image_id"][0] != 1:
            continue
        image, box = batch["images"][0], batch["gt_boxes"][0, 0]
        red = (image[..., 0] > 128) & (image[..., 1] < 128)
        pasted = _paste(batch["gt_masks"][0, 0], box, image.shape[:2])
        _assert_mask_on_object(pasted, red)
        rows, cols = np.nonzero(red)
        np.testing.assert_allclose(box, [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1],
                                   atol=1.5)
        seen.append(_orientation(red))
    assert set(seen) == orientations, seen


def test_unknown_flips_are_refused(handmade):
    with pytest.raises(ValueError, match="unknown flips 'up-down'"):
        make_dataset(handmade, (64, 64), 1, 3, 28, training=True, flips="up-down")


@pytest.mark.parametrize("cache", [False, True])
def test_start_batch_continues_the_stream(shapes, cache):
    def stream(start_batch):
        dataset = make_dataset(shapes, (32, 32), 2, 5, 14, training=True, seed=7, repeat=True,
                               start_batch=start_batch, cache=cache, scale_jitter=(0.8, 1.2))
        return _as_numpy(dataset.take(7 - start_batch))

    whole, resumed = stream(0), stream(4)
    assert len(resumed) == 3
    for a, b in zip(whole[4:], resumed):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    # Past the 6 images, the second pass is in another order.
    order = np.concatenate([batch["image_id"] for batch in whole])
    assert sorted(order[:6]) == sorted(shapes.image_ids) and list(order[:6]) != list(order[6:12])


def test_cache_gives_the_same_examples(shapes):
    plain = _as_numpy(make_dataset(shapes, (32, 32), 3, 5, 14, training=False))
    cached = make_dataset(shapes, (32, 32), 3, 5, 14, training=False, cache=True)
    for _ in range(2):  # the second pass reads the cache
        for a, b in zip(plain, _as_numpy(cached)):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])


@pytest.fixture(scope="module")
def both_orientations(tmp_path_factory):
    """Images 1, 3, 5: landscape 30 × 50; 2, 4, 6: portrait 50 × 30; a 10 × 12 box in each."""
    root = tmp_path_factory.mktemp("orientations")
    images, annotations = [], []
    for image_id in range(1, 7):
        height, width = (30, 50) if image_id % 2 else (50, 30)
        pixels = np.zeros((height, width, 3), np.uint8)
        pixels[4:14, 6:18] = RED
        Image.fromarray(pixels).save(root / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": height,
                       "width": width})
        annotations.append({"id": image_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                            "bbox": [6, 4, 12, 10], "area": 120,
                            "segmentation": [[6, 4, 18, 4, 18, 14, 6, 14]]})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "block"}]}
    (root / "annotations.json").write_text(json.dumps(data))
    return CocoDataset(str(root / "annotations.json"))


@pytest.mark.parametrize("training", [False, True])
def test_size_limits_turn_the_canvas_to_each_images_orientation(both_orientations, training):
    # Limits (36, 60) scale both orientations by 1.2 (short side 30 → 36), as torchvision
    # would; the 40 × 64 canvas, turned on its side for portrait images, holds either.
    batches = _as_numpy(make_dataset(both_orientations, (40, 64), 2, 3, 14, training=training,
                                     shuffle=False, size_limits=(36, 60)))
    # Three of each orientation in batches of 2: a partial batch of each, dropped in training.
    assert sorted(len(b["image_id"]) for b in batches) == ([2, 2] if training else [1, 1, 2, 2])
    if not training:
        assert sorted(np.concatenate([b["image_id"] for b in batches])) == [1, 2, 3, 4, 5, 6]
    for batch in batches:
        portrait = batch["image_id"] % 2 == 0
        assert portrait.all() or not portrait.any()  # one orientation per batch
        want_canvas = (64, 40) if portrait[0] else (40, 64)
        assert batch["images"].shape[1:3] == want_canvas
        for info, is_portrait in zip(batch["image_info"], portrait):
            original = (50, 30) if is_portrait else (30, 50)
            np.testing.assert_allclose(info, [1.2, original[0] * 1.2, original[1] * 1.2, *original],
                                       rtol=1e-6)
        if not training:  # unflipped: the box is where it was drawn, scaled by 1.2
            np.testing.assert_allclose(batch["gt_boxes"][:, 0],
                                       [[4.8, 7.2, 16.8, 21.6]] * len(batch["image_id"]), rtol=1e-5)


@pytest.mark.slow
def test_a_model_trains_on_batches_of_both_orientations(both_orientations, untrained_tiny_model):
    import dataclasses

    import keras

    from keras_maskrcnn.model import rebuild

    config = untrained_tiny_model.model_config
    model = rebuild(untrained_tiny_model, config.replace(input=dataclasses.replace(
        config.input, image_size=(64, 96), size_limits=(60, 96))))
    batches = make_dataset(both_orientations, model.model_config.input.image_size, 2, 3,
                           model.model_config.mask_head.gt_mask_size, training=True, seed=3,
                           size_limits=model.model_config.input.size_limits)
    canvases = {tuple(batch["images"].shape[1:3]) for batch in batches}
    assert canvases == {(64, 96), (96, 64)}
    model.compile(optimizer=keras.optimizers.SGD(0.001))
    # Grouping leaves the cardinality unknown: fit is told how many batches an epoch holds.
    history = model.fit(batches.repeat(), epochs=2, steps_per_epoch=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))

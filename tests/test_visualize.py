"""Tests for keras_maskrcnn.visualize: what is drawn, on what canvas, and where labels go."""

import numpy as np
from PIL import Image, ImageDraw

from keras_maskrcnn import visualize


def _scene():
    image = np.full((80, 100, 3), 128, np.uint8)
    boxes = np.array([[30, 40, 60, 80]], np.float32)
    masks = np.zeros((1, 80, 100), bool)
    masks[0, 35:55, 45:75] = True
    return image, boxes, masks


def _upscaled(array, scale):
    return array.repeat(scale, axis=0).repeat(scale, axis=1)


def test_small_images_are_drawn_upscaled_pixel_for_pixel():
    image, boxes, masks = _scene()
    scale = visualize.canvas_scale(80, 100)
    assert scale == 6 and 100 * scale >= visualize.MIN_CANVAS_SIDE > 100 * (scale - 1)
    assert visualize.canvas_scale(128, 128) == 4 and visualize.canvas_scale(2000, 3000) == 1
    drawn = visualize.draw_detections(image, boxes, [3], [0.93], masks, {3: "cat"})
    assert drawn.shape == (80 * scale, 100 * scale, 3) and drawn.dtype == np.uint8
    big_mask = _upscaled(masks[0], scale)
    assert (drawn[big_mask] != 128).any(axis=-1).all()
    # Below the box and to its left the image is untouched: the label went above the box.
    np.testing.assert_array_equal(drawn[61 * scale:], _upscaled(image, scale)[61 * scale:])
    np.testing.assert_array_equal(drawn[:, :39 * scale], _upscaled(image, scale)[:, :39 * scale])
    assert (drawn[20 * scale:30 * scale, 40 * scale:80 * scale] != 128).any()
    np.testing.assert_array_equal(image, np.full((80, 100, 3), 128, np.uint8))


def test_mask_interior_is_blended_and_its_border_outlined():
    image, boxes, masks = _scene()
    drawn = visualize.draw_detections(image, boxes, [1], None, masks).astype(float)
    scale = visualize.canvas_scale(80, 100)
    color = np.array(visualize.instance_color(0), float)
    centre = drawn[45 * scale, 60 * scale]
    np.testing.assert_allclose(centre, 0.5 * 128 + 0.5 * color, atol=1)
    # The mask's first canvas column is its outline, in the instance colour.
    np.testing.assert_array_equal(drawn[45 * scale, 45 * scale], color)


def test_draw_detections_without_masks_or_names():
    image, boxes, _ = _scene()
    scale = visualize.canvas_scale(80, 100)
    drawn = visualize.draw_detections(image, boxes, ["person"], None, None, None)
    assert (drawn[30 * scale, 40 * scale:80 * scale] != 128).any(axis=-1).all()
    np.testing.assert_array_equal(drawn[40 * scale:50 * scale, 50 * scale:70 * scale], 128)
    empty = visualize.draw_detections(image, np.zeros((0, 4)), [], [], np.zeros((0, 80, 100), bool))
    np.testing.assert_array_equal(empty, _upscaled(image, scale))


def test_labels_stay_inside_the_image_at_its_edges():
    canvas = (512, 512)
    for box in [(0, 0, 100, 150), (400, 380, 512, 512), (0, 420, 60, 512), (450, 0, 512, 40)]:
        rect = visualize.place_label((120, 24), box, None, np.zeros((128, 128), np.int32), 4, [],
                                     canvas)
        assert 0 <= rect[0] and rect[2] <= canvas[1] and 0 <= rect[1] and rect[3] <= canvas[0]
    # A label wider than the image starts at its left edge.
    rect = visualize.place_label((600, 24), (10, 10, 50, 50), None, np.zeros((128, 128), np.int32),
                                 4, [], canvas)
    assert rect[0] == 0


def test_label_leaves_its_own_mask_where_there_is_room():
    # A shape touching the image's top: no room above it, so the label goes below the box.
    image = np.full((128, 128, 3), 60, np.uint8)
    masks = np.zeros((1, 128, 128), bool)
    masks[0, 0:50, 30:90] = True
    drawn = visualize.draw_detections(image, np.array([[0, 30, 50, 90]]), ["square"], [0.9], masks)
    scale = visualize.canvas_scale(128, 128)
    label = (drawn == visualize.instance_color(0)).all(axis=-1)  # label, box and outline
    # Inside the mask, away from its outline, nothing is painted in the label's colour...
    assert not label[4:50 * scale - 4, 30 * scale + 4:90 * scale - 4].any()
    # ...and below the box there is a label's worth of it, inside the image.
    rows = np.nonzero(label[50 * scale:].any(axis=1))[0]
    assert len(rows) >= visualize.MIN_FONT_SIZE


def test_labels_avoid_each_other_and_other_shapes():
    # Two shapes side by side at the same height: their labels must not overlap.
    coverage = np.zeros((128, 128), np.int32)
    first = np.zeros((128, 128), bool)
    first[40:80, 20:60] = True
    second = np.zeros((128, 128), bool)
    second[40:80, 62:110] = True
    coverage += first
    coverage += second
    size = (200, 20)  # wider than each box on the 512-pixel canvas
    a = visualize.place_label(size, (160, 80, 320, 240), first, coverage, 4, [], (512, 512))
    b = visualize.place_label(size, (160, 248, 320, 440), second, coverage, 4, [a], (512, 512))
    assert visualize._overlap(a, b) == 0
    for rect in (a, b):
        assert visualize._covered(coverage, rect, 4) == 0  # on no shape at all


def test_font_grows_with_the_picture():
    sizes = []
    for side in (64, 512, 1024, 3000):
        scale = visualize.canvas_scale(side, side)
        font = visualize.label_font(side * scale, side * scale)
        box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), "circle 0.93", font=font)
        sizes.append(box[3] - box[1])
    assert sizes[0] == sizes[1] < sizes[2] < sizes[3]
    assert sizes[3] >= 3000 * visualize.FONT_FRACTION * 0.6  # a TrueType font, not the 11-pixel bitmap


def test_large_image_keeps_its_size_and_labels_are_large():
    image = np.full((1500, 2400, 3), 90, np.uint8)
    masks = np.zeros((1, 1500, 2400), bool)
    masks[0, 500:1200, 600:1500] = True
    drawn = visualize.draw_detections(image, np.array([[500, 600, 1200, 1500]]), ["dog"], [0.9],
                                      masks)
    assert drawn.shape == image.shape
    color = visualize.instance_color(0)
    above = (drawn[:500] == color).all(axis=-1)  # the label's background, above the box
    rows = np.nonzero(above.any(axis=1))[0]
    assert rows.max() - rows.min() + 1 >= 2400 * visualize.FONT_FRACTION


def test_save_png_round_trips(tmp_path):
    image, boxes, masks = _scene()
    drawn = visualize.draw_detections(image, boxes, [1], [0.5], masks)
    path = tmp_path / "out" / "detections.png"
    visualize.save_png(drawn, path)
    with Image.open(path) as loaded:
        assert loaded.format == "PNG"
        np.testing.assert_array_equal(np.asarray(loaded), drawn)

"""Draw detections (translucent masks with outlines, box outlines, "name score" labels) with PIL,
so that a person can read them at any image size.

Small images are drawn on a canvas upscaled by a whole factor (nearest neighbour: the pixels
stay as they are) so the long side is at least MIN_CANVAS_SIDE; text and lines grow with the
canvas. Each label goes where it covers the least of its own shape, then of other shapes and
labels, trying places around and inside its box, always inside the canvas.

Shapes: K detections, H, W image size, s the upscale factor (canvas s·H × s·W). Boxes are
`[y1, x1, y2, x2]` in image pixels.
"""

import colorsys
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MASK_ALPHA = 0.5
MIN_CANVAS_SIDE = 512  # images with a shorter long side are upscaled to reach it
# Text height as a fraction of the canvas' long side, with a floor that stays legible.
FONT_FRACTION = 1 / 48
MIN_FONT_SIZE = 16
# Lines (box and mask outlines) as a fraction of the canvas' long side, at least 2 pixels.
LINE_FRACTION = 1 / 400
MIN_LINE_WIDTH = 2
# What a label costs per covered pixel, in the order it matters: other labels, its own shape,
# other shapes. A place's rank among the candidates breaks ties (near the box's top left first).
LABEL_OVER_LABEL_COST = 8.0
LABEL_OVER_OWN_SHAPE_COST = 4.0
LABEL_OVER_OTHER_SHAPE_COST = 1.0
# Golden-ratio hue steps keep consecutive instances' colours far apart on the hue circle.
_HUE_STEP = 0.618033988749895
_LIGHT_TEXT, _DARK_TEXT = (255, 255, 255), (0, 0, 0)
_DARK_TEXT_LUMINANCE = 150  # label backgrounds brighter than this get dark text


def instance_color(index):
    """Distinct, saturated RGB colour for instance `index` → tuple of 3 ints."""
    r, g, b = colorsys.hsv_to_rgb((index * _HUE_STEP) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def canvas_scale(height, width):
    """Whole upscale factor s ≥ 1 that brings the long side to at least MIN_CANVAS_SIDE."""
    return max(1, math.ceil(MIN_CANVAS_SIDE / max(height, width, 1)))


def label_font(canvas_height, canvas_width):
    """The labels' font for a canvas of this size: a TrueType font of FONT_FRACTION of the
    long side (Pillow's bundled one), or PIL's fixed bitmap font where FreeType is missing."""
    size = max(MIN_FONT_SIZE, round(FONT_FRACTION * max(canvas_height, canvas_width)))
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):  # Pillow built without FreeType
        return ImageFont.load_default()


def _label_text(label, score, class_names):
    """Label "name 0.93" (or "name" without a score) → str."""
    name = str(label)
    if class_names is not None and not isinstance(label, str):
        name = class_names.get(int(label), name)
    return name if score is None else f"{name} {float(score):.2f}"


def draw_detections(image, boxes, labels, scores=None, full_masks=None, class_names=None):
    """Draw masks, boxes and labels on an (upscaled) copy of `image`.

    Args:
      image: uint8 [H, W, 3].
      boxes: float [K, 4] `[y1, x1, y2, x2]`.
      labels: [K] category ids (named through `class_names`) or strings.
      scores: float [K] or None (labels then carry no score).
      full_masks: bool [K, H, W] or None (each box's area then stands for its shape when
        placing labels).
      class_names: dict category_id -> name, or None to print the ids.
    Returns:
      uint8 [s·H, s·W, 3], s = `canvas_scale(H, W)`.
    """
    image = np.asarray(image, np.uint8)
    height, width = image.shape[:2]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    masks = (None if full_masks is None
             else np.asarray(full_masks, bool).reshape(-1, height, width))
    blended = image.astype(np.float32)
    if masks is not None:
        for k, mask in enumerate(masks):
            blended[mask] = (1.0 - MASK_ALPHA) * blended[mask] + MASK_ALPHA * np.float32(instance_color(k))
    scale = canvas_scale(height, width)
    pixels = np.rint(blended).astype(np.uint8)
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    line = max(MIN_LINE_WIDTH, round(LINE_FRACTION * max(pixels.shape[:2])))
    if masks is not None:
        for k, mask in enumerate(masks):
            _draw_outline(pixels, mask, scale, line, instance_color(k))

    canvas = Image.fromarray(pixels)
    draw = ImageDraw.Draw(canvas)
    font = label_font(*pixels.shape[:2])
    shapes = masks if masks is not None else _box_areas(boxes, height, width)
    coverage = shapes.sum(axis=0, dtype=np.int32) if len(shapes) else np.zeros((height, width), np.int32)
    placed = []
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        color = instance_color(k)
        # PIL rectangles include their end pixel; the box's last covered pixel is y2·s - 1.
        left, top = round(float(x1) * scale), round(float(y1) * scale)
        right = max(round(float(x2) * scale) - 1, left)
        bottom = max(round(float(y2) * scale) - 1, top)
        draw.rectangle((left, top, right, bottom), outline=color, width=line)
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        color = instance_color(k)
        text = _label_text(labels[k], None if scores is None else scores[k], class_names)
        text_box = draw.textbbox((0, 0), text, font=font)
        pad = max(1, line // 2 + 1)
        size = (text_box[2] - text_box[0] + 2 * pad, text_box[3] - text_box[1] + 2 * pad)
        box = tuple(round(float(v) * scale) for v in (y1, x1, y2, x2))
        rect = place_label(size, box, shapes[k] if len(shapes) else None, coverage, scale,
                           placed, pixels.shape[:2])
        placed.append(rect)
        # Framed in the text's colour, so a label stands out from a background of its hue.
        text_color = _text_color(color)
        draw.rectangle((rect[0], rect[1], rect[2] - 1, rect[3] - 1), fill=color, outline=text_color)
        draw.text((rect[0] + pad - text_box[0], rect[1] + pad - text_box[1]), text,
                  fill=text_color, font=font)
    return np.asarray(canvas, np.uint8)


def place_label(size, box, own_shape, coverage, scale, placed, canvas_shape):
    """Where a label of `size` (w, h) canvas pixels goes → (left, top, right, bottom), right and
    bottom exclusive, inside the canvas whenever the label fits in it.

    `box` is the detection's `(y1, x1, y2, x2)` on the canvas, `own_shape` its bool [H, W] mask
    (or None), `coverage` int [H, W] how many shapes cover each image pixel, `placed` the
    rectangles of labels already drawn. Candidates are the places above, below, inside and
    beside the box; the cheapest (LABEL_*_COST per covered pixel) wins, the earlier on ties.
    """
    w, h = size
    canvas_h, canvas_w = canvas_shape
    y1, x1, y2, x2 = box
    corners = [(x1, y1 - h), (x1, y2), (x1, y1), (x1, y2 - h),           # left-aligned
               (x2 - w, y1 - h), (x2 - w, y2), (x2 - w, y1), (x2 - w, y2 - h),  # right-aligned
               (x2, y1), (x1 - w, y1), (x2, y2 - h), (x1 - w, y2 - h)]   # beside
    best, best_cost = None, None
    for rank, (left, top) in enumerate(corners):
        left = min(max(left, 0), max(canvas_w - w, 0))
        top = min(max(top, 0), max(canvas_h - h, 0))
        rect = (left, top, left + w, top + h)
        cost = rank * 1e-3 + LABEL_OVER_LABEL_COST * sum(_overlap(rect, other) for other in placed)
        if own_shape is not None:
            own, total = _covered(own_shape, rect, scale), _covered(coverage, rect, scale)
            cost += LABEL_OVER_OWN_SHAPE_COST * own + LABEL_OVER_OTHER_SHAPE_COST * (total - own)
        if best_cost is None or cost < best_cost:
            best, best_cost = rect, cost
    return best


def _covered(counts, rect, scale):
    """Canvas pixels of `rect` covered by `counts` (an [H, W] image-pixel map, summed)."""
    left, top, right, bottom = rect
    window = counts[top // scale:-(-bottom // scale), left // scale:-(-right // scale)]
    return float(window.sum()) * scale * scale


def _overlap(a, b):
    """Area shared by rectangles (left, top, right, bottom), right and bottom exclusive."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _box_areas(boxes, height, width):
    """bool [K, H, W]: each box's pixels, standing for its shape when there are no masks."""
    areas = np.zeros((len(boxes), height, width), bool)
    for k, (y1, x1, y2, x2) in enumerate(np.rint(boxes).astype(int)):
        areas[k, max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
    return areas


def _draw_outline(pixels, mask, scale, width, color):
    """Paint the `width`-pixel inner border of `mask` (bool [H, W]) upscaled by `scale` into
    `pixels` (uint8 [s·H, s·W, 3]) in place."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(rows):
        return
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = mask[top:bottom, left:right].repeat(scale, axis=0).repeat(scale, axis=1)
    # Erode by a (2·width + 1)² square, one axis at a time: what it removes is the border.
    interior = crop
    for axis in (0, 1):
        padded = np.pad(interior, [(width, width) if a == axis else (0, 0) for a in (0, 1)])
        interior = np.logical_and.reduce([np.take(padded, range(shift, shift + crop.shape[axis]), axis=axis)
                                          for shift in range(2 * width + 1)])
    region = pixels[top * scale:bottom * scale, left * scale:right * scale]
    region[crop & ~interior] = color


def _text_color(background):
    """White text on dark label backgrounds, black on light ones."""
    r, g, b = background
    return _DARK_TEXT if 0.299 * r + 0.587 * g + 0.114 * b > _DARK_TEXT_LUMINANCE else _LIGHT_TEXT


def save_png(image, path):
    """Write uint8 [H, W, 3] `image` to `path` as PNG, creating the parent directory."""
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(path, format="PNG")

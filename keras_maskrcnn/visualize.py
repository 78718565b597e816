"""Draw detections (translucent masks, box outlines, "name score" labels) on an image with PIL.

Shapes: K detections, H, W image size. Boxes are `[y1, x1, y2, x2]` in image pixels.
"""

import colorsys
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MASK_ALPHA = 0.5
BOX_LINE_WIDTH = 2
# Golden-ratio hue steps keep consecutive instances' colours far apart on the hue circle.
_HUE_STEP = 0.618033988749895
_TEXT_COLOR = (255, 255, 255)


def instance_color(index):
    """Distinct, saturated RGB colour for instance `index` → tuple of 3 ints."""
    r, g, b = colorsys.hsv_to_rgb((index * _HUE_STEP) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _label_text(label, score, class_names):
    """Label "name 0.93" (or "name" without a score) → str."""
    name = str(label)
    if class_names is not None and not isinstance(label, str):
        name = class_names.get(int(label), name)
    return name if score is None else f"{name} {float(score):.2f}"


def draw_detections(image, boxes, labels, scores=None, full_masks=None, class_names=None):
    """Draw masks, boxes and labels on a copy of `image`.

    Args:
      image: uint8 [H, W, 3].
      boxes: float [K, 4] `[y1, x1, y2, x2]`.
      labels: [K] category ids (named through `class_names`) or strings.
      scores: float [K] or None (labels then carry no score).
      full_masks: bool [K, H, W] or None.
      class_names: dict category_id -> name, or None to print the ids.
    Returns:
      uint8 [H, W, 3].
    """
    image = np.asarray(image, np.uint8)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    blended = image.astype(np.float32)
    if full_masks is not None:
        for k, mask in enumerate(np.asarray(full_masks, bool)):
            blended[mask] = (1.0 - MASK_ALPHA) * blended[mask] + MASK_ALPHA * np.float32(instance_color(k))
    canvas = Image.fromarray(np.rint(blended).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        color = instance_color(k)
        # PIL rectangles include their end pixel; the box's last covered pixel is y2 - 1.
        left, top = round(float(x1)), round(float(y1))
        right, bottom = max(round(float(x2)) - 1, left), max(round(float(y2)) - 1, top)
        draw.rectangle((left, top, right, bottom), outline=color, width=BOX_LINE_WIDTH)
        text = _label_text(labels[k], None if scores is None else scores[k], class_names)
        text_box = draw.textbbox((0, 0), text, font=font)
        text_w, text_h = text_box[2] - text_box[0], text_box[3] - text_box[1]
        # Above the box when there is room, otherwise just inside its top edge.
        text_top = top - text_h - 2 if top >= text_h + 2 else top
        draw.rectangle((left, text_top, left + text_w + 2, text_top + text_h + 2), fill=color)
        draw.text((left + 1 - text_box[0], text_top + 1 - text_box[1]), text, fill=_TEXT_COLOR, font=font)
    return np.asarray(canvas, np.uint8)


def save_png(image, path):
    """Write uint8 [H, W, 3] `image` to `path` as PNG, creating the parent directory."""
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(path, format="PNG")

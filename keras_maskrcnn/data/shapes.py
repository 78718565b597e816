"""Synthetic "shapes" dataset in COCO format: squares, circles and triangles on a plain background.

Shapes: S image side (images are S × S RGB); N shapes in one image (1..4).

Each split is written as `<split>/annotations.json` plus `<split>/images/000000.png, ...`.
Annotations hold the *visible* part of each shape (later shapes occlude earlier ones) as
compressed RLE, so the set exercises the same reading path as real COCO data.
"""

import json
import os

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from tqdm import tqdm

SQUARE, CIRCLE, TRIANGLE = 1, 2, 3
CATEGORIES = ({"id": SQUARE, "name": "square"}, {"id": CIRCLE, "name": "circle"},
              {"id": TRIANGLE, "name": "triangle"})
MAX_SHAPES_PER_IMAGE = 4
SIZE_RANGE = (0.15, 0.45)  # shape size as a fraction of the image side
MIN_VISIBLE_PIXELS = 20
MIN_VISIBLE_FRACTION = 0.3  # of the unoccluded area
# Shapes must stand out from the background; sum of absolute RGB differences.
MIN_COLOUR_DISTANCE = 120
PROGRESS_MIN_IMAGES = 100


def make_shapes(out_root, num_train, num_val, image_size=128, seed=0):
    """Write `out_root/train` and `out_root/val`; returns the two annotation file paths."""
    # Independent streams for the two splits, both fixed by `seed`.
    train_seed, val_seed = np.random.SeedSequence(seed).generate_state(2)
    return (write_shapes_split(os.path.join(out_root, "train"), num_train, image_size, int(train_seed)),
            write_shapes_split(os.path.join(out_root, "val"), num_val, image_size, int(val_seed)))


def write_shapes_split(out_dir, num_images, image_size, seed):
    """Write `num_images` images and their `annotations.json` under out_dir; returns the JSON path."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    images, annotations = [], []
    for index in tqdm(range(num_images), desc=f"shapes {os.path.basename(out_dir)}",
                      disable=num_images < PROGRESS_MIN_IMAGES):
        image_id = index + 1
        file_name = f"images/{index:06d}.png"
        pixels, instances = _render_image(rng, image_size)
        Image.fromarray(pixels).save(os.path.join(out_dir, file_name), compress_level=1)
        images.append({"id": image_id, "file_name": file_name, "height": image_size, "width": image_size})
        for category_id, visible in instances:
            rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "area": int(mask_utils.area(rle)),
                "iscrowd": 0,
            })
    path = os.path.join(out_dir, "annotations.json")
    with open(path, "w") as f:
        json.dump({"info": {"description": "keras-maskrcnn synthetic shapes"},
                   "images": images, "annotations": annotations,
                   "categories": [dict(c, supercategory="shape") for c in CATEGORIES]}, f)
    return path


def _render_image(rng, image_size):
    """Draw one image → (uint8 [S, S, 3], list of (category_id, bool [S, S] visible mask))."""
    background = rng.integers(0, 256, size=3)
    shapes = []
    for _ in range(int(rng.integers(1, MAX_SHAPES_PER_IMAGE + 1))):
        category_id = int(rng.integers(1, len(CATEGORIES) + 1))
        shapes.append((category_id, _shape_mask(rng, image_size, category_id),
                       _contrasting_colour(rng, background)))

    # Walk from the top layer down so a shape that is mostly hidden can be left out entirely:
    # dropping it then never leaves unannotated pixels in the image or changes other shapes.
    covered = np.zeros((image_size, image_size), bool)
    kept = []
    for category_id, full, colour in reversed(shapes):
        visible = full & ~covered
        area = int(visible.sum())
        if area < MIN_VISIBLE_PIXELS or area < MIN_VISIBLE_FRACTION * full.sum():
            continue
        covered |= full
        kept.append((category_id, visible, colour))
    kept.reverse()

    pixels = np.empty((image_size, image_size, 3), np.uint8)
    pixels[:] = background
    for _, visible, colour in kept:
        pixels[visible] = colour
    return pixels, [(category_id, visible) for category_id, visible, _ in kept]


def _contrasting_colour(rng, background):
    """Random RGB colour far enough from the background to be seen; int [3]."""
    while True:
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - background).sum() >= MIN_COLOUR_DISTANCE:
            return colour


def _shape_mask(rng, image_size, category_id):
    """Unoccluded mask of one randomly placed shape, wholly inside the image; bool [S, S]."""
    size = rng.uniform(*SIZE_RANGE) * image_size
    cx, cy = rng.uniform(size / 2, image_size - size / 2, size=2)
    canvas = Image.new("L", (image_size, image_size), 0)
    draw = ImageDraw.Draw(canvas)
    half = size / 2
    if category_id == SQUARE:
        draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=1)
    elif category_id == CIRCLE:
        draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=1)
    else:
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        draw.polygon(list(zip(cx + half * np.cos(angles), cy + half * np.sin(angles))), fill=1)
    return np.asarray(canvas, bool)

"""Synthetic "shapes" dataset in COCO format: squares, circles and triangles on a background.

Shapes: S image side (images are S × S RGB); N shapes in one image (1..4).

Each split is written as `<split>/annotations.json` plus `<split>/images/000000.png, ...`.
Annotations hold the *visible* part of each shape (later shapes occlude earlier ones), by
default as compressed RLE, so the set exercises the same reading path as real COCO data.

`ShapesOptions` make harder sets (`HARD` is the `--hard` preset): colours close to the
background's, shapes occluded down to a few visible pixels, textured backgrounds with camera
noise, category ids that are not 1..C, and polygons for some shapes with RLE for others. The
defaults write exactly the set they always wrote, byte for byte.
"""

import dataclasses
import json
import os

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from tqdm import tqdm

from keras_maskrcnn.data.polygons import exact_polygons

SQUARE, CIRCLE, TRIANGLE = 1, 2, 3  # shape kinds; their category ids are ShapesOptions'
SHAPE_NAMES = ("square", "circle", "triangle")  # by kind - 1
MAX_SHAPES_PER_IMAGE = 4
SIZE_RANGE = (0.15, 0.45)  # shape size as a fraction of the image side
MIN_VISIBLE_PIXELS = 20
MIN_VISIBLE_FRACTION = 0.3  # of the unoccluded area
# Shapes must stand out from the background; sum of absolute RGB differences.
MIN_COLOUR_DISTANCE = 120
MAX_COLOUR_DISTANCE = 3 * 255
BACKGROUNDS = ("plain", "texture")
# The textured background: smooth blotches (a TEXTURE_GRID² grid of RGB offsets with this
# standard deviation, bilinearly upscaled), and over the whole image camera noise.
TEXTURE_GRID = 6
TEXTURE_STDDEV = 24.0
NOISE_STDDEV = 6.0
PROGRESS_MIN_IMAGES = 100


@dataclasses.dataclass(frozen=True)
class ShapesOptions:
    """How hard a shapes set is; the defaults are the plain set `make demo` trains on.

    min_colour_distance: a shape's colour differs from the background's (its mean, when
      textured) by at least this sum of absolute RGB differences, 0..765 (0: may match it).
    min_visible_pixels, min_visible_fraction: a shape occluded below either (pixels; fraction
      of its unoccluded area) is left out of the image.
    background: "plain" (one colour) or "texture" (blotches, and noise over the whole image).
    category_ids: the ids of square, circle and triangle, distinct and positive.
    rle_shapes: names of the shapes whose masks are written as RLE; the others' as polygons
      (a visible part with a hole, which COCO polygons cannot hold, stays RLE).
    """

    min_colour_distance: int = MIN_COLOUR_DISTANCE
    min_visible_pixels: int = MIN_VISIBLE_PIXELS
    min_visible_fraction: float = MIN_VISIBLE_FRACTION
    background: str = "plain"
    category_ids: tuple = (SQUARE, CIRCLE, TRIANGLE)
    rle_shapes: tuple = SHAPE_NAMES

    def __post_init__(self):
        object.__setattr__(self, "category_ids", tuple(int(i) for i in self.category_ids))
        object.__setattr__(self, "rle_shapes", tuple(self.rle_shapes))
        if not 0 <= self.min_colour_distance <= MAX_COLOUR_DISTANCE:
            raise ValueError(f"min_colour_distance must lie in [0, {MAX_COLOUR_DISTANCE}], "
                             f"got {self.min_colour_distance}")
        if self.min_visible_pixels < 1:
            raise ValueError(f"min_visible_pixels must be at least 1, got {self.min_visible_pixels}")
        if not 0 <= self.min_visible_fraction <= 1:
            raise ValueError(f"min_visible_fraction must lie in [0, 1], got {self.min_visible_fraction}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {self.background!r}")
        if (len(self.category_ids) != len(SHAPE_NAMES) or min(self.category_ids) < 1
                or len(set(self.category_ids)) != len(SHAPE_NAMES)):
            raise ValueError(f"category_ids must be {len(SHAPE_NAMES)} distinct positive ids "
                             f"(square, circle, triangle), got {list(self.category_ids)}")
        unknown = sorted(set(self.rle_shapes) - set(SHAPE_NAMES))
        if unknown:
            raise ValueError(f"rle_shapes: unknown shapes {unknown}; choose from {SHAPE_NAMES}")

    def categories(self):
        """The COCO "categories" entries, in shape-kind order."""
        return [{"id": category_id, "name": name}
                for category_id, name in zip(self.category_ids, SHAPE_NAMES)]


CATEGORIES = tuple(ShapesOptions().categories())  # the default set's
# Colours that may come close to the background's, shapes occluded down to MIN_VISIBLE_PIXELS,
# textured backgrounds, category ids that are not 1..C, circles as RLE and the rest as polygons.
HARD = ShapesOptions(min_colour_distance=24, min_visible_fraction=0.0, background="texture",
                     category_ids=(3, 7, 42), rle_shapes=("circle",))


def make_shapes(out_root, num_train, num_val, image_size=128, seed=0, options=ShapesOptions()):
    """Write `out_root/train` and `out_root/val`; returns the two annotation file paths."""
    # Independent streams for the two splits, both fixed by `seed`.
    train_seed, val_seed = np.random.SeedSequence(seed).generate_state(2)
    return (write_shapes_split(os.path.join(out_root, "train"), num_train, image_size,
                               int(train_seed), options),
            write_shapes_split(os.path.join(out_root, "val"), num_val, image_size,
                               int(val_seed), options))


def write_shapes_split(out_dir, num_images, image_size, seed, options=ShapesOptions()):
    """Write `num_images` images and their `annotations.json` under out_dir; returns the JSON path."""
    rng = np.random.default_rng(seed)
    # Textures draw from a stream of their own: a textured set holds the plain set's shapes.
    texture_rng = np.random.default_rng([seed, 1])
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    images, annotations = [], []
    for index in tqdm(range(num_images), desc=f"shapes {os.path.basename(out_dir)}",
                      disable=num_images < PROGRESS_MIN_IMAGES):
        image_id = index + 1
        file_name = f"images/{index:06d}.png"
        pixels, instances = _render_image(rng, texture_rng, image_size, options)
        Image.fromarray(pixels).save(os.path.join(out_dir, file_name), compress_level=1)
        images.append({"id": image_id, "file_name": file_name, "height": image_size, "width": image_size})
        for kind, visible in instances:
            rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
            polygons = (None if SHAPE_NAMES[kind - 1] in options.rle_shapes
                        else exact_polygons(visible))
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": options.category_ids[kind - 1],
                "segmentation": (polygons if polygons is not None else
                                 {"size": rle["size"], "counts": rle["counts"].decode("ascii")}),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "area": int(mask_utils.area(rle)),
                "iscrowd": 0,
            })
    path = os.path.join(out_dir, "annotations.json")
    info = {"description": "keras-maskrcnn synthetic shapes"}
    if options != ShapesOptions():  # the default set's file stays as it always was
        info["make_shapes_options"] = dataclasses.asdict(options)
    with open(path, "w") as f:
        json.dump({"info": info, "images": images, "annotations": annotations,
                   "categories": [dict(c, supercategory="shape") for c in options.categories()]}, f)
    return path


def _render_image(rng, texture_rng, image_size, options):
    """Draw one image → (uint8 [S, S, 3], list of (shape kind, bool [S, S] visible mask))."""
    background = rng.integers(0, 256, size=3)
    shapes = []
    for _ in range(int(rng.integers(1, MAX_SHAPES_PER_IMAGE + 1))):
        kind = int(rng.integers(1, len(SHAPE_NAMES) + 1))
        shapes.append((kind, _shape_mask(rng, image_size, kind),
                       _contrasting_colour(rng, background, options.min_colour_distance)))

    # Walk from the top layer down so a shape that is mostly hidden can be left out entirely:
    # dropping it then never leaves unannotated pixels in the image or changes other shapes.
    covered = np.zeros((image_size, image_size), bool)
    kept = []
    for kind, full, colour in reversed(shapes):
        visible = full & ~covered
        area = int(visible.sum())
        if area < options.min_visible_pixels or area < options.min_visible_fraction * full.sum():
            continue
        covered |= full
        kept.append((kind, visible, colour))
    kept.reverse()

    if options.background == "plain":
        pixels = np.empty((image_size, image_size, 3), np.uint8)
        pixels[:] = background
        for _, visible, colour in kept:
            pixels[visible] = colour
    else:
        canvas = background + _blotches(texture_rng, image_size)
        for _, visible, colour in kept:
            canvas[visible] = colour
        canvas += texture_rng.normal(0.0, NOISE_STDDEV, size=canvas.shape)
        pixels = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return pixels, [(kind, visible) for kind, visible, _ in kept]


def _blotches(rng, image_size):
    """Smooth random RGB offsets over the image: float [S, S, 3] with TEXTURE_STDDEV spread."""
    grid = rng.normal(0.0, TEXTURE_STDDEV, size=(TEXTURE_GRID, TEXTURE_GRID, 3)).astype(np.float32)
    return np.stack([np.asarray(Image.fromarray(grid[..., c], mode="F").resize(
        (image_size, image_size), Image.BILINEAR)) for c in range(3)], axis=-1).astype(np.float64)


def _contrasting_colour(rng, background, min_distance):
    """Random RGB colour at least `min_distance` (sum of absolute RGB differences) from the
    background; int [3]."""
    while True:
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - background).sum() >= min_distance:
            return colour


def _shape_mask(rng, image_size, kind):
    """Unoccluded mask of one randomly placed shape, wholly inside the image; bool [S, S]."""
    size = rng.uniform(*SIZE_RANGE) * image_size
    cx, cy = rng.uniform(size / 2, image_size - size / 2, size=2)
    canvas = Image.new("L", (image_size, image_size), 0)
    draw = ImageDraw.Draw(canvas)
    half = size / 2
    if kind == SQUARE:
        draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=1)
    elif kind == CIRCLE:
        draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=1)
    else:
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        draw.polygon(list(zip(cx + half * np.cos(angles), cy + half * np.sin(angles))), fill=1)
    return np.asarray(canvas, bool)

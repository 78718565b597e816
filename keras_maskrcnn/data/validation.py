"""Bad data in real datasets: find it once before training, then skip it or stop on it.

Shapes: none; this module works on a COCO file's entries (boxes stay COCO `[x, y, w, h]`).

`BadDataPolicy.scan` reads a `CocoDataset`'s entries and image headers and returns a cleaned
`CocoDataset`: with mode "skip" each bad image or annotation is left out and counted under a
kind of `KINDS`, with mode "error" the first one raises `DataError`. Nothing is repaired
silently: boxes running past the image are clipped, and counted ("box_clipped", the one
repair that never raises, as float rounding makes it common in real sets). Decoding every
image's pixels is slow, so by default only headers are read up front and the input pipeline
reports decode failures (truncated files) to the same policy while training.
"""

import collections
import concurrent.futures
import math
import os
import sys
import threading

from pycocotools import mask as mask_utils

from keras_maskrcnn.data.coco import CocoDataset, DataError
from keras_maskrcnn.data.images import decode_image, read_image_size

SKIP, ERROR = "skip", "error"
MODES = (SKIP, ERROR)
# Problem kinds → what they drop. `not_coco` is a whole-file problem and always raises.
KINDS = {
    "missing_image": "image file not found (image dropped)",
    "unreadable_image": "image header cannot be read (image dropped)",
    "image_too_large": "image over the pixel limit, --max-image-pixels (image dropped)",
    "truncated_image": "image pixels cannot be decoded (image dropped)",
    "image_size_mismatch": "image size differs from the annotated one (image dropped)",
    "bad_image_size": "zero, negative or missing image width/height (image dropped)",
    "duplicate_image_id": "image id used twice (second entry dropped)",
    "unknown_image": "annotation of an image id not in the file (annotation dropped)",
    "unknown_category": "annotation of a category id not in the file (annotation dropped)",
    "bad_box": "box missing or of zero or negative width/height (annotation dropped)",
    "box_outside_image": "box entirely outside its image (annotation dropped)",
    "box_clipped": "box running past its image (clipped to it)",
    "missing_segmentation": "annotation without a segmentation (annotation dropped)",
    "bad_polygon": "polygon with fewer than three points or an odd coordinate count "
                   "(polygon dropped; the annotation too when none is left)",
    "bad_rle": "RLE mask whose size disagrees with its image (annotation dropped)",
}
# Up-front header reads wait on the disk, not the CPU, so threads overlap them.
HEADER_READ_THREADS = 8
# A box past the image by less than this (pixels) is float rounding, not worth a count.
CLIP_TOLERANCE = 1e-2
EXAMPLES_PRINTED = 3
# Kinds that leave an image out (of training, or of an evaluation's AP).
IMAGE_KINDS = ("missing_image", "unreadable_image", "image_too_large", "truncated_image",
               "image_size_mismatch", "bad_image_size")


class BadDataPolicy:
    """What to do with bad images and annotations ("skip" or "error"), and what was found.

    Thread-safe: the tf.data pipeline reports decode failures from its worker threads.
    Attributes: `mode`; `messages`, kind → list of messages in the order found; `hints`,
    kind → what the user can do about it (said once, e.g. which option names the image
    folder); `dropped_images`, image id → message of each image left out; `raised`, the
    DataError raised in mode "error" (None before), which a caller seeing it wrapped by
    TensorFlow can re-raise.
    """

    def __init__(self, mode=SKIP):
        if mode not in MODES:
            raise ValueError(f"unknown bad-data mode {mode!r}; choose one of {MODES}")
        self.mode = mode
        self.messages = collections.defaultdict(list)
        self.hints = {}
        self.dropped_images = {}
        self.raised = None
        self._seen = set()
        self._lock = threading.Lock()

    def report(self, kind, message, image_id=None, hint=None):
        """Count one problem, or raise it as DataError in mode "error" (except "box_clipped").

        `image_id` is the image left out by a kind of IMAGE_KINDS; `hint` what the user can do,
        kept once per kind for `summary` and added to the raised message. A message already
        reported (the same image failing again next epoch) is not recounted. Returns True when
        the problem is new.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown bad-data kind {kind!r}")
        with self._lock:
            if message in self._seen:
                return False
            self._seen.add(message)
            self.messages[kind].append(message)
            if hint is not None:
                self.hints.setdefault(kind, hint)
            if image_id is not None and kind in IMAGE_KINDS:
                self.dropped_images.setdefault(image_id, message)
        if self.mode == ERROR and kind != "box_clipped":
            self.raised = DataError(message if hint is None else f"{message}; {hint}", kind)
            raise self.raised
        return True

    @property
    def counts(self):
        """kind → number of problems found, for the kinds found at least once."""
        with self._lock:
            return {kind: len(found) for kind, found in self.messages.items() if found}

    def summary(self, title):
        """Lines for a log: one per kind with its count and first messages → str."""
        counts = self.counts
        if not counts:
            return f"{title}: no bad data found"
        lines = [f"{title}: {sum(counts.values())} problems (--on-bad-data {self.mode})"]
        for kind, count in counts.items():
            lines.append(f"  {count:6d} {kind}: {KINDS[kind]}")
            lines.extend(f"         e.g. {message}"
                         for message in self.messages[kind][:EXAMPLES_PRINTED])
            if kind in self.hints:
                lines.append(f"         {self.hints[kind]}")
        return "\n".join(lines)

    def to_dict(self):
        """{"mode", "counts": {kind: n}, "messages": {kind: [...]}, "hints": {kind: str},
        "dropped_images": [{"image_id", "problem"}]} for a JSON report."""
        with self._lock:
            messages = {kind: list(found) for kind, found in self.messages.items() if found}
            dropped = [{"image_id": image_id, "problem": message}
                       for image_id, message in self.dropped_images.items()]
            hints = dict(self.hints)
        return {"mode": self.mode, "counts": {k: len(v) for k, v in messages.items()},
                "messages": messages, "hints": hints, "dropped_images": dropped}

    def scan(self, dataset, check_pixels=False, images_option="--images"):
        """Check every image and annotation of `dataset` once → a cleaned `CocoDataset`.

        Reads each image's header (size and EXIF orientation); with `check_pixels` also
        decodes the pixels, which finds truncated files up front at the cost of a full read.
        Images without annotations stay as negatives. A missing `iscrowd` is taken as 0 and a
        missing `area` is computed from the mask, as COCO evaluation needs both. The input
        `dataset` is not modified. Missing image files are reported with a hint saying where
        they were looked for and that `images_option` names the image folder.
        """
        data = dataset.coco.dataset
        name = dataset.annotation_file
        images = self._check_image_entries(data["images"], name)
        paths = [os.path.join(dataset.image_dir, image["file_name"]) for image in images]
        with concurrent.futures.ThreadPoolExecutor(HEADER_READ_THREADS) as pool:
            outcomes = list(pool.map(
                lambda path: _image_size(path, check_pixels, dataset.max_image_pixels), paths))
        kept_images = {}
        for image, path, (size, error) in zip(images, paths, outcomes):
            if error is not None:
                hint = (image_folder_hint(dataset, images_option)
                        if error.kind == "missing_image" else None)
                self.report(error.kind, f"{name}: image {image['id']}: {error}", image["id"],
                            hint)
                continue
            if size != (image["height"], image["width"]):
                self.report("image_size_mismatch",
                            f"{name}: image {image['id']}: {path} is {size[1]}x{size[0]} (w x h) "
                            f"but the annotations say {image['width']}x{image['height']}",
                            image["id"])
                continue
            kept_images[image["id"]] = image
        category_ids = {category["id"] for category in data["categories"]}
        known_image_ids = {image["id"] for image in data["images"]}
        annotations = []
        for annotation in data["annotations"]:
            where = f"{name}: annotation {annotation['id']} (image {annotation['image_id']})"
            if annotation["image_id"] not in known_image_ids:
                self.report("unknown_image", f"{where}: image id {annotation['image_id']} is not "
                            f"among the file's images")
                continue
            if annotation["image_id"] not in kept_images:
                continue  # its image was dropped and reported above
            if annotation["category_id"] not in category_ids:
                self.report("unknown_category", f"{where}: category id {annotation['category_id']} "
                            f"is not among the file's categories")
                continue
            cleaned = self._check_annotation(annotation, kept_images[annotation["image_id"]], where)
            if cleaned is not None:
                annotations.append(cleaned)
        kept = dict(data, images=list(kept_images.values()), annotations=annotations)
        return CocoDataset(dataset.annotation_file, dataset.image_dir, data=kept,
                           max_image_pixels=dataset.max_image_pixels)

    def _check_image_entries(self, images, name):
        """Image entries with a positive integer size and an id not seen before → list."""
        valid, seen = [], set()
        for image in images:
            where = f"{name}: image {image['id']} ({image['file_name']})"
            if image["id"] in seen:
                self.report("duplicate_image_id", f"{where}: image id {image['id']} used again")
                continue
            seen.add(image["id"])
            height, width = image.get("height"), image.get("width")
            if not (_is_number(height) and _is_number(width) and height > 0 and width > 0
                    and height == int(height) and width == int(width)):
                self.report("bad_image_size", f"{where}: width {width!r}, height {height!r}; "
                            f"both must be positive whole numbers", image["id"])
                continue
            valid.append(image)
        return valid

    def _check_annotation(self, annotation, image, where):
        """A copy of `annotation` with its box clipped and bad polygons removed, or None."""
        height, width = image["height"], image["width"]
        bbox = annotation.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(map(_is_number, bbox))):
            self.report("bad_box", f"{where}: bbox {bbox!r} is not four numbers [x, y, w, h]")
            return None
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            self.report("bad_box", f"{where}: bbox {list(bbox)} has zero or negative width/height")
            return None
        x1, y1 = min(max(x, 0), width), min(max(y, 0), height)
        x2, y2 = min(max(x + w, 0), width), min(max(y + h, 0), height)
        if x2 <= x1 or y2 <= y1:
            self.report("box_outside_image", f"{where}: bbox {list(bbox)} lies outside the "
                        f"{width}x{height} image")
            return None
        clipped = [x1, y1, x2 - x1, y2 - y1]
        if max(abs(a - b) for a, b in zip(clipped, bbox)) > CLIP_TOLERANCE:
            self.report("box_clipped", f"{where}: bbox {list(bbox)} clipped to {clipped} "
                        f"inside the {width}x{height} image")
        segmentation = self._check_segmentation(annotation.get("segmentation"), height, width, where)
        if segmentation is None:
            return None
        cleaned = dict(annotation, bbox=clipped, segmentation=segmentation,
                       iscrowd=int(bool(annotation.get("iscrowd", 0))))
        if not _is_number(annotation.get("area")):
            cleaned["area"] = float(mask_utils.area(_to_rle(segmentation, height, width)))
        return cleaned

    def _check_segmentation(self, segmentation, height, width, where):
        """The usable part of a polygon list or RLE dict, or None when nothing is usable."""
        if not segmentation:
            self.report("missing_segmentation", f"{where}: no segmentation")
            return None
        if isinstance(segmentation, dict):
            size, counts = segmentation.get("size"), segmentation.get("counts")
            if list(size or ()) != [height, width]:
                self.report("bad_rle", f"{where}: RLE size {size} (h, w) differs from the image's "
                            f"{[height, width]}")
                return None
            if isinstance(counts, list) and sum(counts) != height * width:
                self.report("bad_rle", f"{where}: uncompressed RLE counts cover {sum(counts)} "
                            f"pixels, the {height}x{width} image has {height * width}")
                return None
            if not isinstance(counts, (list, str, bytes)):
                self.report("bad_rle", f"{where}: RLE counts are a {type(counts).__name__}")
                return None
            return segmentation
        if not isinstance(segmentation, list):
            self.report("missing_segmentation", f"{where}: segmentation is a "
                        f"{type(segmentation).__name__}, neither polygons nor RLE")
            return None
        polygons = []
        for index, polygon in enumerate(segmentation):
            # pycocotools would read a 4-number polygon as a box: drop it rather than misread it.
            if (not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2
                    or not all(map(_is_number, polygon))):
                count = len(polygon) if isinstance(polygon, list) else polygon
                self.report("bad_polygon", f"{where}: polygon {index} has {count} coordinates; "
                            f"a polygon needs at least three x, y points")
                continue
            polygons.append(polygon)
        return polygons or None


def report_decode_failure(policy, error, image_id=None):
    """Report a `DataError` met while reading image `image_id` (a truncated file), saying so on
    stderr once.

    Raises it in mode "error"; in mode "skip" the caller drops the image.
    """
    if policy.report(error.kind or "truncated_image", str(error), image_id):
        print(f"skipping bad image: {error}", file=sys.stderr, flush=True)


def _to_rle(segmentation, height, width):
    """One compressed RLE of a checked polygon list or RLE dict, as pycocotools' annToRLE."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def image_folder_hint(dataset, images_option):
    """Where `dataset`'s image files are looked for and which option names the folder → str."""
    default = dataset.image_dir == os.path.dirname(os.path.abspath(dataset.annotation_file))
    return (f"image files are looked for under {dataset.image_dir}"
            + (", the annotation file's folder" if default else "")
            + f"; {images_option} DIR names the image folder")


def _image_size(path, check_pixels, max_pixels):
    """((height, width), None), or (None, the DataError met); decodes only with check_pixels."""
    try:
        return (decode_image(path, max_pixels).shape[:2] if check_pixels
                else read_image_size(path, max_pixels)), None
    except DataError as error:
        return None, error


def _is_number(value):
    """True for finite ints and floats (JSON numbers), False for bools, strings and None."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

"""COCO-format dataset reading through pycocotools.

Shapes: H, W image size; N annotations of one image; C foreground classes.

Labels 1..C follow the dataset's category ids in sorted order (label 0 is background), so
non-contiguous ids such as 3, 7, 42 become labels 1, 2, 3. Boxes are returned as
`[y1, x1, y2, x2]` pixels of the original image; COCO's `[x, y, w, h]` stays inside this module.
"""

import contextlib
import io
import json
import os

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from keras_maskrcnn.config import DEFAULT_MAX_IMAGE_PIXELS
from keras_maskrcnn.data.errors import DataError
from keras_maskrcnn.data.images import decode_image

# Keys pycocotools needs to index a file; without them it is not COCO (DataError, any policy).
_REQUIRED_KEYS = {"images": ("id", "file_name"), "categories": ("id", "name"),
                  "annotations": ("id", "image_id", "category_id")}


def load_coco_json(annotation_file):
    """The parsed annotation file, checked to have COCO's structure → dict.

    Raises DataError (kind "not_coco") naming the file when it is not JSON or lacks the lists
    and keys pycocotools indexes; entry-level problems are left to `data.validation`.
    """
    try:
        with open(annotation_file) as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{annotation_file}: not a COCO annotation file (not JSON: {error})",
                        "not_coco") from error

    def not_coco(problem):
        return DataError(f"{annotation_file}: not a COCO annotation file ({problem})", "not_coco")

    if not isinstance(data, dict):
        raise not_coco(f"the top level is a {type(data).__name__}, not an object")
    # A file without annotations (COCO's image-info files) is a set of negatives.
    data.setdefault("annotations", [])
    for section, keys in _REQUIRED_KEYS.items():
        entries = data.get(section)
        if not isinstance(entries, list):
            raise not_coco(f"no {section!r} list")
        for index, entry in enumerate(entries):
            missing = [key for key in keys if not isinstance(entry, dict) or key not in entry]
            if missing:
                raise not_coco(f"{section}[{index}] has no {missing[0]!r}")
    return data


class CocoDataset:
    """Images and instance annotations of one COCO annotation file.

    Args:
      annotation_file: path of the COCO JSON.
      image_dir: folder the images' `file_name`s are relative to; defaults to the JSON's folder.
      data: the file's contents when already read (and cleaned, see `data.validation`).
      max_image_pixels: images over this many pixels are refused before decoding
        (`data.images`).
    """

    def __init__(self, annotation_file, image_dir=None, data=None,
                 max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
        self.annotation_file = annotation_file
        self.max_image_pixels = max_image_pixels
        if image_dir is None:
            image_dir = os.path.dirname(os.path.abspath(annotation_file))
        self.image_dir = image_dir
        self.coco = COCO()
        self.coco.dataset = load_coco_json(annotation_file) if data is None else data
        # pycocotools prints progress to stdout, which clutters training logs.
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()
        self.category_ids = sorted(self.coco.getCatIds())
        self.class_names = [self.coco.cats[i]["name"] for i in self.category_ids]
        self.category_id_to_label = {cat_id: label for label, cat_id in enumerate(self.category_ids, 1)}
        self.image_ids = [image["id"] for image in self.coco.dataset["images"]]

    @property
    def num_classes(self):
        """Number of foreground classes C."""
        return len(self.category_ids)

    def label_to_category_id(self, labels):
        """Map labels 1..C (any shape) to the dataset's category ids; int64, same shape."""
        labels = np.asarray(labels)
        if labels.size and (labels.min() < 1 or labels.max() > self.num_classes):
            raise ValueError(f"labels must lie in 1..{self.num_classes}, got {labels.min()}..{labels.max()}")
        return np.asarray(self.category_ids, np.int64)[labels.astype(np.int64) - 1]

    def image_info(self, image_id):
        """Dict with `file_name`, `height`, `width` and the full `path` of one image."""
        image = self.coco.imgs[image_id]
        return {"file_name": image["file_name"], "height": image["height"], "width": image["width"],
                "path": os.path.join(self.image_dir, image["file_name"])}

    def load_image(self, image_id):
        """RGB pixels of one image, EXIF orientation applied; uint8 [H, W, 3].

        Raises DataError naming the file (`data.images.decode_image`)."""
        info = self.image_info(image_id)
        path = info["path"]
        pixels = decode_image(path, self.max_image_pixels)
        if pixels.shape[:2] != (info["height"], info["width"]):
            # Masks are decoded at the annotated size, so a mismatch would misalign every target.
            raise DataError(f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]} (w x h) but the "
                            f"annotations say {info['width']}x{info['height']}", "image_size_mismatch")
        return pixels

    def load_annotations(self, image_id):
        """Instance annotations of one image.

        Returns a dict: `boxes` float32 [N, 4] (y1 x1 y2 x2 pixels, clipped to the image),
        `labels` int32 [N] in 1..C, `masks` uint8 [N, H, W] (0/1), `is_crowd` bool [N].
        """
        info = self.image_info(image_id)
        height, width = info["height"], info["width"]
        annotations = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id]))
        boxes = np.zeros((len(annotations), 4), np.float32)
        masks = np.zeros((len(annotations), height, width), np.uint8)
        for i, annotation in enumerate(annotations):
            x, y, w, h = annotation["bbox"]
            boxes[i] = [y, x, y + h, x + w]
            if not annotation.get("segmentation"):
                raise DataError(f"{self.annotation_file}: annotation {annotation.get('id')} "
                                f"of image {image_id} has no segmentation", "missing_segmentation")
            masks[i] = mask_utils.decode(self.coco.annToRLE(annotation))
        boxes = np.clip(boxes, 0, [height, width, height, width]).astype(np.float32)
        return {
            "boxes": boxes,
            "labels": np.array([self.category_id_to_label[a["category_id"]] for a in annotations], np.int32),
            "masks": masks,
            "is_crowd": np.array([bool(a.get("iscrowd", 0)) for a in annotations], bool),
        }

"""COCO-format dataset reading through pycocotools.

Shapes: H, W image size; N annotations of one image; C foreground classes.

Labels 1..C follow the dataset's category ids in sorted order (label 0 is background), so
non-contiguous ids such as 3, 7, 42 become labels 1, 2, 3. Boxes are returned as
`[y1, x1, y2, x2]` pixels of the original image; COCO's `[x, y, w, h]` stays inside this module.
"""

import contextlib
import io
import os

import numpy as np
from PIL import Image, ImageOps
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO


class DataError(ValueError):
    """An image or annotation that cannot be read; the message names the file and the problem."""


def read_image(path):
    """RGB pixels of an image file, EXIF orientation applied; uint8 [H, W, 3].

    Raises DataError naming the file when it is missing or cannot be decoded.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: cannot read image ({error})") from error
    return np.asarray(image, np.uint8)


class CocoDataset:
    """Images and instance annotations of one COCO annotation file.

    Args:
      annotation_file: path of the COCO JSON.
      image_dir: folder the images' `file_name`s are relative to; defaults to the JSON's folder.
    """

    def __init__(self, annotation_file, image_dir=None):
        self.annotation_file = annotation_file
        if image_dir is None:
            image_dir = os.path.dirname(os.path.abspath(annotation_file))
        self.image_dir = image_dir
        # pycocotools prints progress to stdout, which clutters training logs.
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(annotation_file)
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
        """RGB pixels of one image, EXIF orientation applied; uint8 [H, W, 3]."""
        info = self.image_info(image_id)
        path = info["path"]
        pixels = read_image(path)
        if pixels.shape[:2] != (info["height"], info["width"]):
            # Masks are decoded at the annotated size, so a mismatch would misalign every target.
            raise DataError(f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]} (w x h) but the "
                            f"annotations say {info['width']}x{info['height']}")
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
                                f"of image {image_id} has no segmentation")
            masks[i] = mask_utils.decode(self.coco.annToRLE(annotation))
        boxes = np.clip(boxes, 0, [height, width, height, width]).astype(np.float32)
        return {
            "boxes": boxes,
            "labels": np.array([self.category_id_to_label[a["category_id"]] for a in annotations], np.int32),
            "masks": masks,
            "is_crowd": np.array([bool(a.get("iscrowd", 0)) for a in annotations], bool),
        }

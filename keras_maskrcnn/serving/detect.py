"""The answer of `:detect`: one image's detections, kept by score, with masks pasted into the
image the model's way (`Predictor.add_full_masks`) and encoded (`masks.MASK_FORMATS`).

Shapes: H×W the image, K detections, M mask size.
"""

import time

import numpy as np

from keras_maskrcnn import postprocess
from keras_maskrcnn.serving import masks
from keras_maskrcnn.serving.tf_serving_api import INVALID_ARGUMENT, ServingError

DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_MASK_FORMAT = "rle"
BOX_DECIMALS = 2
SCORE_DECIMALS = 4
PASTE_PIXELS = 1 << 26  # pasted mask pixels held at once (64 MB of booleans)


class DeadlinePassed(Exception):
    """The request ran out of time while its masks were being encoded."""


def parse_query(query):
    """The query of a `:detect` request (a mapping of str) → (score_threshold,
    max_detections or None, mask_format); raises ServingError (400) naming a bad parameter."""
    unknown = set(query) - {"score_threshold", "max_detections", "mask_format"}
    if unknown:
        raise ServingError(INVALID_ARGUMENT, f"unknown query parameter {sorted(unknown)[0]!r}; "
                           f":detect takes score_threshold, max_detections and mask_format")
    try:
        score_threshold = float(query.get("score_threshold", DEFAULT_SCORE_THRESHOLD))
        if not 0 <= score_threshold <= 1:
            raise ValueError
    except ValueError:
        raise ServingError(INVALID_ARGUMENT, f"score_threshold must be a number in [0, 1], got "
                           f"{query['score_threshold']!r}") from None
    max_detections = query.get("max_detections")
    if max_detections is not None:
        if not max_detections.isdigit():
            raise ServingError(INVALID_ARGUMENT, f"max_detections must be a whole number, got "
                               f"{max_detections!r}")
        max_detections = int(max_detections)
    mask_format = query.get("mask_format", DEFAULT_MASK_FORMAT)
    if mask_format not in masks.MASK_FORMATS:
        raise ServingError(INVALID_ARGUMENT, f"mask_format must be one of "
                           f"{'|'.join(masks.MASK_FORMATS)}, got {mask_format!r}")
    return score_threshold, max_detections, mask_format


def kept(detections, score_threshold, max_detections):
    """Indices of the detections a :detect answer keeps, best first → int array."""
    keep = np.flatnonzero(detections["scores"] >= score_threshold)
    return keep[np.argsort(-detections["scores"][keep], kind="stable")][:max_detections]


def pasted_pixels(detections, image_hw, score_threshold, max_detections, mask_format):
    """How many mask pixels `describe` pastes for this answer (0 for formats it does not
    paste): a measure of its cost."""
    if mask_format not in masks.PASTED_ENCODERS:
        return 0
    return len(kept(detections, score_threshold, max_detections)) * int(image_hw[0]) * int(image_hw[1])


def describe(detections, image_hw, model, score_threshold, max_detections, mask_format,
             deadline=None):
    """One image's detections dict (`postprocess.unpack_detections`, boxes y1 x1 y2 x2) → the
    list of `:detect` detections, best first: {"box": [x1, y1, x2, y2], "score",
    "category_id", "label", "mask"} ("mask" absent for mask_format "none").

    Masks are pasted a chunk at a time (at most PASTE_PIXELS pixels); past `deadline`
    (time.monotonic()) DeadlinePassed is raised between two chunks.
    """
    keep = kept(detections, score_threshold, max_detections)
    method = model.config.detection.paste_method
    encode = masks.PASTED_ENCODERS.get(mask_format)
    # A chunk's masks are pasted together (`postprocess` groups them into as few calls as it
    # can); chunks bound the memory to PASTE_PIXELS booleans.
    chunk = max(1, PASTE_PIXELS // max(1, image_hw[0] * image_hw[1]))
    answer = []
    for start in range(0, len(keep), chunk):
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlinePassed
        indices = keep[start:start + chunk]
        pasted = (postprocess.paste_masks(detections["masks"][indices],
                                          detections["boxes"][indices], image_hw, method=method)
                  if encode is not None else [None] * len(indices))
        for index, full_mask in zip(indices, pasted):
            y1, x1, y2, x2 = (round(float(value), BOX_DECIMALS)
                              for value in detections["boxes"][index])
            category_id = int(detections["category_ids"][index])
            found = {"box": [x1, y1, x2, y2],
                     "score": round(float(detections["scores"][index]), SCORE_DECIMALS),
                     "category_id": category_id,
                     "label": (str(category_id) if model.class_names is None
                               else model.class_names.get(category_id, str(category_id)))}
            if encode is not None:
                found["mask"] = encode(full_mask)
            elif mask_format == "box":
                found["mask"] = masks.encode_box(detections["masks"][index])
            answer.append(found)
    return answer

"""Host-side post-processing: paste one image's masks (numpy in, numpy out), build an
instance map, cut batched outputs into per-image detections.

Shapes: B batch, K detections, M mask resolution (28), H, W original image size.
Pasting runs `ops.paste` (where the paste methods are defined) on numpy arrays.
"""

import numpy as np

from keras_maskrcnn.ops import paste
from keras_maskrcnn.ops.paste import MASK_THRESHOLD

ONE_CALL_PIXELS = 1 << 20  # window pixels pasted in one call at most, whatever the box sizes


def _like_sized(boxes):
    """Indices of the detections in groups whose boxes' longer sides are within a factor 2 of
    each other → list of int arrays. Pasted together, their windows stay near their size."""
    longer_sides = np.maximum(np.max(boxes[:, 2:] - boxes[:, :2], axis=1), 1.0)
    size_class = np.ceil(np.log2(longer_sides))
    return [np.flatnonzero(size_class == value) for value in np.unique(size_class)]


def _paste_groups(boxes, height, width):
    """The groups of detections pasted in one call each: all of them when their windows hold
    at most ONE_CALL_PIXELS pixels whatever their sizes (a call's fixed cost is more than
    pasting a few masks into a small image), else `_like_sized` groups."""
    if len(boxes) == 0:
        return []
    if len(boxes) * height * width <= ONE_CALL_PIXELS:
        return [np.arange(len(boxes))]
    return _like_sized(boxes)


def _paste(masks, boxes, image_hw, method, threshold):
    masks = np.asarray(masks, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    height, width = int(image_hw[0]), int(image_hw[1])
    # Filled as [K, W, H] and returned transposed: each mask column-major, the order COCO's RLE
    # reads, so encoding one copies nothing (a 480 × 640 copy costs more than its encoding).
    columns = np.zeros((len(boxes), width, height), np.float32 if threshold is None else bool)
    for group in _paste_groups(boxes, height, width):
        windows, extents = paste.pasted_windows(masks[group], boxes[group], height, width, method,
                                                arrays="numpy")
        if threshold is not None:
            windows = windows >= threshold
        for k, window, (top, bottom, left, right) in zip(group, windows, extents):
            columns[k, left:right, top:bottom] = window[:bottom - top, :right - left].T
    return columns.transpose(0, 2, 1)


def paste_mask_probabilities(masks, boxes, image_hw, method="centres"):
    """Paste one image's box-frame mask probabilities into it (`ops.paste`).

    Args:
      masks: float [K, M, M] probabilities in the box frame.
      boxes: float [K, 4] `[y1, x1, y2, x2]` original-image pixels.
      image_hw: (H, W).
      method: one of `config.PASTE_METHODS`; a model's is its `detection.paste_method`.
    Returns:
      float32 [K, H, W]; 0 outside the pixels the method assigns to the box. Each [H, W]
      mask is column-major (Fortran-contiguous), as pycocotools' RLE encoder takes it.
    """
    return _paste(masks, boxes, image_hw, method, threshold=None)


def paste_masks(masks, boxes, image_hw, threshold=MASK_THRESHOLD, method="centres"):
    """`paste_mask_probabilities(...) >= threshold` → bool [K, H, W]."""
    return _paste(masks, boxes, image_hw, method, threshold)


def instance_map(mask_probs, scores, threshold=MASK_THRESHOLD):
    """Combine full-image masks into one instance-id map.

    A pixel goes to the instance with the highest score × probability among those whose
    probability is >= threshold; bool masks count as probability 1.
    Args:
      mask_probs: float or bool [K, H, W] (e.g. from `paste_mask_probabilities`).
      scores: float [K].
    Returns:
      int32 [H, W]: 0 background, i + 1 for instance i.
    """
    mask_probs = np.asarray(mask_probs)
    scores = np.asarray(scores, np.float32)
    ids = np.zeros(mask_probs.shape[1:], np.int32)
    # -inf so that a zero-score instance still beats background where its mask is on.
    best = np.full(mask_probs.shape[1:], -np.inf, np.float32)
    for k in range(mask_probs.shape[0]):
        probs = mask_probs[k].astype(np.float32)
        keyed = scores[k] * probs
        wins = (probs >= threshold) & (keyed > best)
        ids[wins] = k + 1
        best[wins] = keyed[wins]
    return ids


def unpack_detections(outputs, index):
    """Cut image `index` of batched model outputs to its `num_detections`.

    Args:
      outputs: dict with `detection_boxes` [B, K, 4], `detection_scores` [B, K],
        `detection_classes` [B, K], `num_detections` [B], `detection_masks` [B, K, M, M].
    Returns:
      dict with `boxes` float32 [n, 4], `scores` float32 [n], `category_ids` int64 [n],
      `masks` float32 [n, M, M].
    """
    num = int(np.asarray(outputs["num_detections"])[index])
    return {
        "boxes": np.asarray(outputs["detection_boxes"])[index, :num].astype(np.float32),
        "scores": np.asarray(outputs["detection_scores"])[index, :num].astype(np.float32),
        # Classes may arrive as float from exported graphs; round before casting.
        "category_ids": np.rint(np.asarray(outputs["detection_classes"])[index, :num]).astype(np.int64),
        "masks": np.asarray(outputs["detection_masks"])[index, :num].astype(np.float32),
    }

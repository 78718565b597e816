"""Paste box-frame masks into the image: the one implementation of each paste method.

Shapes: `...` any leading dimensions (e.g. B images), K detections, M mask resolution,
H×W the image, n pixels along one axis.

Boxes are `[y1, x1, y2, x2]` in continuous image pixels: pixel (r, c) covers
`[r, r+1) × [c, c+1)`, so its centre is `(r + 0.5, c + 0.5)`. The methods (`config.PASTE_METHODS`):

- "centres": mask cell (i, j) covers the i-th / j-th 1/M slice of the box, so its centre is
  at `y1 + (i + 0.5) · h / M`, `x1 + (j + 0.5) · w / M`; the pixels whose centre lies in the box
  are sampled bilinearly from the cell grid, zero-padded by one cell.
- "torchvision": torchvision's `paste_masks_in_image`, for comparing converted models with the
  original. The mask gets one cell of zero padding and its box grows by (M+2)/M about its
  centre (in float32), is truncated to integers and covers pixels x1..x2 inclusive; the padded
  mask is resized to that many pixels as torch's bilinear resize (align_corners=False) does.

Every detection is interpolated in a window as large as the largest box (two batched matrix
products for all detections, as bilinear interpolation is separable), then each window is
placed in its image. On the host, `postprocess` pastes like-sized detections together so
that one large box does not make every window large.
"""

import tensorflow as tf

from keras_maskrcnn.config import PASTE_METHODS

MASK_THRESHOLD = 0.5


def _centres_pixels(start, end, num_cells):
    """Pixels whose centre lies in [start, end) → first, stop int32 [..., K] (not clipped)."""
    del num_cells  # the box itself decides
    return tf.cast(tf.math.ceil(start - 0.5), tf.int32), tf.cast(tf.math.ceil(end - 0.5), tf.int32)


def _centres_weights(start, end, num_cells, pixels):
    """Bilinear weights from the zero-padded cell grid to pixel centres.

    Args: start, end float32 [..., K] box edges along one axis; pixels int32 [..., K, n].
    Returns: float32 [..., K, n, M + 2], meaningful for the pixels inside the box.
    """
    centres = tf.cast(pixels, tf.float32) + 0.5
    start, end = start[..., None], end[..., None]
    # Padding detections have empty boxes; a safe length keeps their (unused) weights finite.
    length = tf.maximum(end - start, 1e-6)
    grid_coords = (centres - start) * (num_cells / length) - 0.5
    lower = tf.floor(grid_coords)
    upper_weight = (grid_coords - lower)[..., None]
    # + 1 for the padding cell; one_hot of an index off the padded grid is all zeros.
    lower = tf.cast(tf.clip_by_value(lower, -2.0, num_cells + 1.0), tf.int32) + 1
    return (tf.one_hot(lower, num_cells + 2) * (1.0 - upper_weight)
            + tf.one_hot(lower + 1, num_cells + 2) * upper_weight)


def _torchvision_pixels(start, end, num_cells):
    """The pixels torchvision pastes into: first, stop int32 [..., K] (not clipped)."""
    # The box grows by (M + 2) / M about its centre, in float32, and is truncated to integers.
    centre, half = (start + end) * 0.5, (end - start) * 0.5 * ((num_cells + 2) / num_cells)
    return tf.cast(centre - half, tf.int32), tf.cast(centre + half, tf.int32) + 1


def _torchvision_weights(start, end, num_cells, pixels):
    """torch's bilinear resize of the zero-padded M + 2 cells to the grown box's pixels.

    Args: start, end float32 [..., K] box edges along one axis; pixels int32 [..., K, n].
    Returns: float32 [..., K, n, M + 2], meaningful for the pixels inside the grown box.
    """
    padded_cells = num_cells + 2
    first, stop = _torchvision_pixels(start, end, num_cells)
    size = tf.cast(tf.maximum(stop - first, 1), tf.float32)[..., None]
    in_box = tf.cast(pixels - first[..., None], tf.float32)  # pixel index within the box
    source = tf.maximum((in_box + 0.5) * (padded_cells / size) - 0.5, 0.0)
    lower = tf.floor(source)
    upper_weight = (source - lower)[..., None]
    lower = tf.cast(tf.clip_by_value(lower, 0.0, padded_cells - 1.0), tf.int32)
    # At the last cell lower == upper: both weights land on it.
    upper = tf.minimum(lower + 1, padded_cells - 1)
    return (tf.one_hot(lower, padded_cells) * (1.0 - upper_weight)
            + tf.one_hot(upper, padded_cells) * upper_weight)


_METHODS = {"centres": (_centres_pixels, _centres_weights),
            "torchvision": (_torchvision_pixels, _torchvision_weights)}


def _window_weights(start, end, num_cells, size, method):
    """Interpolation weights along one axis, for windows as long as the longest box.

    Args: start, end float32 [..., K]; size int32 scalar, the image's length along the axis.
    Returns: weights float32 [..., K, n, M + 2]; first, stop int32 [..., K], the pixels the
      method gives the box, clipped to the image. Window k starts at first[k]; its pixels from
      stop[k] on are not the box's.
    """
    box_pixels, weights = _METHODS[method]
    first, stop = box_pixels(start, end, num_cells)
    first, stop = tf.clip_by_value(first, 0, size), tf.clip_by_value(stop, 0, size)
    length = tf.maximum(tf.reduce_max(stop - first), 0)
    pixels = first[..., None] + tf.range(length)
    return weights(start, end, num_cells, pixels), first, tf.maximum(stop, first)


def pasted_windows(masks, boxes, height, width, method="centres"):
    """The pasted mask probabilities in one h×w window of the image per detection, h and w the
    largest box's pixels.

    Args: as `paste_mask_probabilities`.
    Returns: windows float32 [..., K, h, w]; extents int32 [..., K, 4], each box's pixels
      `(top, bottom, left, right)` clipped to the image. Image pixels `[top:bottom, left:right]`
      are `window[:bottom - top, :right - left]`, and all of the box's pixels.
    """
    if method not in _METHODS:
        raise ValueError(f"unknown paste method {method!r}; choose one of {PASTE_METHODS}")
    masks = tf.convert_to_tensor(masks, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    num_cells = masks.shape[-1]
    padded = tf.pad(masks, [[0, 0]] * (masks.shape.rank - 2) + [[1, 1], [1, 1]])
    row_weights, top, bottom = _window_weights(boxes[..., 0], boxes[..., 2], num_cells, height, method)
    col_weights, left, right = _window_weights(boxes[..., 1], boxes[..., 3], num_cells, width, method)
    windows = tf.matmul(tf.matmul(row_weights, padded), col_weights, transpose_b=True)
    return windows, tf.stack([top, bottom, left, right], axis=-1)


def _place(windows, extents, height, width):
    """Windows [..., K, h, w] into zeros [..., K, height, width] at their extents [..., K, 4]."""
    shape = tf.shape(windows)
    # The count is given, not inferred: with no pixels in the windows -1 could not be.
    count = tf.reduce_prod(shape[:-2])
    flat = (tf.reshape(windows, [count, shape[-2], shape[-1]]), tf.reshape(extents, [count, 4]))

    def place(window, extent):
        top, bottom, left, right = tf.unstack(extent)
        return tf.pad(window[:bottom - top, :right - left],
                      [[top, height - bottom], [left, width - right]])

    def place_each():
        return tf.map_fn(lambda item: place(*item), flat, fn_output_signature=windows.dtype)

    # map_fn cannot stack zero results of a shape unknown when tracing.
    placed = tf.cond(count > 0, place_each, lambda: tf.zeros([0, height, width], windows.dtype))
    return tf.reshape(placed, tf.concat([shape[:-2], [height, width]], axis=0))


def paste_mask_probabilities(masks, boxes, height, width, method="centres"):
    """Paste box-frame mask probabilities into the image.

    Args:
      masks: float [..., K, M, M] probabilities in the box frame.
      boxes: float [..., K, 4] `[y1, x1, y2, x2]` image pixels.
      height, width: int32 scalars, the image size.
      method: one of PASTE_METHODS (see the module docstring).
    Returns:
      float32 [..., K, height, width]; 0 outside the pixels the method assigns to the box.
    """
    windows, extents = pasted_windows(masks, boxes, height, width, method)
    return _place(windows, extents, height, width)


def paste_masks(masks, boxes, height, width, method="centres", threshold=MASK_THRESHOLD):
    """`paste_mask_probabilities(...) >= threshold`, thresholded before the windows are placed.

    Returns: bool [..., K, height, width].
    """
    windows, extents = pasted_windows(masks, boxes, height, width, method)
    return _place(windows >= threshold, extents, height, width)

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

The methods are written once, over `ARRAYS[name]`, the few array functions they need:
`pasted_windows(..., arrays="tensorflow")` builds TensorFlow ops (the SavedModel graph) and
`arrays="numpy"` computes in numpy on the host, where a TensorFlow call costs more than the
paste itself (3 masks into a 128 × 128 image after a model-sized product: 1.9 against 0.7 ms
on an Intel Xeon, `bench/bench_paste.py`). Both run the same float32 arithmetic; only the
matrix products' sums may round differently.
"""

import types

import numpy as np
import tensorflow as tf

from keras_maskrcnn.config import PASTE_METHODS

MASK_THRESHOLD = 0.5

# The array functions of the paste methods, by name: TensorFlow's and numpy's, same semantics
# (float32 in, casts truncating, one_hot all zeros off the grid).
ARRAYS = {
    "tensorflow": types.SimpleNamespace(
        asarray=lambda value: tf.convert_to_tensor(value, tf.float32),
        to_int=lambda value: tf.cast(value, tf.int32),
        to_float=lambda value: tf.cast(value, tf.float32),
        ceil=tf.math.ceil, floor=tf.floor, maximum=tf.maximum, minimum=tf.minimum,
        clip=tf.clip_by_value, arange=tf.range, pad=tf.pad, stack=tf.stack,
        one_hot=tf.one_hot, matmul=tf.matmul,
        max_or_zero=lambda value: tf.maximum(tf.reduce_max(value), 0)),
    "numpy": types.SimpleNamespace(
        asarray=lambda value: np.asarray(value, np.float32),
        to_int=lambda value: np.asarray(value).astype(np.int32),
        to_float=lambda value: np.asarray(value).astype(np.float32),
        ceil=np.ceil, floor=np.floor, maximum=np.maximum, minimum=np.minimum,
        clip=np.clip, arange=lambda length: np.arange(length, dtype=np.int32), pad=np.pad,
        stack=np.stack,
        one_hot=lambda indices, depth: (indices[..., None] == np.arange(depth)).astype(np.float32),
        matmul=lambda a, b, transpose_b=False: a @ (np.swapaxes(b, -1, -2) if transpose_b else b),
        max_or_zero=lambda value: max(int(np.max(value, initial=0)), 0)),
}


def _centres_pixels(xp, start, end, num_cells):
    """Pixels whose centre lies in [start, end) → first, stop int32 [..., K] (not clipped)."""
    del num_cells  # the box itself decides
    return xp.to_int(xp.ceil(start - 0.5)), xp.to_int(xp.ceil(end - 0.5))


def _centres_weights(xp, start, end, num_cells, pixels):
    """Bilinear weights from the zero-padded cell grid to pixel centres.

    Args: start, end float32 [..., K] box edges along one axis; pixels int32 [..., K, n].
    Returns: float32 [..., K, n, M + 2], meaningful for the pixels inside the box.
    """
    centres = xp.to_float(pixels) + 0.5
    start, end = start[..., None], end[..., None]
    # Padding detections have empty boxes; a safe length keeps their (unused) weights finite.
    length = xp.maximum(end - start, 1e-6)
    grid_coords = (centres - start) * (num_cells / length) - 0.5
    lower = xp.floor(grid_coords)
    upper_weight = (grid_coords - lower)[..., None]
    # + 1 for the padding cell; one_hot of an index off the padded grid is all zeros.
    lower = xp.to_int(xp.clip(lower, -2.0, num_cells + 1.0)) + 1
    return (xp.one_hot(lower, num_cells + 2) * (1.0 - upper_weight)
            + xp.one_hot(lower + 1, num_cells + 2) * upper_weight)


def _torchvision_pixels(xp, start, end, num_cells):
    """The pixels torchvision pastes into: first, stop int32 [..., K] (not clipped)."""
    # The box grows by (M + 2) / M about its centre, in float32, and is truncated to integers.
    centre, half = (start + end) * 0.5, (end - start) * 0.5 * ((num_cells + 2) / num_cells)
    return xp.to_int(centre - half), xp.to_int(centre + half) + 1


def _torchvision_weights(xp, start, end, num_cells, pixels):
    """torch's bilinear resize of the zero-padded M + 2 cells to the grown box's pixels.

    Args: start, end float32 [..., K] box edges along one axis; pixels int32 [..., K, n].
    Returns: float32 [..., K, n, M + 2], meaningful for the pixels inside the grown box.
    """
    padded_cells = num_cells + 2
    first, stop = _torchvision_pixels(xp, start, end, num_cells)
    size = xp.to_float(xp.maximum(stop - first, 1))[..., None]
    in_box = xp.to_float(pixels - first[..., None])  # pixel index within the box
    source = xp.maximum((in_box + 0.5) * (padded_cells / size) - 0.5, 0.0)
    lower = xp.floor(source)
    upper_weight = (source - lower)[..., None]
    lower = xp.to_int(xp.clip(lower, 0.0, padded_cells - 1.0))
    # At the last cell lower == upper: both weights land on it.
    upper = xp.minimum(lower + 1, padded_cells - 1)
    return (xp.one_hot(lower, padded_cells) * (1.0 - upper_weight)
            + xp.one_hot(upper, padded_cells) * upper_weight)


_METHODS = {"centres": (_centres_pixels, _centres_weights),
            "torchvision": (_torchvision_pixels, _torchvision_weights)}


def _window_weights(xp, start, end, num_cells, size, method):
    """Interpolation weights along one axis, for windows as long as the longest box.

    Args: start, end float32 [..., K]; size int32 scalar, the image's length along the axis.
    Returns: weights float32 [..., K, n, M + 2]; first, stop int32 [..., K], the pixels the
      method gives the box, clipped to the image. Window k starts at first[k]; its pixels from
      stop[k] on are not the box's.
    """
    box_pixels, weights = _METHODS[method]
    first, stop = box_pixels(xp, start, end, num_cells)
    first, stop = xp.clip(first, 0, size), xp.clip(stop, 0, size)
    pixels = first[..., None] + xp.arange(xp.max_or_zero(stop - first))
    return weights(xp, start, end, num_cells, pixels), first, xp.maximum(stop, first)


def pasted_windows(masks, boxes, height, width, method="centres", arrays="tensorflow"):
    """The pasted mask probabilities in one h×w window of the image per detection, h and w the
    largest box's pixels.

    Args: as `paste_mask_probabilities`; `arrays` "tensorflow" (ops, for graphs) or "numpy"
      (numpy arrays in and out, for the host).
    Returns: windows float32 [..., K, h, w]; extents int32 [..., K, 4], each box's pixels
      `(top, bottom, left, right)` clipped to the image. Image pixels `[top:bottom, left:right]`
      are `window[:bottom - top, :right - left]`, and all of the box's pixels.
    """
    if method not in _METHODS:
        raise ValueError(f"unknown paste method {method!r}; choose one of {PASTE_METHODS}")
    xp = ARRAYS[arrays]
    masks, boxes = xp.asarray(masks), xp.asarray(boxes)
    num_cells = masks.shape[-1]
    padded = xp.pad(masks, [[0, 0]] * (len(masks.shape) - 2) + [[1, 1], [1, 1]])
    row_weights, top, bottom = _window_weights(xp, boxes[..., 0], boxes[..., 2], num_cells, height, method)
    col_weights, left, right = _window_weights(xp, boxes[..., 1], boxes[..., 3], num_cells, width, method)
    windows = xp.matmul(xp.matmul(row_weights, padded), col_weights, transpose_b=True)
    return windows, xp.stack([top, bottom, left, right], axis=-1)


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

"""Resize and pad images to the model's input canvas.

Shapes: h, w original image size; H, W the canvas: `InputConfig.image_size`, or with
`InputConfig.canvas_per_image` the batch's resized images rounded up to BACKBONE_STRIDE
(`canvas_for`), as torchvision's `GeneralizedRCNNTransform` pads a batch.

`image_info` rows are `(scale, valid_h, valid_w, original_h, original_w)`: the image is
resized by `scale` keeping its aspect ratio to floor(h · scale) × floor(w · scale) = valid_h ×
valid_w pixels, placed at the top-left of the canvas, and the rest is zero. Canvas pixels map
back to the original image by `original / valid` along each axis, the inverse of the resize
(and torchvision's `resize_boxes`).

The scale fits the image into the canvas. With `size_limits` (short, long) it is at most
torchvision's `min(short / min(h, w), long / max(h, w))` too (`GeneralizedRCNNTransform`'s
min_size and max_size); an image that would then overflow the canvas is fitted instead.
With a canvas per image the fixed canvas turns to the image's orientation (`oriented_canvas`)
and then bounds the scale as before; for the torchvision presets (800 × 1344, limits 800 and
1333) it never binds, and the scale is torchvision's in either orientation.
"""

import numpy as np
import tensorflow as tf

from keras_maskrcnn.config import BACKBONE_STRIDE

IMAGE_INFO_SIZE = 5


def compute_scale(h, w, image_size, size_limits=None):
    """Scale of an h × w image in the canvas (H, W) under `size_limits` (see module docstring)."""
    scale = min(image_size[0] / h, image_size[1] / w)
    if size_limits is not None:
        scale = min(scale, size_limits[0] / min(h, w), size_limits[1] / max(h, w))
    return scale


def oriented_canvas(portrait, image_size):
    """The canvas (H, W) = image_size turned to an image's orientation: its long side vertical
    for a portrait image (`portrait` True: h > w), horizontal otherwise."""
    short, long = sorted(image_size)
    return (long, short) if portrait else (short, long)


def scale_in_graph(shape, image_size, size_limits):
    """`compute_scale` on float32 tensors: shape [2] (h, w) → scalar."""
    scale = tf.reduce_min(tf.constant(image_size, tf.float32) / shape)
    if size_limits is not None:
        scale = tf.minimum(scale, tf.minimum(size_limits[0] / tf.reduce_min(shape),
                                             size_limits[1] / tf.reduce_max(shape)))
    return scale


def resize(image, image_size, size_limits=None):
    """Resize one image by the rule of the module docstring, without padding.

    Args:
      image: uint8 or float [h, w, 3] tensor (pixel values 0..255).
      image_size: the canvas (H, W) to fit into.
      size_limits: None, or (short, long) side limits (`InputConfig.size_limits`).
    Returns:
      resized float32 [valid_h, valid_w, 3] (0..255), image_info float32 [5].
    """
    image = tf.convert_to_tensor(image)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = scale_in_graph(shape, image_size, size_limits)
    # Floor with a small tolerance so a float error never makes the image one pixel too big.
    valid_hw = tf.minimum(tf.floor(shape * scale + 1e-3), tf.constant(image_size, tf.float32))
    resized = tf.image.resize(tf.cast(image, tf.float32), tf.cast(valid_hw, tf.int32))
    return resized, tf.concat([[scale], valid_hw, shape], axis=0)


def is_portrait(image):
    """Whether an image or canvas [h, w, 3] is taller than wide: a bool tensor."""
    return tf.shape(image)[0] > tf.shape(image)[1]


def resize_oriented(image, image_size, size_limits):
    """`resize` into image_size turned to the image's orientation (`oriented_canvas`), the
    rule of a canvas per image; in the graph or eagerly. Args/Returns as `resize`."""
    return tf.cond(is_portrait(image),
                   lambda: resize(image, oriented_canvas(True, image_size), size_limits),
                   lambda: resize(image, oriented_canvas(False, image_size), size_limits))


def canvas_for(valid_hw):
    """The canvas of a canvas per image: int (h, w) sides (or a tensor [..., 2] of them, the
    batch's largest taken over leading axes) rounded up to BACKBONE_STRIDE → (H, W) ints or
    int32 tensor [2]."""
    if isinstance(valid_hw, tuple):
        return tuple(-(-int(side) // BACKBONE_STRIDE) * BACKBONE_STRIDE for side in valid_hw)
    largest = tf.cast(tf.reshape(valid_hw, [-1, 2]), tf.int32)
    largest = tf.reduce_max(largest, axis=0)
    return (largest + BACKBONE_STRIDE - 1) // BACKBONE_STRIDE * BACKBONE_STRIDE


def own_canvas(image_hw, input_config):
    """The canvas per image (H, W) of one h × w image under `input_config` (`InputConfig`):
    its resized size rounded up to BACKBONE_STRIDE."""
    height, width = image_hw
    canvas = oriented_canvas(height > width, input_config.image_size)
    scale = compute_scale(height, width, canvas, input_config.size_limits)
    return canvas_for((min(int(height * scale + 1e-3), canvas[0]),
                       min(int(width * scale + 1e-3), canvas[1])))


def resize_and_pad(image, image_size, size_limits=None):
    """Resize one image into the fixed canvas (H, W) = image_size.

    Args: as `resize`, with image_size given.
    Returns:
      canvas float32 [H, W, 3] (0..255, zero padded), image_info float32 [5].
    """
    resized, image_info = resize(image, image_size, size_limits)
    canvas = tf.image.pad_to_bounding_box(resized, 0, 0, image_size[0], image_size[1])
    canvas = tf.ensure_shape(canvas, [image_size[0], image_size[1], 3])
    return canvas, image_info


def resize_exactly(image, size):
    """uint8 [h, w, 3] → uint8 [H, W, 3] for size (H, W), aspect not kept (bilinear), as a
    camera delivers frames of the size it was asked for."""
    resized = tf.image.resize(tf.cast(image, tf.float32), size)
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8).numpy()


def boxes_to_original(boxes, image_info):
    """Canvas boxes float32 [B, K, 4] (y1, x1, y2, x2) → original-image pixels [B, K, 4], by
    original / valid size along each axis."""
    original_per_canvas_pixel = image_info[:, None, 3:5] / image_info[:, None, 1:3]
    return boxes * tf.tile(original_per_canvas_pixel, [1, 1, 2])


def preprocess_batch(images, image_size, size_limits=None):
    """Resize and pad a list of uint8 [h, w, 3] arrays into the fixed canvas image_size
    → (float32 [B, H, W, 3], float32 [B, 5])."""
    canvases, infos = zip(*(resize_and_pad(image, image_size, size_limits) for image in images))
    return np.stack([c.numpy() for c in canvases]), np.stack([i.numpy() for i in infos])


def preprocess_for_model(images, input_config):
    """Resize and pad a list of uint8 [h, w, 3] arrays for a Keras model with `input_config`
    (an `InputConfig`) → (float32 [B, H, W, 3], float32 [B, 5]): into its fixed canvas, or with
    `canvas_per_image` into the batch's own (`canvas_for`)."""
    if not input_config.canvas_per_image:
        return preprocess_batch(images, input_config.image_size, input_config.size_limits)
    resized, infos = zip(*(resize_oriented(image, input_config.image_size,
                                           input_config.size_limits) for image in images))
    infos = np.stack([info.numpy() for info in infos])
    height, width = canvas_for(tuple(infos[:, 1:3].max(axis=0)))
    canvases = np.zeros((len(images), height, width, 3), np.float32)
    for canvas, image in zip(canvases, resized):
        canvas[:image.shape[0], :image.shape[1]] = image.numpy()
    return canvases, infos

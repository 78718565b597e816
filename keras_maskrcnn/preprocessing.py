"""Resize and pad images to the model's fixed input canvas.

Shapes: h, w original image size; H, W the canvas (`InputConfig.image_size`).

`image_info` rows are `(scale, valid_h, valid_w, original_h, original_w)`: the image is
resized by `scale` keeping its aspect ratio, placed at the top-left of the canvas, and the
rest is zero. Boxes on the canvas map back to the original image by dividing by `scale`.
"""

import numpy as np
import tensorflow as tf

IMAGE_INFO_SIZE = 5


def compute_scale(h, w, image_size):
    """Largest scale that fits an h × w image inside the canvas (H, W)."""
    return min(image_size[0] / h, image_size[1] / w)


def resize_and_pad(image, image_size):
    """Resize one image into the canvas.

    Args:
      image: uint8 or float [h, w, 3] tensor (pixel values 0..255).
      image_size: (H, W).
    Returns:
      canvas float32 [H, W, 3] (0..255, zero padded), image_info float32 [5].
    """
    image = tf.convert_to_tensor(image)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    canvas_hw = tf.constant(image_size, tf.float32)
    scale = tf.reduce_min(canvas_hw / shape)
    # Floor with a small tolerance so a float error never makes the image one pixel too big.
    valid_hw = tf.minimum(tf.floor(shape * scale + 1e-3), canvas_hw)
    resized = tf.image.resize(tf.cast(image, tf.float32), tf.cast(valid_hw, tf.int32))
    canvas = tf.image.pad_to_bounding_box(resized, 0, 0, image_size[0], image_size[1])
    canvas = tf.ensure_shape(canvas, [image_size[0], image_size[1], 3])
    image_info = tf.concat([[scale], valid_hw, shape], axis=0)
    return canvas, image_info


def preprocess_batch(images, image_size):
    """Resize and pad a list of uint8 [h, w, 3] arrays → (float32 [B, H, W, 3], float32 [B, 5])."""
    canvases, infos = zip(*(resize_and_pad(image, image_size) for image in images))
    return np.stack([c.numpy() for c in canvases]), np.stack([i.numpy() for i in infos])

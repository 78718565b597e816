"""tf.data input pipelines for training, evaluation and inference.

Shapes: B batch; H, W canvas (`image_size`); h, w original image size; G `max_instances`
(ground truth padded to G); S `gt_mask_size`; n instances of one image before padding.

Each element is a dict:
  images      float32 [B, H, W, 3]  0..255, resized keeping aspect and zero padded
  image_info  float32 [B, 5]        (scale, valid_h, valid_w, original_h, original_w)
  gt_boxes    float32 [B, G, 4]     y1 x1 y2 x2 in canvas pixels, zero padded
  gt_classes  int32   [B, G]        1..C, 0 for padding
  gt_masks    float32 [B, G, S, S]  each instance's mask in its own box frame ("mini-mask"), 0..1
  image_id    int64   [B]
"""

import numpy as np
import tensorflow as tf

from keras_maskrcnn import preprocessing
from keras_maskrcnn.ops.masks import crop_and_resize_masks


def make_dataset(dataset, image_size, batch_size, max_instances, gt_mask_size, training,
                 seed=0, shuffle=True):
    """Batched, prefetched `tf.data.Dataset` of the dicts in the module docstring.

    Crowd regions and empty boxes are left out of the targets, and only the `max_instances`
    largest instances (by mask area) are kept. With `training`, images are shuffled (if
    `shuffle`) and flipped left-right with probability 0.5, both fixed by `seed`, and the last
    partial batch is dropped so the batch size is static. The caller repeats the dataset.

    Args:
      dataset: a `CocoDataset`.
      image_size: canvas (H, W).
    """
    height, width = image_size
    ids = tf.data.Dataset.from_tensor_slices(np.asarray(dataset.image_ids, np.int64))
    if training and shuffle:
        ids = ids.shuffle(len(dataset.image_ids), seed=seed, reshuffle_each_iteration=True)
    if training:
        # Random numbers drawn as a dataset of their own stay tied to their element whatever
        # order the parallel map runs in, and differ from epoch to epoch.
        coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        elements = tf.data.Dataset.zip(ids, coins.map(lambda r: r % 2 == 1))
    else:
        elements = ids.map(lambda image_id: (image_id, tf.constant(False)))

    def load(image_id):
        annotations = dataset.load_annotations(int(image_id))
        keep = np.flatnonzero(~annotations["is_crowd"]
                              & (annotations["boxes"][:, 2] > annotations["boxes"][:, 0])
                              & (annotations["boxes"][:, 3] > annotations["boxes"][:, 1]))
        areas = annotations["masks"][keep].sum(axis=(1, 2), dtype=np.int64)
        keep = keep[np.argsort(-areas, kind="stable")[:max_instances]]
        return (dataset.load_image(int(image_id)), annotations["boxes"][keep],
                annotations["labels"][keep], annotations["masks"][keep])

    def to_example(image_id, flip):
        image, boxes, classes, masks = tf.numpy_function(
            load, [image_id], [tf.uint8, tf.float32, tf.int32, tf.uint8], stateful=False)
        image = tf.ensure_shape(image, [None, None, 3])
        boxes = tf.ensure_shape(boxes, [None, 4])
        classes = tf.ensure_shape(classes, [None])
        masks = tf.ensure_shape(masks, [None, None, None])
        # Mini-masks are taken at the original resolution so resizing never blurs the targets.
        mini_masks = crop_and_resize_masks(tf.cast(masks, tf.float32), boxes, gt_mask_size)
        image, boxes, mini_masks = tf.cond(
            flip, lambda: _flip_left_right(image, boxes, mini_masks), lambda: (image, boxes, mini_masks))
        canvas, image_info = preprocessing.resize_and_pad(image, image_size)
        pad = max_instances - tf.shape(classes)[0]
        return {
            "images": tf.ensure_shape(canvas, [height, width, 3]),
            "image_info": tf.ensure_shape(image_info, [preprocessing.IMAGE_INFO_SIZE]),
            "gt_boxes": tf.ensure_shape(tf.pad(boxes * image_info[0], [[0, pad], [0, 0]]),
                                        [max_instances, 4]),
            "gt_classes": tf.ensure_shape(tf.pad(classes, [[0, pad]]), [max_instances]),
            "gt_masks": tf.ensure_shape(tf.pad(mini_masks, [[0, pad], [0, 0], [0, 0]]),
                                        [max_instances, gt_mask_size, gt_mask_size]),
            "image_id": image_id,
        }

    examples = elements.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
    return examples.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


def _flip_left_right(image, boxes, mini_masks):
    """Mirror an original-size image with its boxes and mini-masks; same shapes as the inputs."""
    width = tf.cast(tf.shape(image)[1], tf.float32)
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    # Mini-masks live in their box's frame, so mirroring the box only reverses their width axis.
    return (tf.reverse(image, axis=[1]), tf.stack([y1, width - x2, y2, width - x1], axis=-1),
            tf.reverse(mini_masks, axis=[2]))


def make_inference_inputs(images, image_size):
    """Resize and pad uint8 [h, w, 3] arrays → (images float32 [B, H, W, 3], image_info float32 [B, 5])."""
    return preprocessing.preprocess_batch(images, image_size)

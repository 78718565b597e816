"""tf.data input pipelines for training, evaluation and inference.

Shapes: B batch; H, W canvas (`image_size`, or turned on its side for portrait images: see
`make_dataset`); h, w original image size; G `max_instances` (ground truth padded to G); S
`gt_mask_size`; n instances of one image before padding.

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
from keras_maskrcnn.data.coco import DataError
from keras_maskrcnn.data.validation import report_decode_failure
from keras_maskrcnn.ops.masks import crop_and_resize_masks, reframe_mini_masks
from keras_maskrcnn.train_config import FLIPS

# With `cache`, decoded images are shuffled in a buffer of this many (they no longer fit a
# permutation of ids); without it the ids are shuffled whole before decoding.
CACHE_SHUFFLE_BUFFER = 512


def make_dataset(dataset, image_size, batch_size, max_instances, gt_mask_size, training,
                 seed=0, shuffle=True, flips="left-right", scale_jitter=None, cache=False,
                 bad_data=None, repeat=False, start_batch=0, size_limits=None,
                 global_batch_size=None, shard_index=0, num_shards=1):
    """Batched, prefetched `tf.data.Dataset` of the dicts in the module docstring.

    Crowd regions and empty boxes are left out of the targets, and only the `max_instances`
    largest instances (by mask area) are kept. With `training`, images are shuffled (if
    `shuffle`), flipped (`flips`, one of FLIPS) and, with `scale_jitter`, scaled, all fixed
    by `seed`; the last partial batch is dropped so the batch size is static.

    With `size_limits` and a canvas that is not square, every image is resized and padded into
    the canvas turned to its orientation (`preprocessing.oriented_canvas`), so a portrait image
    is resized by the limits as a landscape one is, as torchvision does: batches are then
    grouped by orientation, each holding one canvas (torchvision's recipe groups its batches
    by aspect ratio too). Within an
    orientation the order stays the stream's, but the batches' composition is no longer
    `global_batch_size` consecutive images, so `start_batch` and sharding keep their images'
    order, not their exact batches.

    Args:
      dataset: a `CocoDataset`.
      image_size: canvas (H, W).
      size_limits: None or (short, long), `InputConfig.size_limits`.
      scale_jitter: (min, max) or None. The image is scaled by a factor drawn uniformly from
        the range on top of the scale `preprocessing` gives it; what then overflows the
        canvas is cropped at a random offset, and boxes are clipped to the crop (their
        mini-masks resampled to match; instances cropped away are dropped).
      cache: False, True (in memory) or a file path: keep decoded images with their
        mini-masks after the first pass. Shuffling then uses a buffer of
        `CACHE_SHUFFLE_BUFFER` images.
      bad_data: a `BadDataPolicy`; images that fail to decode are reported to it and, in
        mode "skip", dropped from the stream. None lets the error stop the pipeline.
      repeat: repeat forever (training); otherwise the caller repeats.
      start_batch: with `repeat`, begin as if this many batches had been drawn already, so a
        resumed run sees the batches the interrupted one would have seen (exact while no
        image has been dropped by `bad_data` at run time).
      global_batch_size, shard_index, num_shards: one worker's shard of a run on several
        (training): the stream is cut into global batches (default: `batch_size`), this
        pipeline keeps the shard_index-th of num_shards equal contiguous slices of each and
        batches them by `batch_size` (per replica). No image is read by two shards, and the
        shards' batches put together in order are the single-worker batches. `start_batch`
        counts global batches.
    """
    if flips not in FLIPS:
        raise ValueError(f"unknown flips {flips!r}; choose one of {FLIPS}")
    global_batch_size = global_batch_size or batch_size
    if training and (global_batch_size % num_shards
                     or (global_batch_size // num_shards) % batch_size):
        raise ValueError(f"a global batch of {global_batch_size} does not split into "
                         f"{num_shards} shards of whole batches of {batch_size}")
    height, width = image_size
    by_orientation = size_limits is not None and height != width
    ids = tf.data.Dataset.from_tensor_slices(np.asarray(dataset.image_ids, np.int64))

    def load(image_id):
        try:
            image = dataset.load_image(int(image_id))
        except DataError as error:
            if bad_data is None:
                raise
            report_decode_failure(bad_data, error, int(image_id))
            # An empty image marks the element for the filter below.
            return (np.zeros((0, 0, 3), np.uint8), np.zeros((0, 4), np.float32),
                    np.zeros((0,), np.int32), np.zeros((0, 0, 0), np.uint8))
        annotations = dataset.load_annotations(int(image_id))
        keep = np.flatnonzero(~annotations["is_crowd"]
                              & (annotations["boxes"][:, 2] > annotations["boxes"][:, 0])
                              & (annotations["boxes"][:, 3] > annotations["boxes"][:, 1]))
        areas = annotations["masks"][keep].sum(axis=(1, 2), dtype=np.int64)
        keep = keep[np.argsort(-areas, kind="stable")[:max_instances]]
        return (image, annotations["boxes"][keep], annotations["labels"][keep],
                annotations["masks"][keep])

    def decode(image_id):
        image, boxes, classes, masks = tf.numpy_function(
            load, [image_id], [tf.uint8, tf.float32, tf.int32, tf.uint8], stateful=False)
        boxes = tf.ensure_shape(boxes, [None, 4])
        # Mini-masks are taken at the original resolution so resizing never blurs the targets.
        mini_masks = crop_and_resize_masks(tf.ensure_shape(masks, [None, None, None]), boxes,
                                           gt_mask_size)
        return {"image": tf.ensure_shape(image, [None, None, 3]), "boxes": boxes,
                "classes": tf.ensure_shape(classes, [None]), "mini_masks": mini_masks,
                "image_id": image_id}

    def decoded(element):
        return tf.size(element["image"]) > 0

    def order(elements):
        """Shuffle (training), repeat (if asked), and pair each element with a random seed."""
        if training and shuffle:
            buffer = len(dataset.image_ids) if not cache else min(len(dataset.image_ids),
                                                                   CACHE_SHUFFLE_BUFFER)
            elements = elements.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            elements = elements.repeat()
        if not training:
            return elements.map(lambda element: (element, tf.zeros([2], tf.int64)))
        # Random numbers drawn as a dataset of their own stay tied to their element whatever
        # order the parallel map runs in, and differ from epoch to epoch.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(
            lambda r: tf.stack([r, tf.constant(seed, tf.int64)]))
        elements = tf.data.Dataset.zip(elements, seeds).skip(start_batch * global_batch_size)
        if num_shards == 1:
            return elements
        slice_size = global_batch_size // num_shards
        return elements.enumerate().filter(
            lambda position, _: position % global_batch_size // slice_size == shard_index
        ).map(lambda _, element: element)

    if cache:
        examples = ids.map(decode, num_parallel_calls=tf.data.AUTOTUNE).filter(decoded)
        examples = order(examples.cache("" if cache is True else str(cache)))
    else:
        # Ids are ordered (and skipped, on resume) before decoding, which is the costly part.
        examples = order(ids).map(lambda image_id, element_seed: (decode(image_id), element_seed),
                                  num_parallel_calls=tf.data.AUTOTUNE)
        examples = examples.filter(lambda element, _: decoded(element))

    def to_example(element, element_seed):
        image, boxes = element["image"], element["boxes"]
        classes, mini_masks = element["classes"], element["mini_masks"]
        if training:
            draws = tf.random.stateless_uniform([4], seed=element_seed)
            image, boxes, mini_masks = tf.cond(
                draws[0] < 0.5, lambda: _flip_left_right(image, boxes, mini_masks),
                lambda: (image, boxes, mini_masks))
            if flips == "all":
                # Drawn apart from `draws`, which keep their values for "left-right".
                turns = tf.random.stateless_uniform([2], seed=element_seed + [0, 1])
                image, boxes, mini_masks = tf.cond(
                    turns[0] < 0.5, lambda: _flip_up_down(image, boxes, mini_masks),
                    lambda: (image, boxes, mini_masks))
                image, boxes, mini_masks = tf.cond(
                    turns[1] < 0.5, lambda: _transpose(image, boxes, mini_masks),
                    lambda: (image, boxes, mini_masks))

        def fit_into(canvas_size):
            if training and scale_jitter is not None:
                factor = scale_jitter[0] + draws[1] * (scale_jitter[1] - scale_jitter[0])
                return _scale_and_crop(image, boxes, classes, mini_masks, canvas_size,
                                       size_limits, factor, draws[2:])
            canvas, image_info = preprocessing.resize_and_pad(image, canvas_size, size_limits)
            # The resize's own ratio along each axis: valid / original size.
            return (canvas, image_info, boxes * tf.tile(image_info[1:3] / image_info[3:5], [2]),
                    classes, mini_masks)

        if by_orientation:
            canvas, image_info, boxes, classes, mini_masks = tf.cond(
                preprocessing.is_portrait(image),
                lambda: fit_into(preprocessing.oriented_canvas(True, image_size)),
                lambda: fit_into(preprocessing.oriented_canvas(False, image_size)))
        else:
            canvas, image_info, boxes, classes, mini_masks = fit_into((height, width))
        pad = max_instances - tf.shape(classes)[0]
        return {
            "images": tf.ensure_shape(canvas, [None, None, 3] if by_orientation
                                      else [height, width, 3]),
            "image_info": tf.ensure_shape(image_info, [preprocessing.IMAGE_INFO_SIZE]),
            "gt_boxes": tf.ensure_shape(tf.pad(boxes, [[0, pad], [0, 0]]), [max_instances, 4]),
            "gt_classes": tf.ensure_shape(tf.pad(classes, [[0, pad]]), [max_instances]),
            "gt_masks": tf.ensure_shape(tf.pad(mini_masks, [[0, pad], [0, 0], [0, 0]]),
                                        [max_instances, gt_mask_size, gt_mask_size]),
            "image_id": element["image_id"],
        }

    examples = examples.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
    if by_orientation:
        examples = examples.group_by_window(
            key_func=lambda example: tf.cast(preprocessing.is_portrait(example["images"]),
                                             tf.int64),
            reduce_func=lambda _, window: window.batch(batch_size, drop_remainder=training),
            window_size=batch_size)
    else:
        examples = examples.batch(batch_size, drop_remainder=training)
    return examples.prefetch(tf.data.AUTOTUNE)


def _flip_left_right(image, boxes, mini_masks):
    """Mirror an original-size image with its boxes and mini-masks; same shapes as the inputs."""
    width = tf.cast(tf.shape(image)[1], tf.float32)
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    # Mini-masks live in their box's frame, so mirroring the box only reverses their width axis.
    return (tf.reverse(image, axis=[1]), tf.stack([y1, width - x2, y2, width - x1], axis=-1),
            tf.reverse(mini_masks, axis=[2]))


def _flip_up_down(image, boxes, mini_masks):
    """Mirror an original-size image top to bottom with its boxes and mini-masks."""
    height = tf.cast(tf.shape(image)[0], tf.float32)
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    return (tf.reverse(image, axis=[0]), tf.stack([height - y2, x1, height - y1, x2], axis=-1),
            tf.reverse(mini_masks, axis=[1]))


def _transpose(image, boxes, mini_masks):
    """Swap an original-size image's axes (an [h, w, 3] image becomes [w, h, 3]) with its boxes
    and mini-masks."""
    return (tf.transpose(image, [1, 0, 2]), tf.gather(boxes, [1, 0, 3, 2], axis=-1),
            tf.transpose(mini_masks, [0, 2, 1]))


def _scale_and_crop(image, boxes, classes, mini_masks, image_size, size_limits, factor, offset):
    """Resize an original-size image by `factor` × its `preprocessing` scale, crop the overflow.

    Args:
      image: [h, w, 3]; boxes: [n, 4] original pixels; classes: [n]; mini_masks: [n, S, S].
      image_size, size_limits: as `preprocessing.resize_and_pad` takes them.
      factor: scalar scale jitter; offset: [2] (y, x) in [0, 1), where in the overflow the
        crop starts.
    Returns:
      canvas [H, W, 3], image_info [5] (the jittered scale; valid size = the crop's), boxes
      [m, 4] in canvas pixels clipped to the crop, classes [m], mini_masks [m, S, S], m ≤ n
      being the instances with some area left inside the crop.
    """
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    canvas_hw = tf.constant(image_size, tf.float32)
    scale = preprocessing.scale_in_graph(shape, image_size, size_limits) * factor
    resized_hw = tf.maximum(tf.floor(shape * scale + 1e-3), 1.0)
    resized = tf.image.resize(tf.cast(image, tf.float32), tf.cast(resized_hw, tf.int32))
    top_left = tf.floor(tf.maximum(resized_hw - canvas_hw, 0.0) * offset)
    valid_hw = tf.minimum(resized_hw, canvas_hw)
    crop = tf.slice(resized, tf.concat([tf.cast(top_left, tf.int32), [0]], 0),
                    tf.concat([tf.cast(valid_hw, tf.int32), [3]], 0))
    canvas = tf.image.pad_to_bounding_box(crop, 0, 0, image_size[0], image_size[1])
    shifted = boxes * tf.tile(resized_hw / shape, [2]) - tf.tile(top_left, [2])
    clipped = tf.clip_by_value(shifted, 0.0, tf.tile(valid_hw, [2]))
    # Mini-masks follow their box: where clipping cut a box, its mask is resampled to the cut.
    mini_masks = reframe_mini_masks(mini_masks, shifted, clipped)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    image_info = tf.concat([[scale], valid_hw, shape], axis=0)
    return (canvas, image_info, tf.boolean_mask(clipped, keep), tf.boolean_mask(classes, keep),
            tf.boolean_mask(mini_masks, keep))

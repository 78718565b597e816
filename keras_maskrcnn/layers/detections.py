"""Final detections from the box head: decode per class, threshold, class-wise NMS.

Shapes: B batch, R RoIs, C foreground classes, K detections per image (padded).
"""

import keras
import tensorflow as tf

from keras_maskrcnn.ops import box_coder, boxes as box_ops, nms


@keras.saving.register_keras_serializable("keras_maskrcnn")
class DetectionLayer(keras.layers.Layer):
    """torchvision's RoIHeads.postprocess_detections with static shapes: every (RoI, class)
    pair is a candidate; low scores and tiny boxes are dropped; the best `pre_nms_topk`
    candidates go through NMS per class; the best K survive."""

    def __init__(self, *, score_threshold, nms_threshold, max_detections, pre_nms_topk, min_box_size,
                 box_coder_weights, **kwargs):
        super().__init__(**kwargs)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_detections = max_detections
        self.pre_nms_topk = pre_nms_topk
        self.min_box_size = min_box_size
        self.box_coder_weights = tuple(box_coder_weights)

    def call(self, class_logits, deltas, rois, roi_valid, image_info):
        """class_logits [B, R, C+1], deltas [B, R, C+1, 4], rois [B, R, 4], roi_valid [B, R].

        Returns: boxes [B, K, 4] (canvas pixels), scores [B, K], labels int32 [B, K] (1..C),
        valid bool [B, K].
        """
        num_rois, num_classes = class_logits.shape[1], class_logits.shape[2] - 1
        batch = tf.shape(class_logits)[0]
        probs = tf.nn.softmax(class_logits, axis=-1)[:, :, 1:]
        boxes = box_coder.decode_boxes(deltas[:, :, 1:], rois[:, :, None, :], self.box_coder_weights)
        boxes = box_ops.clip_boxes(boxes, image_info[:, 1, None, None], image_info[:, 2, None, None])
        heights, widths = box_ops.box_sizes(boxes)
        keep = ((probs > self.score_threshold) & roi_valid[:, :, None]
                & (heights >= self.min_box_size) & (widths >= self.min_box_size))
        scores = tf.reshape(tf.where(keep, probs, nms.INVALID_SCORE), [batch, num_rois * num_classes])
        boxes = tf.reshape(boxes, [batch, num_rois * num_classes, 4])
        labels = tf.tile(tf.range(1, num_classes + 1)[None, :], [num_rois, 1])
        labels = tf.broadcast_to(tf.reshape(labels, [1, -1]), tf.shape(scores))
        top = tf.math.top_k(scores, k=min(self.pre_nms_topk, num_rois * num_classes))
        boxes = tf.gather(boxes, top.indices, batch_dims=1)
        labels = tf.gather(labels, top.indices, batch_dims=1)
        indices, valid = nms.batched_padded_nms(
            boxes, top.values, self.max_detections, self.nms_threshold, group_ids=labels)
        scores = tf.where(valid, tf.gather(top.values, indices, batch_dims=1), 0.0)
        return (tf.gather(boxes, indices, batch_dims=1) * tf.cast(valid, tf.float32)[..., None],
                scores, tf.where(valid, tf.gather(labels, indices, batch_dims=1), 0), valid)

    def get_config(self):
        return {**super().get_config(), "score_threshold": self.score_threshold,
                "nms_threshold": self.nms_threshold, "max_detections": self.max_detections,
                "pre_nms_topk": self.pre_nms_topk, "min_box_size": self.min_box_size,
                "box_coder_weights": self.box_coder_weights}

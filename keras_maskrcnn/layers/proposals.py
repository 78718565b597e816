"""Turn RPN outputs into a fixed number of proposals per image (no gradient).

Shapes: B batch, A_l anchors of level l, P proposals per image.
"""

import keras
import tensorflow as tf

from keras_maskrcnn.ops import anchors, box_coder, boxes as box_ops, nms


@keras.saving.register_keras_serializable("keras_maskrcnn")
class ProposalLayer(keras.layers.Layer):
    """Per level: top-k anchors by objectness; decode, clip to the image, drop tiny boxes;
    NMS within each level; keep the best `post_nms_topk` over all levels (torchvision's
    RegionProposalNetwork.filter_proposals)."""

    def __init__(self, *, image_size, min_level, anchor_sizes, aspect_ratios, pre_nms_topk_train,
                 pre_nms_topk_test, post_nms_topk_train, post_nms_topk_test, nms_threshold,
                 min_box_size, box_coder_weights, **kwargs):
        super().__init__(**kwargs)
        self.image_size = tuple(image_size)
        self.min_level = min_level
        self.anchor_sizes = tuple(anchor_sizes)
        self.aspect_ratios = tuple(aspect_ratios)
        self._strides = [2 ** (min_level + i) for i in range(len(anchor_sizes))]
        self._anchors_by_canvas = {}
        self.pre_nms_topk_train = pre_nms_topk_train
        self.pre_nms_topk_test = pre_nms_topk_test
        self.post_nms_topk_train = post_nms_topk_train
        self.post_nms_topk_test = post_nms_topk_test
        self.nms_threshold = nms_threshold
        self.min_box_size = min_box_size
        self.box_coder_weights = tuple(box_coder_weights)

    def level_anchors(self, canvas_hw):
        """Anchors of each level for a canvas: list of float32 [A_l, 4].

        canvas_hw: (H, W) as Python ints, giving numpy arrays (computed once per size), or an
        int32 tensor [2] for a canvas known only at run time, giving tensors.
        """
        sizes = [(size,) for size in self.anchor_sizes]
        if isinstance(canvas_hw, tuple):
            if canvas_hw not in self._anchors_by_canvas:
                self._anchors_by_canvas[canvas_hw] = anchors.multilevel_anchors(
                    canvas_hw, self._strides, sizes, self.aspect_ratios)
            return self._anchors_by_canvas[canvas_hw]
        return anchors.multilevel_anchors_in_graph(canvas_hw, self._strides, sizes,
                                                   self.aspect_ratios)

    def call(self, level_logits, level_deltas, image_info, canvas_hw=None, training=False):
        """level_logits: list of [B, A_l]; level_deltas: list of [B, A_l, 4]; image_info [B, 5];
        canvas_hw: the canvas (H, W) as `level_anchors` takes it, by default `image_size`.

        Returns: proposals float32 [B, P, 4] (canvas pixels), valid bool [B, P]; P is
        post_nms_topk_train when training, else post_nms_topk_test.
        """
        pre_nms_topk = self.pre_nms_topk_train if training else self.pre_nms_topk_test
        post_nms_topk = self.post_nms_topk_train if training else self.post_nms_topk_test
        level_anchors = self.level_anchors(self.image_size if canvas_hw is None else canvas_hw)
        boxes, scores, levels = [], [], []
        for level, (logits, deltas, anchors_l) in enumerate(
                zip(level_logits, level_deltas, level_anchors)):
            # The level's anchor count when the canvas is static; else top-k of at most that.
            count = anchors_l.shape[0] if anchors_l.shape[0] is not None else tf.shape(logits)[1]
            k = (min(pre_nms_topk, count) if isinstance(count, int)
                 else tf.minimum(pre_nms_topk, count))
            top = tf.math.top_k(logits, k=k)
            top_deltas = tf.gather(deltas, top.indices, batch_dims=1)
            top_anchors = tf.gather(tf.convert_to_tensor(anchors_l), top.indices)
            boxes.append(box_coder.decode_boxes(top_deltas, top_anchors, self.box_coder_weights))
            scores.append(top.values)
            levels.append(tf.fill(tf.shape(top.indices), level))
        boxes = tf.concat(boxes, axis=1)
        scores = tf.concat(scores, axis=1)
        levels = tf.concat(levels, axis=1)
        boxes = box_ops.clip_boxes(boxes, image_info[:, 1:2], image_info[:, 2:3])
        heights, widths = box_ops.box_sizes(boxes)
        large_enough = (heights >= self.min_box_size) & (widths >= self.min_box_size)
        scores = tf.where(large_enough, scores, nms.INVALID_SCORE)
        indices, valid = nms.batched_padded_nms(
            boxes, scores, post_nms_topk, self.nms_threshold, group_ids=levels)
        proposals = tf.gather(boxes, indices, batch_dims=1)
        return tf.stop_gradient(proposals), valid

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "min_level": self.min_level,
                "anchor_sizes": self.anchor_sizes, "aspect_ratios": self.aspect_ratios,
                "pre_nms_topk_train": self.pre_nms_topk_train, "pre_nms_topk_test": self.pre_nms_topk_test,
                "post_nms_topk_train": self.post_nms_topk_train,
                "post_nms_topk_test": self.post_nms_topk_test,
                "nms_threshold": self.nms_threshold, "min_box_size": self.min_box_size,
                "box_coder_weights": self.box_coder_weights}

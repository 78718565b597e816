"""MaskRCNN: the whole model as one `keras.Model`.

Shapes: B batch, H×W canvas, G ground-truth instances, P proposals, R sampled RoIs,
K detections, C foreground classes, M mask size (28).

Inputs are dicts. Inference needs `images` float32 [B, H, W, 3] (0..255, from
`preprocessing.resize_and_pad`) and `image_info` [B, 5]; training adds `gt_boxes`
[B, G, 4] (canvas pixels), `gt_classes` int32 [B, G] (labels 1..C, 0 = padding) and
`gt_masks` [B, G, S, S] (mini-masks, see `ops.masks`). Under a mixed-precision dtype policy
(`precision`) the backbone and heads compute in bfloat16 or float16 while box decoding, NMS,
RoIAlign's sampling coordinates and the losses stay float32. `call()` returns the export
contract (docs/design.md §6.1): `detection_boxes` [B, K, 4] in original-image pixels,
`detection_scores` [B, K], `detection_classes` int32 [B, K] (dataset category ids, 0 on
padding), `num_detections` int32 [B], `detection_masks` [B, K, M, M] probabilities.
"""

import keras
import tensorflow as tf

from keras_maskrcnn import losses as loss_fns, preprocessing, targets
from keras_maskrcnn.backbones import get_backbone
from keras_maskrcnn.config import BACKBONE_PARTS, MaskRCNNConfig
from keras_maskrcnn.layers.detections import DetectionLayer
from keras_maskrcnn.layers.fpn import FPN
from keras_maskrcnn.layers.mask_head import MaskHead
from keras_maskrcnn.layers.proposals import ProposalLayer
from keras_maskrcnn.layers.roi_heads import BoxHead
from keras_maskrcnn.layers.rpn import RPNHead
from keras_maskrcnn.ops.replicas import replica_index, sum_over_replicas
from keras_maskrcnn.private_api import BuildOptimizerBeforeFit, nested_layers
from keras_maskrcnn.ops.roi_align import (multilevel_roi_align, multilevel_roi_align_by_level,
                                          multilevel_roi_align_gather)


LOSS_NAMES = ("rpn_objectness", "rpn_box", "roi_class", "roi_box", "mask")
# Validation's sampling seed step: training steps count up from 0, so they never meet it.
VALIDATION_SAMPLING_STEP = -1
NUM_ROI_LEVELS = 4  # RoIAlign reads P2..P5; P6 only feeds the RPN
# The two agree (docs/design.md §4.4, §7.2). "gather" is made of TFLite builtin ops, which the
# TFLite export needs, and is the default: its gradient is deterministic on CPU, so a seeded run
# that resumes from a backup ends with the same weights as an uninterrupted one (crop_and_resize's
# image gradient accumulates in a varying order: 6e-5 apart), and a training step of `tiny` takes
# about the same time with either (bench/bench_core.py measures both).
ROI_ALIGN_IMPLS = {"crop_and_resize": multilevel_roi_align, "gather": multilevel_roi_align_gather}
# The two ways inference runs (`MaskRCNN.infer`), each named for where it runs; each runtime
# picks its own in one place: `inference.KerasPredictor` and the SavedModel export take
# HOST_PATH, `model(inputs)` and the TFLite export STATIC_PATH.
STATIC_PATH = "static"
HOST_PATH = "host"
INFERENCE_PATHS = (STATIC_PATH, HOST_PATH)


@keras.saving.register_keras_serializable("keras_maskrcnn")
class MaskRCNN(BuildOptimizerBeforeFit, keras.Model):
    """Mask R-CNN (He et al. 2017) with a ResNet- or MobileNetV3-FPN backbone; see the module
    docstring. `roi_align_impl` (ROI_ALIGN_IMPLS) is the RoIAlign that training and the
    STATIC_PATH run; the HOST_PATH has its own (`infer`)."""

    def __init__(self, config, seed=0, roi_align_impl="gather", **kwargs):
        # The model takes its inputs (pixels, image_info, boxes) in float32 whatever the dtype
        # policy; its layers compute in the policy's dtype (`precision`).
        super().__init__(**{"dtype": "float32", **kwargs})
        if isinstance(config, dict):
            config = MaskRCNNConfig.from_dict(config)
        if roi_align_impl not in ROI_ALIGN_IMPLS:
            raise ValueError(f"unknown roi_align_impl {roi_align_impl!r}; "
                             f"choose one of {sorted(ROI_ALIGN_IMPLS)}")
        self.model_config = config
        self.seed = seed
        self.roi_align_impl = roi_align_impl
        c = config
        self.backbone = get_backbone(c.backbone.kind).build(c.backbone)
        self.fpn = FPN(c.fpn.channels, name="fpn")
        self.rpn_head = RPNHead(c.fpn.channels, len(c.anchors.aspect_ratios), name="rpn_head")
        self.proposal_layer = ProposalLayer(
            image_size=c.input.image_size, min_level=c.fpn.min_level, anchor_sizes=c.anchors.sizes,
            aspect_ratios=c.anchors.aspect_ratios, pre_nms_topk_train=c.rpn.pre_nms_topk_train,
            pre_nms_topk_test=c.rpn.pre_nms_topk_test, post_nms_topk_train=c.rpn.post_nms_topk_train,
            post_nms_topk_test=c.rpn.post_nms_topk_test, nms_threshold=c.rpn.nms_threshold,
            min_box_size=c.rpn.min_box_size, box_coder_weights=c.rpn.box_coder_weights,
            dtype="float32", name="proposals")
        self.box_head = BoxHead(c.num_classes, c.roi.fc_dim, name="box_head")
        self.mask_head = MaskHead(c.num_classes, c.mask_head.num_convs, c.mask_head.conv_dim,
                                  name="mask_head")
        self.detection_layer = DetectionLayer(
            score_threshold=c.detection.score_threshold, nms_threshold=c.detection.nms_threshold,
            max_detections=c.detection.max_detections, pre_nms_topk=c.detection.pre_nms_topk,
            min_box_size=c.detection.min_box_size, box_coder_weights=c.roi.box_coder_weights,
            dtype="float32", name="detections")
        self.num_fg_slots = int(c.roi.samples_per_image * c.roi.positive_fraction)
        # Training samples anchors and RoIs with seeds drawn from (seed, step). The step is a
        # weight, saved with the others (a SeedGenerator's state is not), so a run restored from
        # a backup draws what the uninterrupted run would have. Every replica reads the same
        # step; the first one's increment is kept.
        self.sampling_step = self.add_weight(name="sampling_step", shape=(), dtype="int64",
                                             initializer="zeros", trainable=False,
                                             aggregation="only_first_replica")
        self.loss_trackers = [keras.metrics.Mean(name=name) for name in LOSS_NAMES + ("loss",)]
        self._build_by_tracing()

    def _build_by_tracing(self):
        """Create every weight by tracing `call` once on symbolic inputs of batch 1.

        `compute_output_spec` traces once; calling the unbuilt model on the symbolic inputs
        would trace twice (Keras first builds an unbuilt layer by tracing its call, then
        traces it again for the output): tiny's build 1.8 → 1.1 s, R50-FPN's 3.5 → 2.9 s. The
        name scope is the one a call opens, so that weights get the same paths
        (`mask_rcnn/backbone/...`)."""
        height, width = self.model_config.input.image_size
        with keras.name_scope(self.name, caller=self):
            self.compute_output_spec({"images": keras.KerasTensor((1, height, width, 3)),
                                      "image_info": keras.KerasTensor((1, preprocessing.IMAGE_INFO_SIZE))})
        self.built = True

    # Stages shared by inference and training.

    def extract_features(self, images, image_info, training=False):
        """Normalise, zero the padding, run backbone and FPN → [P2, ..., P6]."""
        c = self.model_config.input
        with tf.name_scope("normalize"):
            normalized = (images - tf.constant(c.pixel_mean)) / tf.constant(c.pixel_std)
            rows = tf.range(tf.shape(images)[1], dtype=tf.float32)[None, :, None]
            cols = tf.range(tf.shape(images)[2], dtype=tf.float32)[None, None, :]
            inside = (rows < image_info[:, 1, None, None]) & (cols < image_info[:, 2, None, None])
            normalized = normalized * tf.cast(inside, normalized.dtype)[..., None]
        return self.fpn(self.backbone(normalized, training=training))

    def pool_rois(self, features, boxes, output_size, roi_align=None):
        """RoIAlign of each box from the FPN level its size selects, as the box and mask
        branches pool.

        Args:
          features: the FPN maps (`extract_features`), each [B, H_l, W_l, C]; the first
            NUM_ROI_LEVELS are pooled.
          boxes: [B, N, 4] y1 x1 y2 x2 in canvas pixels.
          output_size: P, the pooled side (`roi.box_pool_size` or `roi.mask_pool_size`).
          roi_align: a multilevel RoIAlign function of `ops.roi_align`; by default the
            model's `roi_align_impl`.
        Returns: [B, N, P, P, C].
        """
        roi = self.model_config.roi
        pool = roi_align or ROI_ALIGN_IMPLS[self.roi_align_impl]
        return pool(features[:NUM_ROI_LEVELS], boxes, output_size, roi.sampling_ratio, roi.aligned,
                    self.model_config.fpn.min_level)

    def box_branch(self, features, rois, roi_align=None):
        """RoIs [B, R, 4] → class logits [B, R, C+1], deltas [B, R, C+1, 4]."""
        with tf.name_scope("box_roi_align"):
            pooled = self.pool_rois(features, rois, self.model_config.roi.box_pool_size, roi_align)
        return self.box_head(pooled)

    def mask_branch(self, features, boxes, roi_align=None):
        """Boxes [B, K, 4] → mask logits [B, K, M, M, C]."""
        with tf.name_scope("mask_roi_align"):
            pooled = self.pool_rois(features, boxes, self.model_config.roi.mask_pool_size,
                                    roi_align)
        return self.mask_head(pooled)

    # Inference.

    def call(self, inputs, training=False):
        """Inference on the STATIC_PATH (see `infer`): what Keras runs (`model(inputs)`,
        `model.predict`) and what the TFLite export converts."""
        return self.infer(inputs, STATIC_PATH)

    def infer(self, inputs, path):
        """Inference (see the module docstring) on one of INFERENCE_PATHS; the two give the same
        detections (tests/test_inference.py):

        - STATIC_PATH: every shape fixed but the canvas's, which TFLite and XLA need: RoIAlign
          by the model's `roi_align_impl`, and the mask head runs on all K detection slots.
        - HOST_PATH: two shortcuts whose shapes are known only at run time, for a host
          (`inference.KerasPredictor`, the SavedModel): RoIAlign pools each box from its own
          level only (`ops.roi_align.multilevel_roi_align_by_level`, whatever `roi_align_impl`
          says), and the mask head runs on the detections only, as torchvision's does.
        """
        if path not in INFERENCE_PATHS:
            raise ValueError(f"unknown inference path {path!r}; choose one of {INFERENCE_PATHS}")
        roi_align = multilevel_roi_align_by_level if path == HOST_PATH else None
        images, image_info = inputs["images"], inputs["image_info"]
        features = self.extract_features(images, image_info)
        rpn_logits, rpn_deltas = self.rpn_head(features)
        proposals, proposal_valid = self.proposal_layer(rpn_logits, rpn_deltas, image_info,
                                                        canvas_hw=canvas_size(images))
        class_logits, box_deltas = self.box_branch(features, proposals, roi_align)
        boxes, scores, labels, valid = self.detection_layer(
            class_logits, box_deltas, proposals, proposal_valid, image_info)
        if path == HOST_PATH:
            mask_logits = self._detections_mask_branch(features, boxes, valid, roi_align)
        else:
            mask_logits = self.mask_branch(features, boxes)
        with tf.name_scope("outputs"):
            channel = tf.maximum(labels - 1, 0)
            masks = tf.gather(tf.transpose(mask_logits, [0, 1, 4, 2, 3]), channel, batch_dims=2)
            masks = (tf.sigmoid(tf.cast(masks, tf.float32))
                     * tf.cast(valid, tf.float32)[..., None, None])
            return self._contract_outputs(boxes, scores, labels, valid, masks, image_info)

    def _detections_mask_branch(self, features, boxes, valid, roi_align):
        """`mask_branch` run on the detections only → [B, K, M, M, C], zeros past them.
        Detections come first in their K slots (sorted by score); the rest are padding."""
        count = tf.reduce_max(tf.reduce_sum(tf.cast(valid, tf.int32), axis=1))
        mask_logits = self.mask_branch(features, boxes[:, :count], roi_align)
        padding = tf.shape(boxes)[1] - count
        return tf.pad(mask_logits, [[0, 0], [0, padding], [0, 0], [0, 0], [0, 0]])

    def _contract_outputs(self, boxes, scores, labels, valid, masks, image_info):
        """Boxes back to original pixels and labels back to dataset ids (docs/design.md §6.1)."""
        original_boxes = preprocessing.boxes_to_original(boxes, image_info)
        original_hw = tf.tile(image_info[:, None, 3:5], [1, 1, 2])
        original_boxes = tf.minimum(tf.maximum(original_boxes, 0.0), original_hw)
        category_ids = tf.constant((0,) + self.model_config.dataset_category_ids(), tf.int32)
        return {
            "detection_boxes": original_boxes,
            "detection_scores": scores,
            "detection_classes": tf.gather(category_ids, labels),
            "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32), axis=1),
            "detection_masks": masks,
        }

    # Training.

    def image_sampling_seeds(self, step, batch):
        """Each image's sampling seeds, int64 [2, B, 2]: anchors' then RoIs'.

        Drawn from (model seed, `step`, the image's index in the global batch), so a global
        batch samples the same anchors and RoIs however it is split over replicas: replica r
        holds images r·B .. r·B + B − 1 (`training.distributed_batches` feeds them so).
        As `tf.random.experimental.stateless_fold_in`, vectorised over the images.
        """
        step_seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        keys = tf.random.stateless_uniform([2], step_seed, minval=None, maxval=None,
                                           dtype=tf.int64)
        first = tf.cast(replica_index() * batch, tf.int64)
        indices = first + tf.range(tf.cast(batch, tf.int64))
        return tf.stack([tf.broadcast_to(keys[:, None], [2, batch]),
                         tf.broadcast_to(indices[None], [2, batch])], axis=-1)

    def compute_losses(self, inputs, training=True):
        """The five weighted losses and their sum, as a dict of scalars.

        With `training`, batch norms that train normalise with the batch's statistics and
        update theirs, and anchors and RoIs are sampled with the next training seed. Without
        (validation), batch norms use their statistics and the sampling seed is the same every
        time: validating changes nothing a training run depends on. Under a tf.distribute
        strategy each replica returns its share of the global batch's losses (`losses`).
        """
        c = self.model_config
        images, image_info = inputs["images"], inputs["image_info"]
        gt_boxes = tf.cast(inputs["gt_boxes"], tf.float32)
        gt_classes = tf.cast(inputs["gt_classes"], tf.int32)
        gt_masks = tf.cast(inputs["gt_masks"], tf.float32)
        if training:
            step = self.sampling_step.value
            self.sampling_step.assign_add(1)
        else:
            step = VALIDATION_SAMPLING_STEP
        seeds = self.image_sampling_seeds(step, tf.shape(images)[0])

        features = self.extract_features(images, image_info, training=training)
        rpn_logits, rpn_deltas = self.rpn_head(features)
        canvas_hw = canvas_size(images)
        anchors = tf.concat([tf.convert_to_tensor(level) for level in
                             self.proposal_layer.level_anchors(canvas_hw)], axis=0)
        rpn = targets.rpn_targets(
            anchors, gt_boxes, gt_classes > 0, c.rpn.fg_iou_threshold,
            c.rpn.bg_iou_threshold, c.rpn.samples_per_image, c.rpn.positive_fraction,
            c.rpn.box_coder_weights, seeds[0])
        proposals, proposal_valid = self.proposal_layer(rpn_logits, rpn_deltas, image_info,
                                                        canvas_hw=canvas_hw, training=True)
        rois = targets.roi_targets(
            proposals, proposal_valid, gt_boxes, gt_classes, c.roi.samples_per_image,
            c.roi.positive_fraction, c.roi.fg_iou_threshold, c.roi.box_coder_weights, seeds[1])
        class_logits, box_deltas = self.box_branch(features, rois.rois)
        fg_slots = self.num_fg_slots
        mask_logits = self.mask_branch(features, rois.rois[:, :fg_slots])
        mask_targets = targets.mask_targets(rois, gt_masks, gt_boxes, fg_slots, c.mask_size)

        # Losses in float32 whatever the heads compute in.
        class_logits, box_deltas, mask_logits = (tf.cast(t, tf.float32) for t in (
            class_logits, box_deltas, mask_logits))
        beta, normalizer = c.loss.smooth_l1_beta, c.loss.box_normalizer
        values = {
            "rpn_objectness": loss_fns.rpn_objectness_loss(
                tf.cast(tf.concat(rpn_logits, axis=1), tf.float32), rpn.sampled_fg, rpn.sampled_bg),
            "rpn_box": loss_fns.rpn_box_loss(
                tf.cast(tf.concat(rpn_deltas, axis=1), tf.float32), rpn.box_targets, rpn.sampled_fg, rpn.sampled_bg,
                beta, normalizer),
            "roi_class": loss_fns.roi_class_loss(class_logits, rois.class_targets, rois.valid),
            "roi_box": loss_fns.roi_box_loss(
                box_deltas, rois.class_targets, rois.box_targets, rois.is_fg, rois.valid, beta,
                normalizer),
            "mask": loss_fns.mask_loss(
                mask_logits, rois.class_targets[:, :fg_slots], mask_targets, rois.is_fg[:, :fg_slots]),
        }
        weighted = {name: value * getattr(c.loss, name) for name, value in values.items()}
        weighted["loss"] = tf.add_n(list(weighted.values()))
        return weighted

    def train_step(self, data):
        """One step on this replica's slice of the global batch.

        The replicas' gradients are summed here, before the optimiser sees them, so that
        clipping and the float16 loss scale's finiteness test see the global batch's gradient
        (`optimization.make_optimizer`'s optimisers do not sum them again).
        """
        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            losses = self.compute_losses(inputs)
            scaled_loss = self.optimizer.scale_loss(losses["loss"])
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(sum_over_replicas(gradients), self.trainable_variables)
        return self._track(sum_over_replicas(losses))

    def test_step(self, data):
        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._track(sum_over_replicas(self.compute_losses(inputs, training=False)))

    def _track(self, losses):
        for tracker in self.loss_trackers:
            tracker.update_state(losses[tracker.name])
        results = {tracker.name: tracker.result() for tracker in self.loss_trackers}
        if _spans_workers(tf.distribute.get_strategy()):
            # Keras reduces a step's outputs over workers with strategy.reduce(MEAN, axis=0),
            # which needs an axis to reduce (keras-team/keras#20585): give it one of length 1.
            results = {name: value[None] for name, value in results.items()}
        return results

    @property
    def metrics(self):
        return list(self.loss_trackers)

    # Fine-tuning.

    def freeze_backbone_stages(self, trainable_stages):
        """Let only the last `trainable_stages` of the backbone's BACKBONE_PARTS parts train, as
        torchvision's `trainable_layers`: 0 freezes the backbone, 1..4 train that many ResNet
        stages from the deepest (C5) down with the stem frozen, 5 trains everything.

        A MobileNetV3 backbone takes 0 or 5 only. The frozen parts' "bn" batch norms keep their
        moving statistics too; batch norms the config freezes ("frozen_bn") stay frozen at 5.
        Call before `compile`.
        """
        if not 0 <= trainable_stages <= BACKBONE_PARTS:
            raise ValueError(f"trainable_stages must lie in 0..{BACKBONE_PARTS}, "
                             f"got {trainable_stages}")
        stages = get_backbone(self.model_config.backbone.kind).stages
        if stages is not None:
            parts = stages(self.backbone)
        elif trainable_stages in (0, BACKBONE_PARTS):
            parts = [[self.backbone]]
        else:
            raise ValueError(f"trainable_stages {trainable_stages}: a "
                             f"{self.model_config.backbone.kind} backbone trains whole "
                             f"({BACKBONE_PARTS}) or not at all (0); its stages cannot be counted")
        first_trainable = len(parts) - trainable_stages
        for index, part in enumerate(parts):
            for layer in part:
                layer.trainable = index >= first_trainable
        if self.model_config.backbone.norm == "frozen_bn":
            # Setting `trainable` reaches every sublayer, keras' frozen BatchNormalizations too
            # (FrozenBatchNorm's weights are never trainable).
            for layer in nested_layers(self.backbone):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False

    def get_config(self):
        return {"config": self.model_config.to_dict(), "seed": self.seed,
                "roi_align_impl": self.roi_align_impl, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def canvas_size(images):
    """The canvas (H, W) of images [B, H, W, 3]: Python ints when the graph knows them, else an
    int32 tensor [2] (a canvas per image batch, `preprocessing.canvas_for`)."""
    height, width = images.shape[1:3]
    if height is not None and width is not None:
        return int(height), int(width)
    return tf.shape(images)[1:3]


def _spans_workers(strategy):
    """Whether `strategy` replicates over several workers (processes), not only local devices."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.num_replicas_in_sync > len(strategy.extended.worker_devices))


def rebuild(model, config=None, roi_align_impl=None):
    """A new `MaskRCNN` with `model`'s weights and another config or RoIAlign implementation.

    The config may change anything that keeps every weight's shape, such as the canvas size
    (`input.image_size`): anchors depend on it, weights do not.
    """
    copy = MaskRCNN(config or model.model_config, seed=model.seed,
                    roi_align_impl=roi_align_impl or model.roi_align_impl, name=model.name)
    copy.set_weights(model.get_weights())
    return copy

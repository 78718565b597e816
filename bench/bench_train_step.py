"""Where one training step's time goes: each stage of `MaskRCNN.compute_losses` timed alone,
forward and forward + backward, on a batch of the shapes set; and the whole step through
`model.fit`. Writes JSON (default bench/results/train_step.json).

Each stage is a tf.function of its own, fed the previous stages' outputs computed once, so the
stages' times add up to about the whole step's (the rest is the optimiser, the loss metrics and
what fusing stages saves). Backward is taken with respect to the stage's weights and, for
RoIAlign, its input features. Compare numbers from one run only.

  .venv/bin/python bench/bench_train_step.py [--preset tiny] [--batch-size 8] \\
      [--precision float32|bfloat16] [--roi-align-impl gather|crop_and_resize]
"""

import argparse
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from benchutil import machine_info, write_report
from keras_maskrcnn import targets
from keras_maskrcnn.config import preset
from keras_maskrcnn.data import CocoDataset, make_dataset, make_shapes
from keras_maskrcnn.model import MaskRCNN
from keras_maskrcnn.optimization import make_optimizer
from keras_maskrcnn.precision import dtype_policy

SHAPES_IMAGES = 64


def milliseconds(function, repeats):
    """Median wall time of `function()` in ms, after one call that traces it."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda tensor: tensor.numpy(), function())
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def forward_and_backward(stage, sources):
    """A tf.function returning the gradients of the sum of `stage()`'s outputs w.r.t.
    `sources` (tensors or Keras variables)."""
    sources = [getattr(source, "value", source) for source in sources]

    @tf.function
    def gradients():
        with tf.GradientTape() as tape:
            tape.watch(sources)
            total = tf.add_n([tf.reduce_sum(tf.cast(output, tf.float32))
                              for output in tf.nest.flatten(stage())])
        return [gradient for gradient in tape.gradient(total, sources) if gradient is not None]
    return gradients


def stage_times(model, inputs, repeats):
    """Stage name → {"forward_ms", "forward_backward_ms" (for stages with weights)}."""
    c = model.model_config
    images, image_info = inputs["images"], inputs["image_info"]
    gt_boxes, gt_classes = inputs["gt_boxes"], tf.cast(inputs["gt_classes"], tf.int32)
    gt_masks = tf.cast(inputs["gt_masks"], tf.float32)
    seeds = model.image_sampling_seeds(0, tf.shape(images)[0])
    fg_slots = model.num_fg_slots
    anchors = tf.constant(np.concatenate(
        model.proposal_layer.level_anchors(tuple(images.shape[1:3])), axis=0))

    features = model.extract_features(images, image_info, training=True)
    rpn_logits, rpn_deltas = model.rpn_head(features)
    proposals, proposal_valid = model.proposal_layer(rpn_logits, rpn_deltas, image_info,
                                                     training=True)
    rois = targets.roi_targets(proposals, proposal_valid, gt_boxes, gt_classes,
                               c.roi.samples_per_image, c.roi.positive_fraction,
                               c.roi.fg_iou_threshold, c.roi.box_coder_weights, seeds[1])
    box_pooled = model.pool_rois(features, rois.rois, c.roi.box_pool_size)
    mask_pooled = model.pool_rois(features, rois.rois[:, :fg_slots], c.roi.mask_pool_size)

    def weights(*layers):
        return [variable for layer in layers for variable in layer.trainable_variables]

    # name → (stage, what its backward differentiates; None: no weights, forward only)
    stages = {
        "backbone_fpn": (lambda: model.extract_features(images, image_info, training=True),
                         weights(model.backbone, model.fpn)),
        "rpn_head": (lambda: model.rpn_head(features), weights(model.rpn_head)),
        "proposals_topk_nms": (lambda: model.proposal_layer(
            rpn_logits, rpn_deltas, image_info, training=True), None),
        "rpn_targets": (lambda: targets.rpn_targets(
            anchors, gt_boxes, gt_classes > 0, c.rpn.fg_iou_threshold,
            c.rpn.bg_iou_threshold, c.rpn.samples_per_image, c.rpn.positive_fraction,
            c.rpn.box_coder_weights, seeds[0]), None),
        "roi_targets": (lambda: targets.roi_targets(
            proposals, proposal_valid, gt_boxes, gt_classes, c.roi.samples_per_image,
            c.roi.positive_fraction, c.roi.fg_iou_threshold, c.roi.box_coder_weights,
            seeds[1]), None),
        "roi_align_box": (lambda: model.pool_rois(features, rois.rois, c.roi.box_pool_size),
                          list(features)),
        "roi_align_mask": (lambda: model.pool_rois(features, rois.rois[:, :fg_slots],
                                                   c.roi.mask_pool_size), list(features)),
        "box_head": (lambda: model.box_head(box_pooled), weights(model.box_head)),
        "mask_head": (lambda: model.mask_head(mask_pooled), weights(model.mask_head)),
        "mask_targets": (lambda: targets.mask_targets(rois, gt_masks, gt_boxes, fg_slots,
                                                      c.mask_size), None),
        "all_losses": (lambda: model.compute_losses(inputs, training=True)["loss"],
                       model.trainable_variables),
    }
    times = {}
    for name, (stage, sources) in stages.items():
        times[name] = {"forward_ms": round(milliseconds(tf.function(stage), repeats), 1)}
        if sources is not None:
            times[name]["forward_backward_ms"] = round(
                milliseconds(forward_and_backward(stage, sources), repeats), 1)
        print(name, times[name], flush=True)
    return times


def fit_step_milliseconds(model, batch, steps):
    """Wall time of one `model.fit` step on a repeated batch, after a warm-up fit."""
    model.compile(optimizer=make_optimizer("adam", 1e-4))
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return 1000 * (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--roi-align-impl", choices=("gather", "crop_and_resize"),
                        default="gather")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=os.path.join("bench", "results", "train_step.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        train_file, _ = make_shapes(folder, SHAPES_IMAGES, 1, seed=0)
        shapes = CocoDataset(train_file)
        config = preset(args.preset, num_classes=shapes.num_classes,
                        category_ids=tuple(shapes.category_ids))
        batch = next(iter(make_dataset(shapes, config.input.image_size, args.batch_size, 16,
                                       config.mask_head.gt_mask_size, training=True, seed=0)))
    keras.utils.set_random_seed(0)
    with dtype_policy(args.precision):
        model = MaskRCNN(config, roi_align_impl=args.roi_align_impl)
        times = stage_times(model, batch, args.repeats)
        fit_ms = fit_step_milliseconds(model, batch, 2 * args.repeats)
    write_report({"machine": machine_info(tensorflow=tf.__version__, keras=keras.__version__),
                  "settings": vars(args), "image_size": list(config.input.image_size),
                  "rois_per_image": config.roi.samples_per_image,
                  "mask_rois_per_image": model.num_fg_slots, "stages": times,
                  "fit_step_ms": round(fit_ms, 1),
                  "fit_images_per_second": round(1000 * args.batch_size / fit_ms, 1)}, args.out)


if __name__ == "__main__":
    main()

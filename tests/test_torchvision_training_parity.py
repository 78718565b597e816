"""Training parity with torchvision: our five losses against torchvision's own loss code on
identical tensors, coupled-decay SGD against torch.optim.SGD and Adam with decoupled decay
against torch.optim.AdamW.

What is compared, on seeded random tensors for batches of 1 to 3 images with many, few and no
positives and different counts per image:
- RPN: `RegionProposalNetwork.compute_loss` of an instance whose sampler keeps every labelled
  anchor (batch_size_per_image = all anchors, positive_fraction 1), given labels 1 on our
  sampled positives, 0 on our sampled negatives and -1 elsewhere: it samples what we did.
- RoI heads: `fastrcnn_loss` on each image's sampled RoIs; our padding slots, which torchvision
  does not have, hold large values that must not count.
- Masks: `maskrcnn_loss` projects ground-truth masks onto RoIs itself (`project_masks_on_boxes`,
  RoIAlign). Each positive RoI gets its own M × M ground-truth mask equal to our target and the
  box (-0.5, -0.5, M - 0.5, M - 0.5): RoIAlign then samples exactly the pixel centres (one
  sample per bin, not aligned), so the projection is the identity (asserted) and the loss itself
  is compared, on our targets. Our target cutting is tested in test_masks.py.
"""

import keras
import numpy as np
import pytest

from keras_maskrcnn import losses, optimization
from torch_imports import import_torch

NUM_ANCHORS = 64
NUM_ROI_SLOTS = 24
NUM_FG_SLOTS = 8
NUM_CLASSES = 3  # foreground
MASK_SIZE = 8
BETA = 1 / 9  # torchvision's, fixed in its box losses
RTOL = 1e-5

# Per image (positives, negatives): many, few and no positives, with batch sizes 1 to 3.
ANCHOR_CASES = {"many": [(30, 34), (20, 40)], "few": [(1, 60), (3, 50), (2, 7)],
                "none": [(0, 64), (0, 40)], "one_image": [(12, 52)]}
ROI_CASES = {"many": [(8, 16), (5, 10)], "few": [(1, 20), (2, 9), (1, 3)],
             "none": [(0, 24), (0, 11)], "one_image": [(6, 18)]}


def _sampled_masks(rng, counts, size):
    """fg, bg bool [B, size]: per image `counts` (positives, negatives) at random places."""
    fg, bg = np.zeros((len(counts), size), bool), np.zeros((len(counts), size), bool)
    for image, (num_fg, num_bg) in enumerate(counts):
        order = rng.permutation(size)
        fg[image, order[:num_fg]] = True
        bg[image, order[num_fg:num_fg + num_bg]] = True
    return fg, bg


def _rpn_inputs(counts, seed=0):
    rng = np.random.default_rng(seed)
    batch = len(counts)
    logits = rng.normal(size=(batch, NUM_ANCHORS)).astype(np.float32)
    # Differences around β reach both branches of smooth L1.
    pred = rng.normal(scale=0.2, size=(batch, NUM_ANCHORS, 4)).astype(np.float32)
    target = rng.normal(scale=0.2, size=(batch, NUM_ANCHORS, 4)).astype(np.float32)
    fg, bg = _sampled_masks(rng, counts, NUM_ANCHORS)
    return logits, pred, target, fg, bg


def _roi_inputs(counts, seed=0):
    """Our RoI layout: per image positives first, then negatives, then padding (invalid)."""
    rng = np.random.default_rng(seed)
    batch = len(counts)
    class_logits = rng.normal(size=(batch, NUM_ROI_SLOTS, NUM_CLASSES + 1)).astype(np.float32)
    deltas = rng.normal(scale=0.2, size=(batch, NUM_ROI_SLOTS, NUM_CLASSES + 1, 4)).astype(np.float32)
    targets = rng.normal(scale=0.2, size=(batch, NUM_ROI_SLOTS, 4)).astype(np.float32)
    mask_logits = rng.normal(size=(batch, NUM_FG_SLOTS, MASK_SIZE, MASK_SIZE, NUM_CLASSES))
    mask_targets = rng.integers(0, 2, size=(batch, NUM_FG_SLOTS, MASK_SIZE, MASK_SIZE))
    slot = np.arange(NUM_ROI_SLOTS)[None]
    num_fg = np.array([fg for fg, _ in counts])[:, None]
    num_valid = num_fg + np.array([bg for _, bg in counts])[:, None]
    is_fg, valid = slot < num_fg, slot < num_valid
    classes = np.where(is_fg, rng.integers(1, NUM_CLASSES + 1, size=is_fg.shape), 0).astype(np.int32)
    padding = ~valid
    class_logits[padding], deltas[padding], targets[padding] = 50.0, 50.0, -50.0
    return (class_logits, deltas, targets, classes, is_fg, valid,
            mask_logits.astype(np.float32), mask_targets.astype(np.float32))


def _torchvision_rpn_losses(logits, pred, target, fg, bg):
    torch, _ = import_torch()
    from torchvision.models.detection.rpn import RegionProposalNetwork

    rpn = RegionProposalNetwork(None, None, 0.7, 0.3, batch_size_per_image=NUM_ANCHORS,
                                positive_fraction=1.0, pre_nms_top_n={}, post_nms_top_n={},
                                nms_thresh=0.7)
    labels = [torch.from_numpy(np.where(f, 1.0, np.where(b, 0.0, -1.0)).astype(np.float32))
              for f, b in zip(fg, bg)]
    objectness, box = rpn.compute_loss(
        torch.from_numpy(logits.reshape(-1, 1)), torch.from_numpy(pred.reshape(-1, 4)), labels,
        list(torch.from_numpy(target)))
    return float(objectness), float(box)


def _torchvision_roi_losses(class_logits, deltas, targets, classes, valid):
    torch, _ = import_torch()
    from torchvision.models.detection.roi_heads import fastrcnn_loss

    counts = valid.sum(axis=1)
    class_loss, box_loss = fastrcnn_loss(
        torch.from_numpy(np.concatenate([l[:n] for l, n in zip(class_logits, counts)])),
        torch.from_numpy(np.concatenate([d[:n].reshape(n, -1) for d, n in zip(deltas, counts)])),
        [torch.from_numpy(c[:n].astype(np.int64)) for c, n in zip(classes, counts)],
        [torch.from_numpy(t[:n]) for t, n in zip(targets, counts)])
    return float(class_loss), float(box_loss)


def _torchvision_mask_loss(mask_logits, mask_targets, classes, is_fg):
    torch, _ = import_torch()
    from torchvision.models.detection.roi_heads import maskrcnn_loss, project_masks_on_boxes

    counts = is_fg[:, :NUM_FG_SLOTS].sum(axis=1)
    # torchvision's predictor has a channel per label 0..C; ours per foreground class 1..C.
    channels_first = np.moveaxis(mask_logits, -1, 2)
    with_background = np.concatenate([np.zeros_like(channels_first[:, :, :1]), channels_first], 2)
    identity_box = torch.tensor([-0.5, -0.5, MASK_SIZE - 0.5, MASK_SIZE - 0.5])
    gt_masks = [torch.from_numpy(m[:n]) for m, n in zip(mask_targets, counts)]
    boxes = [identity_box.repeat(int(n), 1) for n in counts]
    matched = [torch.arange(int(n)) for n in counts]
    for masks, box, index in zip(gt_masks, boxes, matched):
        assert torch.equal(project_masks_on_boxes(masks, box, index, MASK_SIZE), masks)
    loss = maskrcnn_loss(
        torch.from_numpy(np.concatenate([l[:n] for l, n in zip(with_background, counts)])),
        boxes, gt_masks, [torch.from_numpy(c[:n].astype(np.int64)) for c, n in zip(classes, counts)],
        matched)
    return float(loss)


@pytest.mark.parametrize("case", sorted(ANCHOR_CASES))
def test_rpn_losses_equal_torchvisions_compute_loss(case):
    logits, pred, target, fg, bg = _rpn_inputs(ANCHOR_CASES[case])
    objectness = losses.rpn_objectness_loss(logits, fg, bg).numpy()
    box = losses.rpn_box_loss(pred, target, fg, bg, BETA, "sampled").numpy()
    np.testing.assert_allclose([objectness, box], _torchvision_rpn_losses(logits, pred, target, fg, bg),
                               rtol=RTOL)


@pytest.mark.parametrize("case", sorted(ROI_CASES))
def test_roi_and_mask_losses_equal_torchvisions(case):
    (class_logits, deltas, targets, classes, is_fg, valid,
     mask_logits, mask_targets) = _roi_inputs(ROI_CASES[case])
    ours = [losses.roi_class_loss(class_logits, classes, valid).numpy(),
            losses.roi_box_loss(deltas, classes, targets, is_fg, valid, BETA, "sampled").numpy(),
            losses.mask_loss(mask_logits, classes[:, :NUM_FG_SLOTS], mask_targets,
                             is_fg[:, :NUM_FG_SLOTS]).numpy()]
    theirs = [*_torchvision_roi_losses(class_logits, deltas, targets, classes, valid),
              _torchvision_mask_loss(mask_logits, mask_targets, classes, is_fg)]
    np.testing.assert_allclose(ours, theirs, rtol=RTOL)


def _smooth_l1_sum(diff):
    diff = np.abs(diff.astype(np.float64))
    return np.where(diff < BETA, 0.5 * diff ** 2 / BETA, diff - 0.5 * BETA).sum()


def test_positives_normalizer_keeps_the_mean_per_positive():
    logits, pred, target, fg, bg = _rpn_inputs(ANCHOR_CASES["few"])
    rpn = losses.rpn_box_loss(pred, target, fg, bg, BETA, "positives").numpy()
    np.testing.assert_allclose(rpn, _smooth_l1_sum((pred - target)[fg]) / fg.sum(), rtol=RTOL)

    _, deltas, targets, classes, is_fg, valid, _, _ = _roi_inputs(ROI_CASES["many"])
    roi = losses.roi_box_loss(deltas, classes, targets, is_fg, valid, BETA, "positives").numpy()
    class_deltas = np.take_along_axis(deltas, classes[..., None, None], axis=2)[:, :, 0]
    np.testing.assert_allclose(roi, _smooth_l1_sum((class_deltas - targets)[is_fg]) / is_fg.sum(),
                               rtol=RTOL)


LEARNING_RATE = 0.02
WEIGHT_DECAY = 1e-4
OPTIMIZER_STEPS = 100


def _optimizer_runs(optimizer, reference_name, schedule=None, **reference_options):
    """Run `optimizer` and torch.optim's `reference_name` (given `reference_options`, its
    weight decay off for "gamma") for OPTIMIZER_STEPS on a kernel [5, 3] and a scale [3] with
    one seeded gradient sequence, torch's learning rate set from `schedule` (step → rate)
    before each step when given. Returns (ours, torch's) final values, each a list of arrays."""
    torch, _ = import_torch()
    rng = np.random.default_rng(0)
    initial = [rng.normal(size=(5, 3)), rng.uniform(0.5, 1.5, size=3)]
    gradients = [[rng.normal(size=value.shape) for value in initial]
                 for _ in range(OPTIMIZER_STEPS)]

    ours = [keras.Variable(value.astype(np.float32), name=name)
            for value, name in zip(initial, ("kernel", "gamma"))]
    theirs = [torch.tensor(value, dtype=torch.float32, requires_grad=True) for value in initial]
    reference = getattr(torch.optim, reference_name)(
        [{"params": theirs[:1]}, {"params": theirs[1:], "weight_decay": 0.0}], **reference_options)
    for index, step in enumerate(gradients):
        optimizer.apply([value.astype(np.float32) for value in step], ours)
        for parameter, value in zip(theirs, step):
            parameter.grad = torch.tensor(value, dtype=torch.float32)
        if schedule is not None:
            for group in reference.param_groups:
                group["lr"] = float(schedule(index))
        reference.step()
    return [v.numpy() for v in ours], [p.detach().numpy() for p in theirs]


def _sgd_runs(optimizer, schedule=None):
    """`_optimizer_runs` against torch.optim.SGD (momentum 0.9, L2 decay WEIGHT_DECAY)."""
    return _optimizer_runs(optimizer, "SGD", schedule, lr=LEARNING_RATE,
                           momentum=optimization.SGD_MOMENTUM, weight_decay=WEIGHT_DECAY)


def test_coupled_weight_decay_sgd_equals_torch_sgd():
    ours, theirs = _sgd_runs(optimization.make_optimizer(
        "sgd", LEARNING_RATE, weight_decay=WEIGHT_DECAY, weight_decay_mode="coupled"))
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-6)


def test_torch_sgd_follows_torch_through_warmup_and_rate_steps():
    """Keras' SGD keeps the rate inside its velocity and drifts from torch's whenever the rate
    changes (by 1.2 at step 100 here); TorchSGD applies the current rate to torch's buffer."""
    schedule = optimization.WarmupSchedule(LEARNING_RATE, total_steps=OPTIMIZER_STEPS,
                                           warmup_steps=10, kind="step", step_fractions=(0.5, 0.8))
    ours, theirs = _sgd_runs(optimization.make_optimizer(
        "sgd", schedule, weight_decay=WEIGHT_DECAY, weight_decay_mode="coupled"), schedule)
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-6)


def test_decoupled_weight_decay_differs_from_torch_sgd_measurably():
    """The comparison above can tell the two decays apart."""
    ours, theirs = _sgd_runs(optimization.make_optimizer(
        "sgd", LEARNING_RATE, weight_decay=WEIGHT_DECAY, weight_decay_mode="decoupled"))
    assert np.abs(ours[0] - theirs[0]).max() > 1e-4
    np.testing.assert_allclose(ours[1], theirs[1], rtol=0, atol=1e-6)


def test_decoupled_weight_decay_adam_equals_torch_adamw():
    """`tiny`'s optimiser (Adam 1e-3, decoupled weight decay 0.05, cosine decay) is AdamW."""
    rate, decay = 1e-3, 0.05
    schedule = optimization.WarmupSchedule(rate, total_steps=OPTIMIZER_STEPS)
    adamw = dict(lr=rate, betas=(0.9, 0.999), eps=1e-7)  # Keras' Adam defaults
    ours, theirs = _optimizer_runs(optimization.make_optimizer("adam", schedule, weight_decay=decay),
                                   "AdamW", schedule, weight_decay=decay, **adamw)
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-6)
    undecayed, _ = _optimizer_runs(optimization.make_optimizer("adam", schedule), "AdamW",
                                   schedule, weight_decay=decay, **adamw)
    assert np.abs(undecayed[0] - theirs[0]).max() > 1e-4  # the comparison sees the decay

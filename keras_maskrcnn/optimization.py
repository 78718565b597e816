"""The optimiser and its learning-rate schedule: SGD with momentum or Adam, warm-up, then
cosine decay or steps.

Shapes: none; the schedule maps the optimiser's step counter to a scalar rate.
"""

import math

import keras
from keras import ops

from keras_maskrcnn.train_config import LR_SCHEDULES, OPTIMIZERS

SGD_MOMENTUM = 0.9
STEP_DECAY = 0.1
WARMUP_FACTOR = 1e-3  # warmup starts at this fraction of the learning rate (Detectron2's)
# Normalisation scales and offsets are left out of weight decay: shrinking them changes
# what the layer computes rather than regularising it.
NO_WEIGHT_DECAY = ("gamma", "beta")


@keras.saving.register_keras_serializable("keras_maskrcnn")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine decay to 0 over `total_steps`, or ×STEP_DECAY at each of `step_fractions` of it,
    multiplied during the first `warmup_steps` by a factor rising linearly from WARMUP_FACTOR
    to 1 (Goyal et al. 2017), so large early gradients of a fresh head meet a small rate.
    """

    def __init__(self, learning_rate, total_steps, warmup_steps=0, kind="cosine",
                 step_fractions=()):
        if kind not in LR_SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}; choose one of {LR_SCHEDULES}")
        self.learning_rate = learning_rate
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.kind = kind
        self.step_fractions = tuple(step_fractions)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.kind == "cosine":
            progress = ops.minimum(step / max(self.total_steps, 1), 1.0)
            rate = self.learning_rate * 0.5 * (1.0 + ops.cos(math.pi * progress))
        else:
            passed = sum(ops.cast(step >= fraction * self.total_steps, "float32")
                         for fraction in self.step_fractions)
            rate = self.learning_rate * ops.power(STEP_DECAY, passed)
        if self.warmup_steps > 0:
            ramp = ops.minimum(step / self.warmup_steps, 1.0)
            rate = rate * (WARMUP_FACTOR + (1.0 - WARMUP_FACTOR) * ramp)
        return rate

    def get_config(self):
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "kind": self.kind,
                "step_fractions": self.step_fractions}


def make_optimizer(name, schedule, weight_decay=0.0, clip_norm=None):
    """SGD (momentum SGD_MOMENTUM) or Adam with decoupled weight decay and global-norm clipping.

    `weight_decay` 0 and `clip_norm` None or 0 turn those off.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
    common = {"learning_rate": schedule, "weight_decay": weight_decay or None,
              "global_clipnorm": clip_norm or None}
    optimizer = (keras.optimizers.SGD(momentum=SGD_MOMENTUM, **common) if name == "sgd"
                 else keras.optimizers.Adam(**common))
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    return optimizer

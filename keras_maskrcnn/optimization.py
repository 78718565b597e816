"""The optimiser and its learning-rate schedule: SGD with momentum or Adam, warm-up, then
cosine decay or steps, and weight decay coupled to the gradient (torch's SGD) or decoupled.

Shapes: none; the schedule maps the optimiser's step counter to a scalar rate.
"""

import math

import keras
from keras import ops

from keras_maskrcnn.private_api import GlobalGradients
from keras_maskrcnn.train_config import LR_SCHEDULES, OPTIMIZERS, WEIGHT_DECAY_MODES

SGD_MOMENTUM = 0.9
STEP_DECAY = 0.1
WARMUP_FACTOR = 1e-3  # warmup starts at this fraction of the learning rate (Detectron2's)
# Normalisation scales and offsets are left out of weight decay: shrinking them changes
# what the layer computes rather than regularising it. Biases are decayed, as torchvision's and
# Detectron2's recipes do. Names match as substrings of a variable's name (Keras' rule).
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


@keras.saving.register_keras_serializable("keras_maskrcnn")
class GlobalGradientsSGD(GlobalGradients, keras.optimizers.SGD):
    """Keras' SGD given the global gradients (`GlobalGradients`)."""


@keras.saving.register_keras_serializable("keras_maskrcnn")
class GlobalGradientsAdam(GlobalGradients, keras.optimizers.Adam):
    """Keras' Adam given the global gradients (`GlobalGradients`)."""


@keras.saving.register_keras_serializable("keras_maskrcnn")
class TorchSGD(GlobalGradients, keras.optimizers.SGD):
    """SGD as torch.optim.SGD computes it, torchvision's recipe: weight decay coupled to the
    gradient and momentum applied before the learning rate.

    Each step, for gradient g of variable w: g' = g + wd·w (for every variable whose name holds
    none of `no_decay_names`), buf = momentum·buf + g', w -= lr·buf. Keras' SGD keeps lr inside
    its velocity (v = momentum·v − lr·g), which equals this only while lr is constant, and
    decays decoupled (w -= lr·wd·w). Gradients are clipped (`global_clipnorm`) before the
    decay term joins them, as in a torch loop that clips and then steps. Keras' own
    `weight_decay` and `nesterov` stay off.
    """

    def __init__(self, coupled_weight_decay=0.0, no_decay_names=NO_WEIGHT_DECAY, **kwargs):
        if kwargs.get("weight_decay") or kwargs.get("nesterov"):
            raise ValueError("TorchSGD decays through `coupled_weight_decay`; `weight_decay` "
                             "(decoupled) and `nesterov` must stay off")
        super().__init__(**kwargs)
        self.coupled_weight_decay = coupled_weight_decay
        self.no_decay_names = tuple(no_decay_names)

    def _decays(self, variable):
        return not any(name in variable.name for name in self.no_decay_names)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay and self._decays(variable):
            gradient = ops.add(gradient, ops.multiply(
                ops.cast(self.coupled_weight_decay, variable.dtype), variable))
        if self.momentum != 0:
            buffer = self.momentums[self._get_variable_index(variable)]
            self.assign(buffer, ops.add(
                ops.multiply(buffer, ops.cast(self.momentum, variable.dtype)), gradient))
            gradient = buffer
        self.assign_sub(variable, ops.multiply(gradient, learning_rate))

    def get_config(self):
        config = super().get_config()
        config.update({"coupled_weight_decay": self.coupled_weight_decay,
                       "no_decay_names": list(self.no_decay_names)})
        return config


def make_optimizer(name, schedule, weight_decay=0.0, clip_norm=None,
                   weight_decay_mode="decoupled"):
    """SGD (momentum SGD_MOMENTUM) or Adam with weight decay and global-norm clipping.

    `weight_decay` 0 and `clip_norm` None or 0 turn those off. `weight_decay_mode` is one of
    WEIGHT_DECAY_MODES: "coupled" (SGD only: `TorchSGD`, torch's SGD of torchvision's recipe)
    or "decoupled" (Keras' own). Either leaves NO_WEIGHT_DECAY's variables undecayed.
    The optimisers take gradients already summed over replicas (`GlobalGradients`).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
    if weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"unknown weight_decay_mode {weight_decay_mode!r}; choose one of "
                         f"{WEIGHT_DECAY_MODES}")
    if weight_decay_mode == "coupled" and name != "sgd":
        raise ValueError(f"weight_decay_mode 'coupled' is for SGD; {name} decays decoupled")
    clipping = {"learning_rate": schedule, "global_clipnorm": clip_norm or None}
    if weight_decay_mode == "coupled":
        return TorchSGD(coupled_weight_decay=weight_decay, momentum=SGD_MOMENTUM, **clipping)
    common = {**clipping, "weight_decay": weight_decay or None}
    optimizer = (GlobalGradientsSGD(momentum=SGD_MOMENTUM, **common) if name == "sgd"
                 else GlobalGradientsAdam(**common))
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    return optimizer

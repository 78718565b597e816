"""Mixed precision: which Keras dtype policy each `--precision` builds the model under.

"bfloat16" and "float16" build the layers with Keras' mixed policies: variables stay float32,
convolutions and dense layers compute in the low precision. The model keeps its float32
islands itself (`model` module docstring). The policy is not part of `MaskRCNN.get_config`,
so a saved model loads, and exports, as float32 unless the loading process sets a policy.

bfloat16 pays only on CPUs whose bfloat16 convolutions beat their float32 ones (AVX512-BF16 or
AMX); `conv_rates` measures that, and `precision_line` says it in one line (export, serve).
"""

import contextlib
import dataclasses
import functools
import math
import time

import keras

from keras_maskrcnn.train_config import PRECISIONS

DTYPE_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16",
                  "float16": "mixed_float16"}
assert set(DTYPE_POLICIES) == set(PRECISIONS)


@contextlib.contextmanager
def dtype_policy(precision):
    """Build layers inside this block under `precision`'s policy; the global policy before it
    is restored after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(DTYPE_POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def with_loss_scaling(optimizer, precision):
    """`optimizer` wrapped in a dynamic loss scale for float16 (whose gradients underflow
    without one), as it is otherwise."""
    if precision == "float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


# The probe's convolution: a 3×3, 256→256 conv on a 200×336 map (an r50 FPN level's work at
# 800×1344), in each precision; bfloat16 pays where it runs at least FAST_BFLOAT16 × float32.
PROBE_CONV = {"height": 200, "width": 336, "channels": 256, "kernel": 3}
FAST_BFLOAT16 = 1.5


@dataclasses.dataclass(frozen=True)
class ConvRates:
    """GFLOP/s of the probe convolution in float32 and bfloat16 on this CPU."""
    float32_gflops: float
    bfloat16_gflops: float

    @property
    def ratio(self):
        return self.bfloat16_gflops / self.float32_gflops

    @property
    def bfloat16_is_fast(self):
        return self.ratio >= FAST_BFLOAT16

    def to_dict(self):
        return {**dataclasses.asdict(self), "ratio": self.ratio,
                "bfloat16_is_fast": self.bfloat16_is_fast, "probe": PROBE_CONV,
                "fast_ratio": FAST_BFLOAT16}


@functools.lru_cache(maxsize=None)
def conv_rates(repeats=3):
    """This CPU's `ConvRates` on PROBE_CONV, each the best of `repeats` timed runs after a
    warm-up (about a second per precision on 2 cores); measured once per process."""
    import tensorflow as tf

    c = PROBE_CONV
    shape = (1, c["height"], c["width"], c["channels"])
    flops = 2 * c["height"] * c["width"] * c["channels"] ** 2 * c["kernel"] ** 2
    rates = {}
    for dtype in (tf.float32, tf.bfloat16):
        images = tf.cast(tf.random.stateless_normal(shape, (0, 1)), dtype)
        kernel = tf.cast(tf.random.stateless_normal(
            (c["kernel"], c["kernel"], c["channels"], c["channels"]), (0, 2)) * 0.02, dtype)
        conv = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"))
        conv(images, kernel).numpy()  # warm-up: tracing and the kernel's first run
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            conv(images, kernel).numpy()
            best = min(best, time.perf_counter() - start)
        rates[dtype.name] = flops / best / 1e9
    return ConvRates(rates["float32"], rates["bfloat16"])


def precision_line(precision):
    """One line saying what a model computes in; for bfloat16 with this CPU's `conv_rates`,
    and a warning when its bfloat16 is not fast (FAST_BFLOAT16)."""
    if precision != "bfloat16":
        return f"precision: {precision}"
    rates = conv_rates()
    measured = (f"this CPU's bfloat16 3x3 convolutions run at {rates.ratio:.2f}x float32's "
                f"({rates.bfloat16_gflops:.0f} vs {rates.float32_gflops:.0f} GFLOP/s)")
    if rates.bfloat16_is_fast:
        return f"precision: bfloat16 ({measured})"
    slower = "slower than" if rates.ratio < 1 else "barely faster than"
    return (f"precision: bfloat16, {slower} float32 on this CPU ({measured}); the model "
            f"works, but float32 would serve as fast or faster here")

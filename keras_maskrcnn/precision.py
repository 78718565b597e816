"""Mixed precision: which Keras dtype policy each `--precision` builds the model under.

"bfloat16" and "float16" build the layers with Keras' mixed policies: variables stay float32,
convolutions and dense layers compute in the low precision. The model keeps its float32
islands itself (`model` module docstring). The policy is not part of `MaskRCNN.get_config`,
so a saved model loads, and exports, as float32 unless the loading process sets a policy.
"""

import contextlib

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

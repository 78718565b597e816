"""Every private TensorFlow / Keras API the package uses, each with why no public one serves.

They hold only at the pinned versions (setup.py); `tests/test_private_api.py` checks each by
name, so an upgrade that moves one fails there first. Replaced by public APIs already:
BatchNormalization's `_reduction_axes` (now from its public `axis`).
"""

import keras
import tensorflow as tf


class BuildOptimizerBeforeFit:
    """Mixin for a keras.Model whose variables exist before `fit` (`MaskRCNN` traces itself
    when made): Keras' `Trainer._maybe_symbolic_build`, run at the start of `fit` and
    `evaluate`, first averages a batch of data over the replicas, which fails for dict inputs
    under MultiWorkerMirroredStrategy (keras-team/keras#20329). Keras has no public hook
    there; this builds only the optimiser, in the strategy's scope."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)


class BatchMoments:
    """Mixin for keras.layers.BatchNormalization whose batch statistics come from
    `self.batch_moments(inputs)` → (mean, variance) [C]: Keras computes them in its private
    `_moments(inputs, mask)`, the only place to change how (the public `synchronized=True`
    takes E[x²] − E[x]², too imprecise: `layers.backbones.BatchNormalization`). Masked
    inputs keep Keras' own statistics."""

    def _moments(self, inputs, mask):
        if mask is not None:
            return super()._moments(inputs, mask)
        return self.batch_moments(inputs)


class GlobalGradients:
    """Mixin for a Keras optimiser that is given the global batch's gradients: `MaskRCNN.train_step`
    sums them over the replicas itself, before `apply`, so that global-norm clipping and the
    float16 loss scale's finiteness test see the global gradient. Keras would sum them again
    after clipping each replica's share, in its private `_all_reduce_sum_gradients`, which
    no public option turns off; this skips that sum (a no-op on one replica)."""

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return grads_and_vars


def nested_layers(layer):
    """Every layer inside `layer`, at any depth (Keras' private `Layer._flatten_layers`):
    `Model.layers` lists only direct children, and keras.applications' networks nest their
    batch norms in ways no public walk reaches."""
    return layer._flatten_layers(include_self=False, recursive=True)


def no_autocast():
    """A context in which Keras variables read as stored, float32 under a mixed-precision
    policy (Keras' private `AutocastScope(None)`, which a layer with `autocast=False` enters for
    its own call only). Inside a mixed-precision layer's call Keras casts every float variable
    read to the compute dtype, and has no public way to read one as stored:
    `layers.backbones.conv_then_frozen_norm` folds float32 weights and casts the result once."""
    from keras.src.backend import AutocastScope
    return AutocastScope(None)


# Keeps a tf.Module from tracking what a method assigns (the SavedModel's server holds the
# Keras model without saving it twice): tf.Module has no public switch for that.
no_automatic_dependency_tracking = tf.__internal__.tracking.no_automatic_dependency_tracking


def tflite_schema():
    """TFLite's flatbuffer schema, `tensorflow.lite.python.schema_py_generated`: reading and
    writing `.tflite` files (operators, tensors, metadata) has no public Python API."""
    from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def tflite_flatbuffer_utils():
    """`tensorflow.lite.tools.flatbuffer_utils`: a `.tflite` file as an object tree and back
    (to add metadata), which no public API does."""
    from tensorflow.lite.tools import flatbuffer_utils
    return flatbuffer_utils


def calibrate_only(converter):
    """Make `converter.convert()` stop after calibrating int8 ranges (the private
    `_experimental_calibrate_only`): TFLite's public QuantizationDebugger takes this route to
    quantize with chosen ops kept float, but builds an instrumented debug model on the way."""
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access


def mlir_quantize(calibrated, denylisted_ops, denylisted_nodes):
    """Quantize a calibrated `.tflite` (from `calibrate_only`) to int8, keeping the listed op
    types and nodes float: `tensorflow.lite.python.convert.mlir_quantize`, what the public
    QuantizationDebugger calls, without its debug model."""
    from tensorflow.lite.python import convert
    return convert.mlir_quantize(calibrated, denylisted_ops=denylisted_ops,
                                 denylisted_nodes=denylisted_nodes)

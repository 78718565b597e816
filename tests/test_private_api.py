"""Each private TensorFlow / Keras API that `keras_maskrcnn.private_api` relies on still exists
with the signature and behaviour it is used with. A failure here names the API an upgrade
moved; fix `private_api.py` (and only it)."""

import inspect

import keras
import numpy as np
import tensorflow as tf

from keras_maskrcnn import private_api


def _parameters(function):
    return list(inspect.signature(function).parameters)


def test_keras_trainer_has__maybe_symbolic_build():
    assert _parameters(keras.Model._maybe_symbolic_build) == ["self", "iterator", "data_batch"]
    assert keras.Model._maybe_symbolic_build is not private_api.BuildOptimizerBeforeFit._maybe_symbolic_build


def test_keras_batch_norm_has__moments_and_calls_it_when_training():
    assert _parameters(keras.layers.BatchNormalization._moments) == ["self", "inputs", "mask"]

    class Doubled(private_api.BatchMoments, keras.layers.BatchNormalization):
        def batch_moments(self, inputs):
            mean, variance = tf.nn.moments(inputs, axes=[0, 1, 2])
            return 2 * mean, variance

    x = tf.random.stateless_normal([2, 3, 3, 4], seed=[0, 1]) + 1.0
    layer = Doubled(momentum=0.0, center=False, scale=False, epsilon=0.0)
    layer(x, training=True)
    mean, _ = tf.nn.moments(x, axes=[0, 1, 2])
    np.testing.assert_allclose(layer.moving_mean.numpy(), 2 * mean.numpy(), rtol=1e-5)


def test_keras_optimizer_has__all_reduce_sum_gradients():
    assert _parameters(keras.optimizers.Optimizer._all_reduce_sum_gradients) == [
        "self", "grads_and_vars"]


def test_keras_layer_has__flatten_layers_reaching_nested_layers():
    assert _parameters(keras.layers.Layer._flatten_layers) == ["self", "include_self", "recursive"]
    inner = keras.layers.BatchNormalization()
    outer = keras.Sequential([keras.Sequential([inner])])
    assert inner in private_api.nested_layers(outer)


def test_keras_has_autocast_scope_and_no_autocast_reads_variables_as_stored():
    seen = {}

    class Reader(keras.layers.Layer):
        def build(self, input_shape):
            self.weight = self.add_weight(shape=(2,), initializer="ones")

        def call(self, inputs):
            seen["autocast"] = tf.convert_to_tensor(self.weight).dtype
            with private_api.no_autocast():
                seen["stored"] = tf.convert_to_tensor(self.weight).dtype
            return inputs

    Reader(dtype="mixed_bfloat16")(tf.zeros([1, 2]))
    assert seen == {"autocast": tf.bfloat16, "stored": tf.float32}


def test_tf_internal_has_no_automatic_dependency_tracking(tmp_path):
    class Holder(tf.Module):
        def __init__(self):
            super().__init__()
            self.kept = tf.Variable(1.0, name="kept")
            self._hold(tf.Variable(2.0, name="untracked"))

        @private_api.no_automatic_dependency_tracking
        def _hold(self, variable):
            self.held = variable

    path = tf.train.Checkpoint(root=Holder()).write(str(tmp_path / "ckpt"))
    saved = [name for name, _ in tf.train.list_variables(path)]
    assert any("kept" in name for name in saved) and not any("held" in name for name in saved)


def test_tflite_has_schema_py_generated_and_flatbuffer_utils():
    schema = private_api.tflite_schema()
    for name in ("Model", "ModelT", "BufferT", "MetadataT", "BuiltinOperator", "TensorType"):
        assert hasattr(schema, name), name
    utils = private_api.tflite_flatbuffer_utils()
    for name in ("convert_bytearray_to_object", "convert_object_to_bytearray"):
        assert callable(getattr(utils, name)), name


def test_tflite_converter_has__experimental_calibrate_only_and_mlir_quantize():
    from tensorflow.lite.python import convert

    assert {"input_data_str", "denylisted_ops", "denylisted_nodes"} <= set(
        _parameters(convert.mlir_quantize))
    function = tf.function(lambda x: x * 2.0).get_concrete_function(tf.TensorSpec([1, 4]))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    assert converter._experimental_calibrate_only is False
    private_api.calibrate_only(converter)
    assert converter._experimental_calibrate_only is True

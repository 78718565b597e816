"""The forms the model's layers take so that Grappler and oneDNN fuse them (docs/export.md,
"bfloat16 on a CPU with AMX"), each the same map as the plain form: a convolution and the
`FrozenBatchNorm` after it as one folded convolution (`layers.backbones.run_layers`), in float32
and under the mixed bfloat16 policy, with gradients for the kernel; `ops.map_sum.same_shape_sum`;
the mask head's transposed convolution as a 1×1 convolution and a depth-to-space."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_maskrcnn.layers.backbones import FrozenBatchNorm, run_layers
from keras_maskrcnn.layers.mask_head import MaskHead
from keras_maskrcnn.ops.map_sum import same_shape_sum
from keras_maskrcnn.precision import dtype_policy


def _conv_norm_relu(seed, stride=2):
    """[ZeroPadding2D, Conv2D 3×3, FrozenBatchNorm with random statistics, ReLU], built under
    the current dtype policy on [2, 9, 10, 5] inputs (stride 1: the padding becomes SAME's)."""
    layers = [keras.layers.ZeroPadding2D(1),
              keras.layers.Conv2D(6, 3, strides=stride, use_bias=False, padding="valid"),
              FrozenBatchNorm(), keras.layers.ReLU()]
    x = tf.zeros([2, 9, 10, 5])
    for layer in layers:
        x = layer(x)
    rng = np.random.default_rng(seed)
    layers[1].kernel.assign(rng.normal(0, 0.3, (3, 3, 5, 6)))
    norm = layers[2]
    norm.gamma.assign(rng.uniform(0.5, 1.5, 6))
    norm.beta.assign(rng.normal(0, 0.2, 6))
    norm.moving_mean.assign(rng.normal(0, 0.2, 6))
    norm.moving_variance.assign(rng.uniform(0.5, 2.0, 6))
    return layers


def _in_turn(layers, x):
    for layer in layers:
        x = layer(x)
    return x


@pytest.mark.parametrize("stride", [1, 2])
def test_folded_convolution_computes_the_layers_in_turn_in_float32(stride):
    for seed in (0, 1):
        layers = _conv_norm_relu(seed, stride)
        x = tf.random.stateless_normal([2, 9, 10, 5], seed=[seed, 3])
        folded = run_layers(layers, x, training=False)
        assert folded.shape == _in_turn(layers, x).shape
        np.testing.assert_allclose(folded.numpy(), _in_turn(layers, x).numpy(), atol=1e-5)
        assert folded.dtype == tf.float32


@pytest.mark.parametrize("stride", [1, 2])
def test_folded_convolution_in_bfloat16_is_the_float32_map_rounded(stride):
    reference = _conv_norm_relu(0, stride)
    with dtype_policy("bfloat16"):
        layers = _conv_norm_relu(0, stride)
    x = tf.random.stateless_normal([2, 9, 10, 5], seed=[0, 3])
    folded = run_layers(layers, x, training=False)
    assert folded.dtype == tf.bfloat16
    expected = _in_turn(reference, x).numpy()
    error = np.abs(tf.cast(folded, tf.float32).numpy() - expected)
    # bfloat16 keeps 8 significant bits: inputs, folded kernel and output each round once.
    assert np.max(error) <= 0.03 * np.max(np.abs(expected)), np.max(error)


def test_folded_convolution_gives_the_kernel_its_gradient():
    layers = _conv_norm_relu(0)
    x = tf.random.stateless_normal([2, 9, 10, 5], seed=[0, 3])
    kernel = layers[1].kernel
    with tf.GradientTape(persistent=True) as tape:
        folded = tf.reduce_sum(run_layers(layers, x, training=True) ** 2)
        in_turn = tf.reduce_sum(_in_turn(layers, x) ** 2)
    np.testing.assert_allclose(tape.gradient(folded, kernel.value).numpy(),
                               tape.gradient(in_turn, kernel.value).numpy(), rtol=1e-4, atol=1e-5)


def test_same_shape_sum_is_add_n_only_where_sizes_are_known_at_run_time():
    """AddN lets Grappler fuse the sum into a convolution; TFLite graphs (static sizes) keep
    a plain add, which its int8 quantiser has."""
    a, b = (tf.random.stateless_normal([1, 4, 6, 3], seed=[s, 0]) for s in (1, 2))
    for shape, op_type in (([1, 4, 6, 3], "AddV2"), ([1, None, None, 3], "AddN")):
        spec = tf.TensorSpec(shape, tf.float32)
        function = tf.function(same_shape_sum, input_signature=[spec, spec])
        graph = function.get_concrete_function().graph
        assert op_type in {op.type for op in graph.get_operations()}, shape
        np.testing.assert_allclose(function(a, b).numpy(), (a + b).numpy())


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_mask_head_upsampling_is_its_transposed_convolution(precision):
    """`MaskHead.upsample` (matrix product + depth-to-space) computes `deconv` and its ReLU, from 5
    channels to 8, and on no RoIs."""
    with dtype_policy(precision):
        head = MaskHead(num_classes=3, num_convs=0, conv_dim=8)
        head(tf.zeros([1, 2, 14, 14, 5]))
    rng = np.random.default_rng(0)
    head.deconv.kernel.assign(rng.normal(0, 0.3, head.deconv.kernel.shape))
    head.deconv.bias.assign(rng.normal(0, 0.3, head.deconv.bias.shape))
    x = tf.cast(tf.random.stateless_normal([3, 14, 14, 5], seed=[0, 5]), head.compute_dtype)
    upsampled = head.upsample(x)
    assert upsampled.shape == (3, 28, 28, 8) and upsampled.dtype == x.dtype
    tolerance = 1e-5 if precision == "float32" else 0.05
    np.testing.assert_allclose(tf.cast(upsampled, tf.float32).numpy(),
                               tf.cast(head.deconv(x), tf.float32).numpy(), atol=tolerance)
    assert head.upsample(x[:0]).shape == (0, 28, 28, 8)  # no detections

"""ResNet v1.5 backbones (stride on the 3×3 convolution) returning C2..C5, or ResNet v1
(stride on the first 1×1 convolution, as keras.applications' ResNet50) with `stride_in_1x1`.

Paddings are explicit, as in torchvision's ResNet, so that converted weights see the
same pixels; batch norm is frozen (a fixed affine transform) for pretrained backbones.
Batch norm that trains ("bn") is synchronised (`BatchNormalization` here): under a
tf.distribute strategy its batch statistics are the global batch's, so replicas normalise as
one device would.
Shapes: B batch, H×W input; C_k has stride 2^k.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from keras_maskrcnn.ops.map_sum import same_shape_sum
from keras_maskrcnn.ops.replicas import sum_over_replicas
from keras_maskrcnn.private_api import BatchMoments, no_autocast

BATCH_NORM_EPSILON = 1e-5  # torchvision's FrozenBatchNorm2d and BatchNorm2d default


def folded_batch_norm(gamma, beta, mean, variance, epsilon, conv_bias=0.0):
    """`FrozenBatchNorm`'s weights for another framework's frozen batch norm and the bias of the
    convolution before it → {"gamma", "beta", "moving_mean", "moving_variance"}, float64 [C] each.

    That batch norm computes y = γ(x + b − mean)/√(var + ε) + β, the affine map y = γ'x + β'
    with γ' = γ/√(var + ε) and β' = β + (b − mean)·γ'. Written with mean 0 and variance
    1 − BATCH_NORM_EPSILON, FrozenBatchNorm computes exactly that map, whatever ε the source
    ran with, and the bias-free convolutions before it lose nothing.
    """
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(variance, np.float64) + epsilon)
    offset = np.asarray(beta, np.float64) + (np.asarray(conv_bias, np.float64) - mean) * scale
    return {"gamma": scale, "beta": offset, "moving_mean": np.zeros_like(scale),
            "moving_variance": np.full_like(scale, 1.0 - BATCH_NORM_EPSILON)}


@keras.saving.register_keras_serializable("keras_maskrcnn")
class FrozenBatchNorm(layers.Layer):
    """Batch norm with fixed statistics and affine parameters: y = (x − mean)/√(var+ε)·γ + β,
    on [B, H, W, C] maps.

    Called on its own it runs as TensorFlow's inference batch norm (FusedBatchNormV3 with
    `is_training=False`), with its float32 parameters whatever the compute dtype (the layer does
    not autocast them). After a convolution, `conv_then_frozen_norm` folds it into that
    convolution's kernel and a bias instead (`folded_into`).
    """

    def __init__(self, epsilon=BATCH_NORM_EPSILON, **kwargs):
        super().__init__(**{**kwargs, "autocast": False})
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = (input_shape[-1],)
        self.gamma = self.add_weight(name="gamma", shape=channels, initializer="ones", trainable=False)
        self.beta = self.add_weight(name="beta", shape=channels, initializer="zeros", trainable=False)
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=channels, initializer="zeros", trainable=False)
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=channels, initializer="ones", trainable=False)

    def call(self, inputs):
        with no_autocast():  # called with no outer layer, Keras would autocast them after all
            gamma, beta, mean, variance = (tf.convert_to_tensor(weight) for weight in (
                self.gamma, self.beta, self.moving_mean, self.moving_variance))
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, mean=mean, variance=variance, epsilon=self.epsilon,
            is_training=False)
        return outputs

    def folded_into(self, kernel):
        """(kernel · γ', bias β − mean·γ') with γ' = γ/√(var+ε): a convolution kernel [kh, kw,
        C_in, C] whose outputs this norm follows, and the norm, as one kernel and bias [C], in
        the kernel's dtype (float32)."""
        with no_autocast():
            scale = self.gamma * tf.math.rsqrt(self.moving_variance + self.epsilon)
            return kernel * scale, self.beta - self.moving_mean * scale

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def conv_then_frozen_norm(conv, norm, inputs, same_padding=None):
    """`norm(conv(inputs))` for a bias-free, valid-padded `layers.Conv2D` and a
    `FrozenBatchNorm`, as one convolution with the norm folded into its kernel and a bias:
    [B, H, W, C_in] → [B, H', W', C], in `conv`'s compute dtype. `same_padding`: the
    `layers.ZeroPadding2D` before `conv`, run as the convolution's SAME padding.

    Folded, the convolution, the bias and a ReLU (and a residual add before it) are one oneDNN
    op under Grappler's remapper in float32 and bfloat16 alike, where TensorFlow fuses a batch
    norm into the convolution before it in float32 only (docs/export.md, "bfloat16 on a CPU
    with AMX"). The folding is computed from the float32 weights (read without Keras'
    autocasting) and cast once.
    """
    if not (conv.built and norm.built):
        # Built through Keras' own calls, which record the shapes a saved model rebuilds from
        # (the result is not used).
        norm(conv(same_padding(inputs) if same_padding else inputs))
    with no_autocast():
        kernel = tf.convert_to_tensor(conv.kernel)
    kernel, bias = norm.folded_into(kernel)
    dtype = conv.compute_dtype
    padding = "SAME" if same_padding else "VALID"
    outputs = tf.nn.conv2d(tf.cast(inputs, dtype), tf.cast(kernel, dtype), conv.strides, padding)
    return tf.nn.bias_add(outputs, tf.cast(bias, dtype))


def _same_padding(pad, conv):
    """Whether `pad` (a ZeroPadding2D) before `conv` is the SAME padding of a stride-1 conv."""
    k = conv.kernel_size
    return (tuple(conv.strides) == (1, 1) and k[0] == k[1]
            and tuple(map(tuple, pad.padding)) == ((k[0] // 2,) * 2,) * 2)


def run_layers(layer_list, inputs, training):
    """`layer_list` applied in order to `inputs`, each `layers.Conv2D` followed by a
    `FrozenBatchNorm` as one `conv_then_frozen_norm`, and the symmetric zero padding before a
    stride-1 one as its SAME padding (no Pad op)."""
    x, index = inputs, 0
    while index < len(layer_list):
        layer, following = layer_list[index], layer_list[index + 1:index + 3]
        if (isinstance(layer, layers.ZeroPadding2D) and len(following) == 2
                and isinstance(following[0], layers.Conv2D)
                and isinstance(following[1], FrozenBatchNorm)
                and _same_padding(layer, following[0])):
            x = conv_then_frozen_norm(*following, x, same_padding=layer)
            index += 3
        elif (isinstance(layer, layers.Conv2D) and following
                and isinstance(following[0], FrozenBatchNorm)):
            x = conv_then_frozen_norm(layer, following[0], x)
            index += 2
        else:
            x = layer(x, training=training)
            index += 1
    return x


@keras.saving.register_keras_serializable("keras_maskrcnn")
class BatchNormalization(BatchMoments, layers.BatchNormalization):
    """Keras' batch norm with the global batch's statistics under a tf.distribute strategy.

    It keeps Keras' class name on purpose: a `.keras` file stores the layers of a list under
    their class name in snake case ("batch_normalization_2"), so models saved with Keras' own
    layer still load (tests/test_model.py checks the stored names).

    Two passes, as `tf.nn.moments` on one device: the mean, then the mean squared deviation
    from it, each summed over the replicas. (Keras' `synchronized=True` takes E[x²] − E[x]²,
    whose cancellation put float32 gradients 3·10⁻⁴ apart between one device and two replicas
    of the same batch; these agree to 10⁻⁶.) Statistics are float32 whatever the compute dtype.
    """

    def batch_moments(self, inputs):
        """inputs [..., C] → the global batch's (mean, variance) [C] (`private_api.BatchMoments`)."""
        x = tf.cast(inputs, tf.float32)
        rank = len(x.shape)
        channel_axes = {axis % rank for axis in (self.axis if isinstance(self.axis, (list, tuple))
                                                 else [self.axis])}
        axes = [axis for axis in range(rank) if axis not in channel_axes]
        count = sum_over_replicas(tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)),
                                          tf.float32))
        mean = sum_over_replicas(tf.reduce_sum(x, axes)) / count
        centred = x - tf.reshape(mean, [1] * (len(x.shape) - 1) + [-1])
        variance = sum_over_replicas(tf.reduce_sum(tf.square(centred), axes)) / count
        return tf.cast(mean, inputs.dtype), tf.cast(variance, inputs.dtype)


def _norm(norm, name):
    if norm == "frozen_bn":
        return FrozenBatchNorm(name=name)
    if norm == "bn":
        return BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=0.9, name=name)
    raise ValueError(f"unknown norm {norm!r}: use 'frozen_bn' or 'bn'")


def _conv(filters, kernel_size, stride, name):
    """A bias-free convolution with torchvision's symmetric zero padding of kernel_size // 2."""
    pad = kernel_size // 2
    conv = layers.Conv2D(filters, kernel_size, strides=stride, padding="valid", use_bias=False,
                         kernel_initializer="he_normal", name=name)
    if pad == 0:
        return [conv]
    return [layers.ZeroPadding2D(pad, name=f"{name}_pad"), conv]


@keras.saving.register_keras_serializable("keras_maskrcnn")
class Bottleneck(layers.Layer):
    """1×1 → 3×3 (stride) → 1×1 (4× width) residual block, projection shortcut when needed;
    `stride_in_1x1` moves the stride to the first 1×1."""

    def __init__(self, width, stride, project, norm, stride_in_1x1=False, **kwargs):
        super().__init__(**kwargs)
        self.width, self.stride, self.project, self.norm = width, stride, project, norm
        self.stride_in_1x1 = stride_in_1x1
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.residual = [
            *_conv(width, 1, stride_1x1, "conv1"), _norm(norm, "bn1"), layers.ReLU(),
            *_conv(width, 3, stride_3x3, "conv2"), _norm(norm, "bn2"), layers.ReLU(),
            *_conv(4 * width, 1, 1, "conv3"), _norm(norm, "bn3"),
        ]
        self.shortcut = ([*_conv(4 * width, 1, stride, "downsample_conv"), _norm(norm, "downsample_bn")]
                         if project else [])

    def call(self, inputs, training=False):
        residual = run_layers(self.residual, inputs, training)
        shortcut = run_layers(self.shortcut, inputs, training)
        return ops.relu(same_shape_sum(residual, shortcut))

    def get_config(self):
        return {**super().get_config(), "width": self.width, "stride": self.stride,
                "project": self.project, "norm": self.norm, "stride_in_1x1": self.stride_in_1x1}


@keras.saving.register_keras_serializable("keras_maskrcnn")
class ResNet(layers.Layer):
    """ResNet v1.5 (or v1, see Bottleneck) feature extractor: [B, H, W, 3] → [C2, C3, C4, C5]."""

    def __init__(self, stage_blocks=(3, 4, 6, 3), stem_filters=64, bottleneck_widths=(64, 128, 256, 512),
                 norm="frozen_bn", stride_in_1x1=False, **kwargs):
        super().__init__(**kwargs)
        self.stride_in_1x1 = stride_in_1x1
        self.stage_blocks = tuple(stage_blocks)
        self.stem_filters = stem_filters
        self.bottleneck_widths = tuple(bottleneck_widths)
        self.norm = norm
        self.stem = [*_conv(stem_filters, 7, 2, "stem_conv"), _norm(norm, "stem_bn"), layers.ReLU(),
                     # Zero padding equals torchvision's −∞ padding here: inputs are ≥ 0 after ReLU.
                     layers.ZeroPadding2D(1), layers.MaxPooling2D(3, strides=2)]
        self.stages = []
        for stage, (blocks, width) in enumerate(zip(self.stage_blocks, self.bottleneck_widths)):
            first_stride = 1 if stage == 0 else 2
            self.stages.append([
                Bottleneck(width, first_stride if block == 0 else 1, project=block == 0, norm=norm,
                           stride_in_1x1=stride_in_1x1, name=f"layer{stage + 1}_block{block}")
                for block in range(blocks)])

    def call(self, images, training=False):
        x = run_layers(self.stem, images, training)
        features = []
        for stage in self.stages:
            for block in stage:
                x = block(x, training=training)
            features.append(x)
        return features

    def get_config(self):
        return {**super().get_config(), "stage_blocks": self.stage_blocks,
                "stem_filters": self.stem_filters, "bottleneck_widths": self.bottleneck_widths,
                "norm": self.norm, "stride_in_1x1": self.stride_in_1x1}

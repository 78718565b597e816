"""Mask head: RoI features → per-class mask logits.

Shapes: B batch, K RoIs per image, P pool size (14), M = 2P mask size (28, with
`config.MASK_HEAD_UPSAMPLING` = 2), C classes.
"""

import keras
import tensorflow as tf
from keras import layers, ops

from keras_maskrcnn.config import MASK_HEAD_UPSAMPLING


@keras.saving.register_keras_serializable("keras_maskrcnn")
class MaskHead(layers.Layer):
    """num_convs × (3×3 conv, ReLU) → 2×2 stride-2 deconv, ReLU (`upsample`) → 1×1 conv to C
    channels."""

    def __init__(self, num_classes, num_convs=4, conv_dim=256, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.num_convs = num_convs
        self.conv_dim = conv_dim
        self.convs = [layers.Conv2D(conv_dim, 3, padding="same", activation="relu",
                                    kernel_initializer="he_normal", name=f"conv{i + 1}")
                      for i in range(num_convs)]
        self.deconv = layers.Conv2DTranspose(conv_dim, MASK_HEAD_UPSAMPLING,
                                             strides=MASK_HEAD_UPSAMPLING, activation="relu",
                                             kernel_initializer="he_normal", name="deconv")
        self.predictor = layers.Conv2D(num_classes, 1, kernel_initializer="he_normal", name="predictor")

    def call(self, roi_features):
        """roi_features [B, K, P, P, F] → mask logits [B, K, M, M, C]."""
        batch, num_rois = ops.shape(roi_features)[0], ops.shape(roi_features)[1]
        pool, channels = roi_features.shape[2], roi_features.shape[4]
        x = ops.reshape(roi_features, (batch * num_rois, pool, pool, channels))
        for conv in self.convs:
            x = conv(x)
        x = self.predictor(self.upsample(x))
        side = MASK_HEAD_UPSAMPLING * pool
        return ops.reshape(x, (batch, num_rois, side, side, self.num_classes))

    def upsample(self, x):
        """`self.deconv` (stride = kernel = u, `MASK_HEAD_UPSAMPLING`) and its ReLU on [N, P, P,
        F] → [N, uP, uP, F'], as a matrix product to u²·F' channels per pixel (a 1×1
        convolution) and a depth-to-space: the same map, since each output pixel is one input
        pixel times one kernel tap. oneDNN fuses that product's bias and ReLU, which it does not
        fuse into a transposed convolution (two more passes over the head's largest maps). A
        matrix product rather than a convolution, since TensorFlow's CPU convolution gives the
        wrong channel count for an empty batch (no detections)."""
        if not self.deconv.built:
            self.deconv(x)  # built through Keras' call, which records its input shape
        u = MASK_HEAD_UPSAMPLING
        kernel = ops.cast(self.deconv.kernel, x.dtype)  # [u, u, F', F]
        channels_in, channels_out = kernel.shape[3], kernel.shape[2]
        matrix = ops.reshape(ops.transpose(kernel, (3, 0, 1, 2)), (channels_in, -1))
        bias = ops.tile(ops.cast(self.deconv.bias, x.dtype), (u * u,))
        pixels = ops.reshape(x, (-1, channels_in))
        y = ops.relu(tf.nn.bias_add(ops.matmul(pixels, matrix), bias))
        y = ops.reshape(y, (-1, x.shape[1], x.shape[2], u * u * channels_out))
        return tf.nn.depth_to_space(y, u)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "num_convs": self.num_convs, "conv_dim": self.conv_dim}

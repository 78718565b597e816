"""MobileNetV3-Large (Howard et al. 2019) from keras.applications as a C2..C5 backbone.

Shapes: B batch, H×W input (multiples of 32) scaled to [-1, 1]; C_k has stride 2^k.

C_k is the deepest map of stride 2^k, found by output shape in the network's graph order:
for strides 4, 8 and 16 that is the expansion (1×1 conv, BN, activation) of the block that
downsamples next: blocks 3, 6 and 12 of keras' 0..14, with 72, 240 and 672 channels; for
stride 32 the final 1×1 conv, 960 channels. The paper attaches SSDLite's stride-16 head at the
same place (the expansion of its 13th bottleneck). The expansions carry 3–6× the channels of
the block outputs beside them (24, 40, 112) for little: the FPN's 1×1 laterals that read all
four cost about 0.15 GMAC at 320 × 320 and 128 channels.
"""

import keras
from keras import layers

FEATURE_STRIDES = (4, 8, 16, 32)  # C2..C5


def feature_layers(network, strides=FEATURE_STRIDES):
    """For each stride, the last layer of `network` (a functional model with a static
    H×W input) whose output is [B, H/stride, W/stride, ·] → list of layers."""
    height, width = network.input.shape[1:3]
    deepest = {}
    for layer in network.layers:
        shape = layer.output.shape
        for stride in strides:
            if len(shape) == 4 and tuple(shape[1:3]) == (height // stride, width // stride):
                deepest[stride] = layer
    missing = [stride for stride in strides if stride not in deepest]
    if missing:
        raise ValueError(f"{network.name} has no output of stride {missing} for input {height}×{width}")
    return [deepest[stride] for stride in strides]


@keras.saving.register_keras_serializable("keras_maskrcnn")
class MobileNetV3Backbone(layers.Layer):
    """keras.applications' MobileNetV3Large without top or Rescaling:
    [B, H, W, 3] in [-1, 1] → [C2, C3, C4, C5] with 72, 240, 672, 960 channels.

    The network is made in `build`, where the input's H×W is known: the feature maps are
    found by their shape. `norm="frozen_bn"` freezes its batch norms (moving statistics and
    affine parameters, as `backbones.FrozenBatchNorm`) for fine-tuning from ImageNet with a
    few images per batch; "bn" trains them.
    """

    def __init__(self, norm="frozen_bn", **kwargs):
        super().__init__(**kwargs)
        if norm not in ("frozen_bn", "bn"):
            raise ValueError(f"unknown norm {norm!r}: use 'frozen_bn' or 'bn'")
        self.norm = norm

    def build(self, input_shape):
        height, width = input_shape[1:3]
        network = keras.applications.MobileNetV3Large(
            input_shape=(height, width, 3), include_top=False, weights=None,
            include_preprocessing=False)
        self.network = keras.Model(network.input, [layer.output for layer in feature_layers(network)],
                                   name="mobilenet_v3_large")
        if self.norm == "frozen_bn":
            for layer in self.network.layers:
                if isinstance(layer, layers.BatchNormalization):
                    # A non-trainable BatchNormalization also normalises with its moving statistics.
                    layer.trainable = False

    def call(self, images, training=False):
        return self.network(images, training=training)

    def get_config(self):
        return {**super().get_config(), "norm": self.norm}

"""Feature Pyramid Network (Lin et al. 2017): C2..C5 → P2..P6.

Shapes: B batch; P_k has stride 2^k and `channels` channels.
"""

import keras
from keras import layers

from keras_maskrcnn.ops.map_sum import same_shape_sum


@keras.saving.register_keras_serializable("keras_maskrcnn")
class FPN(layers.Layer):
    """Lateral 1×1 convs, nearest-neighbour top-down path, 3×3 output convs, and P6 taken
    as every other pixel of P5 (torchvision's LastLevelMaxPool with a 1×1 window)."""

    def __init__(self, channels=256, num_inputs=4, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.num_inputs = num_inputs
        self.lateral = [layers.Conv2D(channels, 1, name=f"lateral{i}") for i in range(num_inputs)]
        self.output_convs = [layers.Conv2D(channels, 3, padding="same", name=f"output{i}")
                             for i in range(num_inputs)]
        self.upsample = layers.UpSampling2D(2, interpolation="nearest")

    def call(self, inputs):
        """inputs: [C2, C3, C4, C5] → [P2, P3, P4, P5, P6]."""
        top_down = self.lateral[-1](inputs[-1])
        outputs = [self.output_convs[-1](top_down)]
        for index in range(self.num_inputs - 2, -1, -1):
            top_down = same_shape_sum(self.lateral[index](inputs[index]),
                                      self.upsample(top_down))
            outputs.insert(0, self.output_convs[index](top_down))
        outputs.append(outputs[-1][:, ::2, ::2, :])
        return outputs

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "num_inputs": self.num_inputs}

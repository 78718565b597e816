"""Region Proposal Network head, shared over FPN levels.

Shapes: B batch, A_l = H_l·W_l·anchors_per_location anchors of level l, in the order of
`ops.anchors` (row-major locations, then anchors of a location).
"""

import keras
from keras import layers, ops

HEAD_INIT_STDDEV = 0.01  # Faster R-CNN's RPN initialisation


def _head_init():
    """A fresh initializer per weight: one built at import time would take its seed from the
    unseeded Python RNG (different in every process), and sharing one instance would give
    every kernel the same draw."""
    return keras.initializers.RandomNormal(stddev=HEAD_INIT_STDDEV)


@keras.saving.register_keras_serializable("keras_maskrcnn")
class RPNHead(layers.Layer):
    """3×3 conv + ReLU, then 1×1 convs for objectness logits and box deltas."""

    def __init__(self, channels, anchors_per_location, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.anchors_per_location = anchors_per_location
        self.conv = layers.Conv2D(channels, 3, padding="same", activation="relu",
                                  kernel_initializer=_head_init(), name="conv")
        self.objectness = layers.Conv2D(anchors_per_location, 1, kernel_initializer=_head_init(),
                                        name="objectness")
        self.deltas = layers.Conv2D(4 * anchors_per_location, 1, kernel_initializer=_head_init(),
                                    name="deltas")

    def call(self, features):
        """features: list of [B, H_l, W_l, C] → (list of logits [B, A_l], list of deltas [B, A_l, 4])."""
        logits, deltas = [], []
        for level_features in features:
            hidden = self.conv(level_features)
            batch = ops.shape(hidden)[0]
            logits.append(ops.reshape(self.objectness(hidden), (batch, -1)))
            deltas.append(ops.reshape(self.deltas(hidden), (batch, -1, 4)))
        return logits, deltas

    def get_config(self):
        return {**super().get_config(), "channels": self.channels,
                "anchors_per_location": self.anchors_per_location}

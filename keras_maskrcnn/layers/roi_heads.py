"""Box head: RoI features → class logits and class-specific box deltas.

Shapes: B batch, R RoIs per image, P pool size, C foreground classes (+1 background).
"""

import keras
from keras import layers, ops

# Detectron's initialisation of the two predictors: small, so early training is stable.
# Initializers are built in __init__, after `keras.utils.set_random_seed`: one built at import
# time would take its seed from the unseeded Python RNG, different in every process.
CLASS_INIT_STDDEV = 0.01
DELTA_INIT_STDDEV = 0.001


@keras.saving.register_keras_serializable("keras_maskrcnn")
class BoxHead(layers.Layer):
    """Flatten → FC fc_dim → ReLU → FC fc_dim → ReLU → logits [C+1] and deltas [4(C+1)]."""

    def __init__(self, num_classes, fc_dim=1024, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.fc_dim = fc_dim
        self.fc1 = layers.Dense(fc_dim, activation="relu", name="fc1")
        self.fc2 = layers.Dense(fc_dim, activation="relu", name="fc2")
        self.class_logits = layers.Dense(
            num_classes + 1,
            kernel_initializer=keras.initializers.RandomNormal(stddev=CLASS_INIT_STDDEV),
            name="class_logits")
        self.deltas = layers.Dense(
            4 * (num_classes + 1),
            kernel_initializer=keras.initializers.RandomNormal(stddev=DELTA_INIT_STDDEV), name="deltas")

    def call(self, roi_features):
        """roi_features [B, R, P, P, F] → (class_logits [B, R, C+1], deltas [B, R, C+1, 4])."""
        batch, num_rois = ops.shape(roi_features)[0], ops.shape(roi_features)[1]
        pool, channels = roi_features.shape[2], roi_features.shape[4]
        hidden = ops.reshape(roi_features, (batch * num_rois, pool * pool * channels))
        hidden = self.fc2(self.fc1(hidden))
        logits = ops.reshape(self.class_logits(hidden), (batch, num_rois, self.num_classes + 1))
        deltas = ops.reshape(self.deltas(hidden), (batch, num_rois, self.num_classes + 1, 4))
        return logits, deltas

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "fc_dim": self.fc_dim}

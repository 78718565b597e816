"""The sum of two feature maps of one shape, written so that Grappler can fuse it into the
convolution that makes either."""

import tensorflow as tf


def same_shape_sum(a, b):
    """a + b, [B, H, W, C] each. With H and W known only at run time (the host's and the
    SavedModel's graphs) as AddN: Grappler fuses an add (and a ReLU after it) into the
    convolution before it only where it can tell that the add does not broadcast, which it
    cannot for an AddV2 of run-time shapes. With static sizes (every TFLite graph) a plain add,
    since TFLite's int8 quantiser has no int8 ADD_N."""
    if None in a.shape[1:3]:
        return tf.math.add_n([a, b])
    return a + b

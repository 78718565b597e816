"""Batch norm with fixed statistics, written as the scale and offset it amounts to.

A frozen batch norm after a convolution with bias b computes y = γ(x + b − mean)/√(var + ε) + β,
the affine map y = γ'x + β' with γ' = γ/√(var + ε) and β' = β + (b − mean)·γ'. Written with
mean 0 and variance 1 − ε_ours, our FrozenBatchNorm computes exactly that map, whatever ε the
source framework ran with, and the bias-free convolutions before it lose nothing.
Shapes: C channels.
"""

import numpy as np

from keras_maskrcnn.layers.backbones import BATCH_NORM_EPSILON


def folded_batch_norm(gamma, beta, mean, variance, epsilon, conv_bias=0.0):
    """Our batch-norm weights for the map → {"gamma", "beta", "moving_mean", "moving_variance"},
    float64 [C] each."""
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(variance, np.float64) + epsilon)
    offset = np.asarray(beta, np.float64) + (np.asarray(conv_bias, np.float64) - mean) * scale
    return {"gamma": scale, "beta": offset, "moving_mean": np.zeros_like(scale),
            "moving_variance": np.full_like(scale, 1.0 - BATCH_NORM_EPSILON)}

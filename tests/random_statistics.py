"""Random batch-norm statistics for keras.applications networks the tests save as stand-ins for
ImageNet weights: with the initial mean 0 and variance 1, a normalisation copied to the wrong
layer or folded the wrong way would not show."""

import keras


def randomise_batch_norms(network, rng):
    """Give every BatchNormalization of `network` random γ, β, mean and variance (in place)."""
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, size), rng.normal(0, 0.1, size),
                               rng.normal(0, 0.1, size), rng.uniform(0.5, 2.0, size)])

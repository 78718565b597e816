"""Copy converted weights into a `MaskRCNN`, checking that they fit it exactly."""

import numpy as np

# Not a weight: the training step counter (see MaskRCNN.sampling_step).
_STATE_VARIABLES = ("sampling_step",)


def assign_weights(model, weights, scope=""):
    """Set the model's weights under `scope` from {path: array}.

    Paths leave out the model's own name ("backbone/stem_conv/kernel"). Every weight whose
    path starts with `scope` must be given with its shape, and every given array used.
    Raises ValueError naming the first weight that does not fit.
    """
    weights = dict(weights)
    for variable in model.weights:
        name = variable.path.split("/", 1)[1]
        if not name.startswith(scope) or name in _STATE_VARIABLES:
            continue
        if name not in weights:
            raise ValueError(f"{name}: no converted weight for it; the config must describe "
                             f"the network the weights come from")
        value = np.asarray(weights.pop(name), np.float32)
        if value.shape != tuple(variable.shape):
            raise ValueError(f"{name}: the converted weight has shape {value.shape}, the "
                             f"model {tuple(variable.shape)}")
        variable.assign(value)
    if weights:
        raise ValueError(f"converted weights the model does not have: {sorted(weights)}")

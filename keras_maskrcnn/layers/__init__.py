"""Keras layers of Mask R-CNN: hold hyperparameters and weights, call `ops/`."""

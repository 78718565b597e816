"""Pure tensor functions: no Keras state, no config objects."""

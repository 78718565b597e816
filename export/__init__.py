"""Export of trained models: SavedModel signatures and TFLite conversion (keras_maskrcnn.export)."""

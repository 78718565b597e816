"""Run a trained model on images of any size: one interface over model kinds.

Shapes: K detections of one image, M mask size, h×w the original image.
A detections dict holds `boxes` [K, 4] (y1 x1 y2 x2, original pixels), `scores` [K],
`category_ids` [K] (dataset ids) and `masks` [K, M, M] (probabilities in the box frame),
as `postprocess.unpack_detections` gives them.
"""

import itertools
import os

import keras
import numpy as np

from keras_maskrcnn import postprocess, preprocessing
from keras_maskrcnn.config import MaskRCNNConfig


class KerasPredictor:
    """Predicts with an in-memory `MaskRCNN` (or one loaded from a `.keras` file)."""

    def __init__(self, model):
        self.model = model
        self.config: MaskRCNNConfig = model.model_config

    def predict(self, images):
        """images: list of uint8 [h, w, 3] → list of detections dicts, one per image."""
        canvases, image_info = preprocessing.preprocess_batch(images, self.config.input.image_size)
        outputs = self.model({"images": canvases, "image_info": image_info})
        outputs = {name: np.asarray(value) for name, value in outputs.items()}
        return [postprocess.unpack_detections(outputs, i) for i in range(len(images))]


def load_model(path):
    """Load a `.keras` model file, naming the file in the error when it cannot be read."""
    # Importing the model module registers its classes with Keras' deserialiser.
    from keras_maskrcnn import model as _  # noqa: F401
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise ValueError(f"cannot load model {path}: {error}") from error


def load_predictor(path):
    """A predictor for the model at `path` (a `.keras` file)."""
    if str(path).endswith(".keras"):
        return KerasPredictor(load_model(path))
    raise ValueError(f"unsupported model file {path}: expected a .keras file")


def predict_in_batches(predictor, images, batch_size, progress=None):
    """Yield detections image by image, predicting `batch_size` images at a time.

    `images` may be any iterable (a generator keeps memory flat on large sets);
    `progress` is called with the size of each batch done.
    """
    images = iter(images)
    while batch := list(itertools.islice(images, batch_size)):
        yield from predictor.predict(batch)
        if progress is not None:
            progress(len(batch))

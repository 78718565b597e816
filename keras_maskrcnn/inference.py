"""Run a trained model on images of any size: one interface over model kinds.

`load_predictor` opens a `.keras` file, a SavedModel folder or a `.tflite` file; every
predictor is a `Predictor`: `predict(images, full_masks=False)` → detections dicts, and
`config` (a `MaskRCNNConfig`).

Shapes: K detections of one image, M mask size, h×w the original image.
A detections dict holds `boxes` [K, 4] (y1 x1 y2 x2, original pixels), `scores` [K],
`category_ids` [K] (dataset ids) and `masks` [K, M, M] (probabilities in the box frame),
as `postprocess.unpack_detections` gives them; with `full_masks`, also `full_masks` bool
[K, h, w]: the masks pasted into the image the model's way.
"""

import abc
import itertools
import os

import keras
import tensorflow as tf

from keras_maskrcnn import postprocess, preprocessing
from keras_maskrcnn.config import INFERENCE_PRECISIONS, MaskRCNNConfig
from keras_maskrcnn.tf_logging import run_first_call_quietly

MODEL_KINDS = "a .keras file, a SavedModel folder or a .tflite file"


class Predictor(abc.ABC):
    """A model that predicts on images of any size; subclasses run one kind of model file."""

    config: MaskRCNNConfig

    @abc.abstractmethod
    def detect(self, images):
        """images: list of uint8 [h, w, 3] → list of detections dicts without `full_masks`."""

    def predict(self, images, full_masks=False):
        """images: list of uint8 [h, w, 3] → list of detections dicts, one per image.

        With `full_masks`, each also holds `full_masks` bool [K, h, w], pasted by the model's
        `detection.paste_method` (torchvision's for converted torchvision models).
        """
        detections = self.detect(images)
        if full_masks:
            for image, found in zip(images, detections):
                self.add_full_masks(found, image.shape[:2])
        return detections

    def add_full_masks(self, detections, image_hw):
        """Add `full_masks` bool [K, h, w] to one image's `detections` (e.g. once filtered by
        score, to paste only what is kept), pasted the model's way; returns `detections`."""
        detections["full_masks"] = postprocess.paste_masks(
            detections["masks"], detections["boxes"], image_hw,
            method=self.config.detection.paste_method)
        return detections


class KerasPredictor(Predictor):
    """Predicts with an in-memory `MaskRCNN` (or one loaded from a `.keras` file)."""

    def __init__(self, model):
        self.model = model
        self.config = model.model_config
        self._forward = run_first_call_quietly(compiled_forward(model))

    def forward(self, canvases, image_info):
        """The model alone on a preprocessed batch, without the host's per-image unpacking:
        canvases float32 [B, H, W, 3] and image_info [B, 5] (`preprocessing.preprocess_for_model`)
        → {output name: numpy array} of the export contract (`MaskRCNN.infer`: detections
        [B, K, ...] and `num_detections` [B]). `detect` is `forward` then
        `postprocess.unpack_detections`."""
        outputs = self._forward(tf.constant(canvases), tf.constant(image_info))
        return {name: value.numpy() for name, value in outputs.items()}

    def detect(self, images):
        canvases, image_info = preprocessing.preprocess_for_model(images, self.config.input)
        outputs = self.forward(canvases, image_info)
        return [postprocess.unpack_detections(outputs, i) for i in range(len(images))]


def compiled_forward(model):
    """`model`'s inference as one tf.function of (canvases [B, H, W, 3], image_info [B, 5]),
    traced once: for any batch, and with a canvas per image for any canvas size. Compiled, the
    model runs 2.2× faster than eagerly for tiny at batch 8, 1.3× for r50_fpn
    (bench/bench_predictor.py). It runs the host's path (`model.HOST_PATH`, `MaskRCNN.infer`).
    """
    from keras_maskrcnn.model import HOST_PATH

    height, width = model.model_config.input.image_size
    if model.model_config.input.canvas_per_image:
        height = width = None
    signature = [tf.TensorSpec([None, height, width, 3], tf.float32),
                 tf.TensorSpec([None, preprocessing.IMAGE_INFO_SIZE], tf.float32)]

    @tf.function(input_signature=signature)
    def forward(canvases, image_info):
        return model.infer({"images": canvases, "image_info": image_info}, HOST_PATH)
    return forward


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


def with_precision(model, precision):
    """`model` (a `MaskRCNN`) computing in `precision` (INFERENCE_PRECISIONS): itself for
    float32, else a copy with its weights built under that mixed-precision policy (`precision`
    module), whose box decoding, NMS and outputs stay float32."""
    from keras_maskrcnn import precision as precision_policies
    from keras_maskrcnn.model import rebuild

    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"unknown inference precision {precision!r}; choose one of "
                         f"{INFERENCE_PRECISIONS}")
    if precision == "float32":
        return model
    with precision_policies.dtype_policy(precision):
        return rebuild(model)


def load_predictor(path, num_threads=None, precision="float32"):
    """A predictor for the model at `path`, chosen by its kind.

    A `.keras` file gives a `KerasPredictor` computing in `precision` (`with_precision`), a
    SavedModel folder (with saved_model.pb) an `export.saved_model.SavedModelPredictor`, a
    `.tflite` file an `export.litert.TFLitePredictor` running `num_threads` LiteRT threads
    (default 1). Each is a `Predictor`.
    Raises FileNotFoundError or ValueError naming `path`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path} does not exist")
    is_tflite = path.endswith(".tflite") and os.path.isfile(path)
    if num_threads is not None and not is_tflite:
        raise ValueError(f"{path}: a thread count applies to .tflite models only")
    if precision != "float32" and not path.endswith(".keras"):
        raise ValueError(f"{path}: --precision {precision} applies to .keras models only; an "
                         f"exported model computes in the precision it was exported with")
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise ValueError(f"{path} is a folder without saved_model.pb, not a SavedModel")
        from keras_maskrcnn.export.saved_model import SavedModelPredictor
        return _open_export(SavedModelPredictor, path)
    if path.endswith(".keras"):
        return KerasPredictor(with_precision(load_model(path), precision))
    if is_tflite:
        from keras_maskrcnn.export.litert import TFLitePredictor
        return _open_export(TFLitePredictor, path, num_threads or 1)
    raise ValueError(f"unsupported model file {path}: expected {MODEL_KINDS}")


def _open_export(predictor_class, path, *args):
    """`predictor_class(path, *args)`, with the runtime's load errors naming `path`."""
    try:
        return predictor_class(path, *args)
    except ValueError:
        raise  # the predictors' own checks name the path already
    except Exception as error:
        raise ValueError(f"cannot load model {path}: {error}") from error


def predict_in_batches(predictor, images, batch_size, progress=None, full_masks=False):
    """Yield detections image by image, predicting `batch_size` images at a time.

    `images` may be any iterable (a generator keeps memory flat on large sets);
    `progress` is called with the size of each batch done; `full_masks` as `Predictor.predict`.
    """
    images = iter(images)
    while batch := list(itertools.islice(images, batch_size)):
        detections = predictor.predict(batch, full_masks)
        # Report before yielding: a consumer may stop after the last image it needs.
        if progress is not None:
            progress(len(batch))
        yield from detections

"""An export's settings as one frozen dataclass, `ExportConfig`, validated in one place.

Its fields are the `export` command's options by name (`--calibration-data` is
`calibration_data`), so the command line fills it from parsed arguments and Python code builds
it directly; both get the same checks and the same messages (`ExportConfigError`).
`commands.export` takes one. This module does not import TensorFlow, so `--help` stays fast.
"""

import dataclasses
import os
import tempfile
from typing import Optional, Tuple

from keras_maskrcnn.config import INFERENCE_PRECISIONS, QUANTIZATIONS, canvas_size_problem
from keras_maskrcnn.train_config import option

EXPORT_FORMATS = ("saved_model", "tflite")
DEFAULT_CALIBRATION_IMAGES = 100
# int8 checks its detections against the float model's on this many images after the
# calibration ones (on a fifth of them, taken from the calibration ones, if none follow).
INT8_CHECK_IMAGES = 20


# Options of one format only, with what the other format does instead.
_FORMAT_ONLY = {
    "tflite": {"quantize": "the SavedModel computes in --precision",
               "calibration_data": "it calibrates --quantize int8",
               "camera_size": "the SavedModel takes images of any size"},
    "saved_model": {"include_full_masks": "TFLite returns box-frame masks, pasted on the host",
                    "precision": "TFLite's weights are set by --quantize"},
}


class ExportConfigError(ValueError):
    """Settings that cannot export: the message names the option and the problem."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Everything one export depends on.

    `model` is the trained `.keras` file, `out` the SavedModel folder or `.tflite` file to write,
    `format` one of EXPORT_FORMATS. `input_size` (H, W) exports for another canvas (the weights
    do not depend on it). SavedModel only: `precision` (`config.INFERENCE_PRECISIONS`) is what
    its graph computes in (outputs stay float32), `include_full_masks` adds in-graph pasted
    masks. TFLite only: `quantize` one of `config.QUANTIZATIONS`; int8 calibrates on the first
    `calibration_images` images of `calibration_data` (COCO JSON) and checks its detections on
    the next INT8_CHECK_IMAGES; `camera_size` (h, w) makes a file that takes uint8 camera frames
    of that size.
    """
    model: str
    out: str
    format: str
    quantize: str = "none"
    calibration_data: Optional[str] = None
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    input_size: Optional[Tuple[int, int]] = None
    camera_size: Optional[Tuple[int, int]] = None
    precision: str = "float32"
    include_full_masks: bool = False

    def __post_init__(self):
        for name in ("input_size", "camera_size"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for name in ("model", "out", "calibration_data"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        for problem in _problems(self):
            raise ExportConfigError(problem)

    @classmethod
    def from_args(cls, args):
        """A config from an argparse namespace whose attributes are named as the fields."""
        return cls(**{field.name: getattr(args, field.name) for field in dataclasses.fields(cls)
                      if hasattr(args, field.name)})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def check_out_writable(self):
        """Create `out`'s folder (a SavedModel's `out` itself) and make sure a file can be
        written there; raises ExportConfigError naming `out` otherwise."""
        folder = self.out if self.format == "saved_model" else os.path.dirname(self.out) or "."
        try:
            if self.format == "tflite" and os.path.isdir(self.out):
                raise IsADirectoryError(f"{self.out} is a folder")
            os.makedirs(folder, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            reason = error.strerror or str(error)
            raise ExportConfigError(f"{option('out')} {self.out}: cannot write there "
                                    f"({reason})") from None


def _problems(config):
    """Every rule a config must follow, as messages (the first one found is raised)."""
    c = config
    if c.format not in EXPORT_FORMATS:
        yield f"{option('format')}: unknown value {c.format!r}; choose one of {EXPORT_FORMATS}"
        return
    for name, choices in (("quantize", QUANTIZATIONS), ("precision", INFERENCE_PRECISIONS)):
        if getattr(c, name) not in choices:
            yield f"{option(name)}: unknown value {getattr(c, name)!r}; choose one of {choices}"
    if not str(c.model).endswith(".keras"):
        yield f"{option('model')} {c.model}: export reads a .keras model file"
    if c.format == "tflite" and not str(c.out).endswith(".tflite"):
        yield f"{option('out')} {c.out}: a TFLite export's file name must end in .tflite"
    other_format = "saved_model" if c.format == "tflite" else "tflite"
    for name, reason in _FORMAT_ONLY[other_format].items():
        if getattr(c, name) != _default(name):
            yield f"{option(name)} applies to {option('format')} {other_format} only; {reason}"
    if c.quantize == "int8" and c.calibration_data is None:
        yield (f"{option('quantize')} int8 needs {option('calibration_data')} ANN.json: images "
               f"on which to calibrate the int8 activations")
    if c.calibration_data is not None and c.quantize != "int8":
        yield f"{option('calibration_data')} is used by {option('quantize')} int8 only"
    if not (_is_int(c.calibration_images) and c.calibration_images >= 1):
        yield (f"{option('calibration_images')} must be a whole number of at least 1, got "
               f"{c.calibration_images!r}")
    if c.input_size is not None and canvas_size_problem(c.input_size):
        yield f"{option('input_size')} {canvas_size_problem(c.input_size)}"
    if c.camera_size is not None and not (
            len(c.camera_size) == 2 and all(_is_int(side) and side > 0 for side in c.camera_size)):
        yield f"{option('camera_size')} must be H W, both positive, got {c.camera_size!r}"
    if not isinstance(c.include_full_masks, bool):
        yield f"{option('include_full_masks')} must be true or false, got {c.include_full_masks!r}"


def _default(name):
    return next(field.default for field in dataclasses.fields(ExportConfig) if field.name == name)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)

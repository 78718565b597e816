"""The public API at the package's top: every name resolves to its module's object, and
importing the package (or its TensorFlow-free names) loads no TensorFlow."""

import importlib
import subprocess
import sys

import pytest

import keras_maskrcnn


def test_importing_the_package_and_its_config_names_loads_no_tensorflow():
    probe = ("import sys, keras_maskrcnn\n"
             "names = dir(keras_maskrcnn)\n"
             "from keras_maskrcnn import MaskRCNNConfig, TrainConfig, preset, tiny\n"
             "assert preset('tiny') == tiny() and 'MaskRCNN' in names\n"
             "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("name", keras_maskrcnn.__all__)
def test_each_public_name_is_its_modules_object(name):
    module = importlib.import_module(keras_maskrcnn._PUBLIC[name])
    assert getattr(keras_maskrcnn, name) is getattr(module, name)
    assert name in dir(keras_maskrcnn)


def test_the_public_api_has_the_quick_starts_names():
    assert {"MaskRCNN", "MaskRCNNConfig", "preset", "CocoDataset", "load_predictor", "Predictor",
            "TrainConfig", "train", "evaluate_predictor"} <= set(keras_maskrcnn.__all__)


def test_an_unknown_name_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="has no attribute 'Mask_RCNN'"):
        keras_maskrcnn.Mask_RCNN  # noqa: B018
    # Submodules still import as before.
    from keras_maskrcnn import ops  # noqa: F401

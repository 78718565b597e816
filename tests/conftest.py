"""Fixtures shared by several test modules."""

import keras
import pytest

from keras_maskrcnn import cli
from keras_maskrcnn.config import tiny
from keras_maskrcnn.model import MaskRCNN

SHAPES_IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A shapes set of 4 training and 2 validation images of 64 px, written once per module
    (each module gets its own folder, so a test that edits it affects no other module)."""
    root = tmp_path_factory.mktemp("shapes")
    assert cli.main(["make-shapes", str(root), "--train", "4", "--val", "2",
                     "--size", str(SHAPES_IMAGE_SIZE)]) == 0
    return root


@pytest.fixture
def run_cli(capsys):
    """cli.main in this process: run_cli(*argv) → (exit code, stdout, stderr)."""
    def run(*argv):
        code = cli.main([str(arg) for arg in argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.fixture(scope="session")
def untrained_tiny_model():
    """A random-init tiny `MaskRCNN` (seed 0, category ids 3 and 7) whose score threshold is low
    enough for it to detect something, built once; tests must not change it."""
    keras.utils.set_random_seed(0)
    config = tiny(num_classes=2, category_ids=(3, 7),
                  detection=dict(score_threshold=0.01, max_detections=20, pre_nms_topk=256))
    return MaskRCNN(config, seed=0)


@pytest.fixture(scope="session")
def tiny_saved_model(tmp_path_factory, untrained_tiny_model):
    """`untrained_tiny_model` exported once as version 1 of a SavedModel base folder
    (BASE/1/saved_model.pb): what `keras-maskrcnn serve BASE` serves. Returns BASE."""
    from keras_maskrcnn.export.saved_model import export_saved_model

    base = tmp_path_factory.mktemp("served") / "tiny"
    export_saved_model(untrained_tiny_model, base / "1")
    return base

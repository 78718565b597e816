"""Fixtures shared by several test modules."""

from pathlib import Path

import keras
import pytest

from keras_maskrcnn import cli
from keras_maskrcnn.config import tiny
from keras_maskrcnn.model import MaskRCNN

SHAPES_IMAGE_SIZE = 64

# `make test` runs the files in two pytest-xdist processes (`--dist loadfile`): each file goes
# whole to one process, so its module fixtures are built once, and the files of a group below
# go to the same process, so the session fixtures they share are built once too (the served
# SavedModel: one export, not one per process).
SHARED_FIXTURE_GROUPS = {"serving": ("test_serve.py", "test_serve_load.py",
                                     "test_serve_browser.py", "test_export_saved_model.py")}
GROUP_OF_FILE = {file: group for group, files in SHARED_FIXTURE_GROUPS.items() for file in files}


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: absent without pytest-xdist
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile`, with the files of a SHARED_FIXTURE_GROUPS group sent together."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FileGroupScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid):
            path = super()._split_scope(nodeid)  # the test's file
            return GROUP_OF_FILE.get(Path(path).name, path)

    return FileGroupScheduling(config, log)


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

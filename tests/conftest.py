"""Fixtures shared by several test modules."""

import pytest

from keras_maskrcnn import cli

SHAPES_IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A shapes set of 4 training and 2 validation images of 64 px, written once per module
    (each module gets its own folder, so a test that edits it affects no other module)."""
    root = tmp_path_factory.mktemp("shapes")
    assert cli.main(["make-shapes", str(root), "--train", "4", "--val", "2",
                     "--size", str(SHAPES_IMAGE_SIZE)]) == 0
    return root

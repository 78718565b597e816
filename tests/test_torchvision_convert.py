"""The torchvision checkpoint converter's parts: kernel layouts, key names, batch-norm folding
and its errors. (`test_torchvision_parity` converts a whole model and compares its outputs.)"""

import re
import sys

import numpy as np
import pytest

from keras_maskrcnn import cli
from torch_imports import import_torch as _torch
from torch_imports import random_torchvision_maskrcnn


@pytest.fixture(scope="module")
def state_dict():
    """A random torchvision Mask R-CNN's weights as numpy arrays, by name."""
    model = random_torchvision_maskrcnn(score_threshold=0.05)
    return {name: value.numpy() for name, value in model.state_dict().items()}


def test_transposed_convolution_kernels_need_no_flip():
    torch, _ = _torch()
    import keras

    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(5, 3, 2, 2)).astype(np.float32)  # [in, out, kh, kw]
    inputs = rng.normal(size=(1, 4, 6, 5)).astype(np.float32)
    layer = torch.nn.ConvTranspose2d(5, 3, 2, stride=2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(kernel))
        want = layer(torch.from_numpy(inputs).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    ours = keras.layers.Conv2DTranspose(3, 2, strides=2, use_bias=False)
    ours.build(inputs.shape)
    ours.set_weights([kernel.transpose(2, 3, 1, 0)])
    np.testing.assert_allclose(np.asarray(ours(inputs)), want, atol=1e-5)


def test_legacy_key_names_convert_alike(state_dict):
    from keras_maskrcnn.config import torchvision_r50_fpn
    from keras_maskrcnn.convert.torchvision import keras_weights

    legacy = {}
    for name, value in state_dict.items():
        name = name.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for blocks in ("inner_blocks", "layer_blocks"):
            for level in range(4):
                name = name.replace(f"fpn.{blocks}.{level}.0.", f"fpn.{blocks}.{level}.")
        for index in range(4):
            name = name.replace(f"mask_head.{index}.0.", f"mask_head.mask_fcn{index + 1}.")
        legacy[name] = value
    assert legacy.keys() != state_dict.keys()
    config = torchvision_r50_fpn()
    want, got = keras_weights(state_dict, config), keras_weights(legacy, config)
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_batch_norm_statistics_fold_into_scale_and_offset(state_dict):
    from keras_maskrcnn.config import TORCHVISION_BATCH_NORM_EPSILON, torchvision_r50_fpn
    from keras_maskrcnn.convert.torchvision import keras_weights

    weights = keras_weights(state_dict, torchvision_r50_fpn(), TORCHVISION_BATCH_NORM_EPSILON)
    prefix = "backbone.body.layer2.0.bn2"
    scale = state_dict[f"{prefix}.weight"] / np.sqrt(state_dict[f"{prefix}.running_var"])
    np.testing.assert_allclose(weights["backbone/layer2_block0/bn2/gamma"], scale, rtol=1e-6)
    np.testing.assert_allclose(weights["backbone/layer2_block0/bn2/beta"],
                               state_dict[f"{prefix}.bias"] - state_dict[f"{prefix}.running_mean"] * scale,
                               rtol=1e-5, atol=1e-7)
    assert not weights["backbone/layer2_block0/bn2/moving_mean"].any()


def test_unknown_entries_are_reported(state_dict):
    from keras_maskrcnn.config import torchvision_r50_fpn
    from keras_maskrcnn.convert.torchvision import keras_weights

    with pytest.raises(ValueError, match="no place for.*roi_heads.keypoint_head.weight"):
        keras_weights({**state_dict, "roi_heads.keypoint_head.weight": np.zeros(3)}, torchvision_r50_fpn())
    without_fc6 = {name: value for name, value in state_dict.items() if "fc6" not in name}
    with pytest.raises(ValueError, match="no roi_heads.box_head.fc6.weight"):
        keras_weights(without_fc6, torchvision_r50_fpn())


def test_missing_torch_names_the_extra(monkeypatch, tmp_path):
    from keras_maskrcnn.convert.torchvision import load_state_dict

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r'\[torch\] extra, pip install -e "\.\[torch\]"') as error:
        load_state_dict(tmp_path / "missing.pth")
    assert "pip install keras-maskrcnn" not in str(error.value)  # PyPI's is another project


def test_convert_torchvision_reports_user_errors(tmp_path, capsys):
    _torch()
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    for checkpoint, out, message in (
            ("missing.pth", "model.keras", "missing.pth does not exist"),
            ("notes.pth", "model.keras", "cannot read .*notes.pth as a torch state dict"),
            ("notes.pth", "model.h5", "model.h5: the converted model's file name must end in .keras")):
        code = cli.main(["convert-torchvision", str(tmp_path / checkpoint), "--out", str(tmp_path / out)])
        err = capsys.readouterr().err
        assert code == cli.USER_ERROR_EXIT_CODE
        assert re.search(message, err.strip().splitlines()[-1]), err

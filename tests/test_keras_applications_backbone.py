"""ImageNet backbone weights from keras.applications' ResNet50 and ResNet101, checked offline on
random ones.

Each ResNet gets random batch-norm statistics and convolution biases (so that folding them is
exercised), is saved as a weights file and loaded back through `load_imagenet_backbone`; our
backbone on the config's normalised image must give its C2..C5 on Caffe-preprocessed pixels.
"""

import dataclasses

import keras
import numpy as np
import pytest

from keras_maskrcnn.config import keras_imagenet_r50_fpn, keras_imagenet_r101_fpn, r50_fpn
from keras_maskrcnn.convert.keras_applications import load_imagenet_backbone
from keras_maskrcnn.model import MaskRCNN
from random_statistics import randomise_batch_norms

pytestmark = pytest.mark.slow  # builds, converts or trains models: see pytest.ini

IMAGE_HW = (64, 96)
RESNETS = {"ResNet50": keras_imagenet_r50_fpn, "ResNet101": keras_imagenet_r101_fpn}


def _random_resnet(name, folder):
    """A random keras.applications ResNet `name` and the path of its saved weights."""
    keras.utils.set_random_seed(0)
    resnet = getattr(keras.applications, name)(weights=None, include_top=False)
    rng = np.random.default_rng(0)
    randomise_batch_norms(resnet, rng)
    for layer in resnet.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape))
    path = folder / f"{name}.weights.h5"
    resnet.save_weights(path)
    return resnet, path


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    """A random keras.applications ResNet50 and the path of its saved weights."""
    return _random_resnet("ResNet50", tmp_path_factory.mktemp("resnet50"))


@pytest.mark.parametrize("name", sorted(RESNETS))
def test_backbone_reproduces_keras_applications_resnets(name, resnet_weights, tmp_path):
    resnet, path = resnet_weights if name == "ResNet50" else _random_resnet(name, tmp_path)
    config = RESNETS[name](num_classes=2)
    config = config.replace(input=dataclasses.replace(config.input, image_size=IMAGE_HW))
    model = MaskRCNN(config)
    load_imagenet_backbone(model, str(path))

    image = np.random.default_rng(1).uniform(0, 255, size=(1, *IMAGE_HW, 3)).astype(np.float32)
    # Each stage's last block's output: C2..C5.
    blocks = config.backbone.stage_blocks
    stages = keras.Model(resnet.input, [resnet.get_layer(f"conv{stage + 2}_block{count}_out").output
                                        for stage, count in enumerate(blocks)])
    want = stages(keras.applications.resnet.preprocess_input(image.copy()))
    normalised = (image - np.array(config.input.pixel_mean)) / np.array(config.input.pixel_std)
    got = model.backbone(normalised)
    for level, (w, g) in enumerate(zip(want, got), 2):
        w, g = np.asarray(w), np.asarray(g)
        assert w.shape == g.shape
        scale = np.abs(w).max()
        diff = np.abs(w - g).max()
        print(f"\n[keras.applications {name}] C{level} {w.shape[1:3]}: max_abs_diff={diff:.3g}, "
              f"scale={scale:.3g}")
        assert diff <= 1e-4 * scale


def test_other_configs_are_refused(resnet_weights):
    resnet, _ = resnet_weights
    with pytest.raises(ValueError, match="stride_in_1x1=True"):
        load_imagenet_backbone(MaskRCNN(r50_fpn(input=dict(image_size=IMAGE_HW))), resnet)
    config = keras_imagenet_r50_fpn(input=dict(image_size=IMAGE_HW))
    config = config.replace(backbone=dataclasses.replace(config.backbone, stage_blocks=(2, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"ResNets have \[\(3, 4, 6, 3\), \(3, 4, 23, 3\)\] blocks"):
        load_imagenet_backbone(MaskRCNN(config), resnet)

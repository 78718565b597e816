"""torchvision's ImageNet ResNets as backbones (`convert.torchvision.load_resnet_backbone`).

A seeded random resnet50 with random batch-norm statistics is saved as a state dict; loaded into
r50_fpn's backbone it gives torchvision's C2..C5, and a checkpoint that does not fit the
backbone is refused with the reason. `pytest -s` prints the measured differences.
"""

import numpy as np
import pytest

from torch_imports import import_torch as _torch

pytestmark = pytest.mark.slow  # builds, converts or trains models: see pytest.ini

BACKBONE_IMAGE_HW = (64, 96)


@pytest.fixture(scope="module")
def resnet50_checkpoint(tmp_path_factory):
    """A seeded random torchvision resnet50 with random batch-norm statistics (in eval mode)
    and the path of its saved state dict."""
    torch, torchvision = _torch()
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(weights=None).eval()
    with torch.no_grad():
        for module in resnet.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("resnet50") / "resnet50.pth"
    torch.save(resnet.state_dict(), path)
    return resnet, path


def test_torchvision_imagenet_resnet_becomes_the_backbone(resnet50_checkpoint):
    torch, _ = _torch()
    from keras_maskrcnn.config import r50_fpn
    from keras_maskrcnn.convert.torchvision import load_resnet_backbone
    from keras_maskrcnn.model import MaskRCNN

    resnet, path = resnet50_checkpoint
    config = r50_fpn(num_classes=2, input=dict(image_size=BACKBONE_IMAGE_HW))
    model = MaskRCNN(config)
    load_resnet_backbone(model, str(path))

    image = np.random.default_rng(1).uniform(0, 255, size=(1, *BACKBONE_IMAGE_HW, 3))
    normalised = ((image - config.input.pixel_mean) / config.input.pixel_std).astype(np.float32)
    with torch.no_grad():
        x = torch.from_numpy(normalised).permute(0, 3, 1, 2)
        x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
        want = []
        for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
            x = stage(x)
            want.append(x.permute(0, 2, 3, 1).numpy())
    got = model.backbone(normalised)
    for level, (w, g) in enumerate(zip(want, got), 2):
        g = np.asarray(g)
        assert w.shape == g.shape
        scale, diff = np.abs(w).max(), np.abs(w - g).max()
        print(f"\n[torchvision resnet50] C{level} {w.shape[1:3]}: max_abs_diff={diff:.3g}, "
              f"scale={scale:.3g}")
        assert diff <= 1e-4 * scale


def test_a_resnet_checkpoint_that_does_not_fit_is_refused(resnet50_checkpoint):
    from keras_maskrcnn.config import keras_imagenet_r50_fpn, r101_fpn
    from keras_maskrcnn.convert.torchvision import load_resnet_backbone
    from keras_maskrcnn.model import MaskRCNN

    _, path = resnet50_checkpoint
    small = dict(image_size=BACKBONE_IMAGE_HW)
    with pytest.raises(ValueError, match=r"resnet50.pth: .*has no layer3.6.conv1.weight"):
        load_resnet_backbone(MaskRCNN(r101_fpn(num_classes=2, input=small)), str(path))
    with pytest.raises(ValueError, match="resnet50.pth: a torchvision ResNet needs torchvision's "
                                         "backbone layout"):
        load_resnet_backbone(MaskRCNN(keras_imagenet_r50_fpn(num_classes=2, input=small)), str(path))

"""torch and torchvision for the tests that compare with them, and a random torchvision Mask R-CNN."""

import sys

import pytest


def import_torch():
    """torch and torchvision, which `make test` installs (the `torch` extra)."""
    # torchvision imports torch._dynamo, which loads Triton's LLVM; with TensorFlow's LLVM already
    # loaded that crashes the process. Triton only serves torch.compile on GPUs: hide it.
    sys.modules.setdefault("triton", None)
    try:
        import torch
        import torchvision
    except ImportError:
        pytest.fail('the parity tests need torch and torchvision: pip install -e ".[test,torch]"')
    return torch, torchvision


# Random ResNet activations grow to ~1e3; scaling the FPN's output convolutions gives the heads
# O(1) features, as trained ones see, so proposals and detections are not degenerate.
FPN_OUTPUT_SCALE = 1e-3


def random_torchvision_maskrcnn(score_threshold):
    """torchvision's `maskrcnn_resnet50_fpn` in eval mode with seeded random weights and random
    batch-norm statistics (so that converting them is exercised), its FPN outputs scaled by
    FPN_OUTPUT_SCALE, keeping detections scored at least `score_threshold`."""
    torch, torchvision = import_torch()
    torch.manual_seed(0)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, box_score_thresh=score_threshold).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
        for block in model.backbone.fpn.layer_blocks:
            block[0].weight *= FPN_OUTPUT_SCALE
            block[0].bias *= FPN_OUTPUT_SCALE
    return model

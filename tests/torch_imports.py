"""torch and torchvision for the tests that compare with them."""

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

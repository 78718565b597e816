"""Convert torchvision's `maskrcnn_resnet50_fpn` weights into a `MaskRCNN`, and its ImageNet
ResNets' weights into a `MaskRCNN`'s backbone.

The checkpoint is torchvision's published COCO file or `torch.save(model.state_dict())` of a
`maskrcnn_resnet50_fpn`; the key names of releases before 0.13 are accepted too. A backbone
checkpoint is a `torchvision.models.resnet50` or `resnet101` state dict (e.g. the published
resnet50-0676ba61.pth), which `load_resnet_backbone` copies into an `r50_fpn` or `r101_fpn`
model. torch is
only needed to read the file and is imported then (the [torch] extra: `pip install -e ".[torch]"`).

Layouts, torch → Keras: convolution kernels [out, in, kh, kw] → [kh, kw, in, out];
transposed convolution kernels [in, out, kh, kw] → [kh, kw, out, in] (neither framework
flips the kernel: both compute the transpose of a cross-correlation); linear weights
[out, in] → [in, out]. Box deltas (dx, dy, dw, dh) → (dy, dx, dh, dw), in the RPN (per
anchor) and the box predictor (per class). torch's box head flattens RoI features as
(F, P, P), ours as (P, P, F). The mask predictor loses torchvision's background channel 0.
Batch norms are written folded (`layers.backbones.folded_batch_norm`), with the ε the checkpoint ran with.

Shapes: C foreground classes (torchvision's labels 1..C), A anchors per location,
F FPN channels, P box pool size.
"""

import os
import re

import numpy as np

from keras_maskrcnn.config import (IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD,
                                   TORCHVISION_BATCH_NORM_EPSILON, BackboneConfig,
                                   torchvision_r50_fpn)
from keras_maskrcnn.convert.assign import assign_weights
from keras_maskrcnn.layers.backbones import folded_batch_norm
from keras_maskrcnn.model import MaskRCNN

# torchvision's detection models run an ImageNet backbone with FrozenBatchNorm2d's default ε.
IMAGENET_BATCH_NORM_EPSILON = 1e-5
TORCH_MISSING = ('reading torchvision checkpoints needs torch and torchvision: the [torch] '
                 'extra, pip install -e ".[torch]" in the keras-maskrcnn checkout')
DELTA_ORDER = [1, 0, 3, 2]  # (dx, dy, dw, dh) → (dy, dx, dh, dw)
# Names before torchvision 0.13 wrapped these convolutions in Conv2dNormActivation.
_LEGACY_KEYS = (
    (r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$", r"\1.0.\2"),
    (r"^(rpn\.head\.conv)\.(weight|bias)$", r"\1.0.0.\2"),
    (r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$",
     lambda match: f"roi_heads.mask_head.{int(match[1]) - 1}.0.{match[2]}"),
)
# Batch-norm step counters: not weights.
_IGNORED_KEY = re.compile(r"\.num_batches_tracked$")


def load_state_dict(path):
    """A torch checkpoint file → {name: numpy array}.

    Also accepts `{"model": state_dict, ...}`, the layout of torchvision's reference
    training scripts' checkpoints.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(TORCH_MISSING) from error
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # torch's message runs to paragraphs and suggests unsafe loading; its type is enough.
        raise ValueError(f"cannot read {path} as a torch state dict ({type(error).__name__}); "
                         f"write one with torch.save(model.state_dict())") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    if isinstance(state.get("model"), dict):
        state = state["model"]
    return {name: value.detach().cpu().numpy() for name, value in state.items()}


class _Checkpoint:
    """A state dict under current key names that remembers which entries were read."""

    def __init__(self, state_dict, kind="a maskrcnn_resnet50_fpn"):
        self.kind = kind
        self.values = {}
        for name, value in state_dict.items():
            for pattern, replacement in _LEGACY_KEYS:
                name = re.sub(pattern, replacement, name)
            self.values[name] = value
        self.unread = {name for name in self.values if not _IGNORED_KEY.search(name)}

    def __getitem__(self, name):
        if name not in self.values:
            raise ValueError(f"the checkpoint has no {name}: is it {self.kind} state dict?")
        self.unread.discard(name)
        return np.asarray(self.values[name], np.float64)

    def check_all_read(self, ignored=()):
        """Raise ValueError if entries other than `ignored` were never read."""
        unread = sorted(self.unread - set(ignored))
        if unread:
            raise ValueError(f"the checkpoint has entries this model has no place for: {unread}")


class _KerasWeights:
    """Reads a `_Checkpoint`'s entries and collects them in our layouts in `weights`
    ({weight path inside `MaskRCNN`: float64 array})."""

    def __init__(self, checkpoint, batch_norm_epsilon):
        self.checkpoint, self.batch_norm_epsilon, self.weights = checkpoint, batch_norm_epsilon, {}

    def conv(self, keras_name, torch_name, bias=True):
        self.weights[f"{keras_name}/kernel"] = self.checkpoint[f"{torch_name}.weight"].transpose(2, 3, 1, 0)
        if bias:
            self.weights[f"{keras_name}/bias"] = self.checkpoint[f"{torch_name}.bias"]

    def frozen_bn(self, keras_name, torch_name):
        folded = folded_batch_norm(
            self.checkpoint[f"{torch_name}.weight"], self.checkpoint[f"{torch_name}.bias"],
            self.checkpoint[f"{torch_name}.running_mean"], self.checkpoint[f"{torch_name}.running_var"],
            self.batch_norm_epsilon)
        self.weights.update({f"{keras_name}/{name}": value for name, value in folded.items()})

    def linear(self, keras_name, torch_name):
        self.weights[f"{keras_name}/kernel"] = self.checkpoint[f"{torch_name}.weight"].T
        self.weights[f"{keras_name}/bias"] = self.checkpoint[f"{torch_name}.bias"]

    def reorder_deltas(self, keras_name):
        """Outputs (the last axis) in groups of 4: (dx, dy, dw, dh) → (dy, dx, dh, dw)."""
        for part in ("kernel", "bias"):
            values = self.weights[f"{keras_name}/{part}"]
            order = np.arange(values.shape[-1]).reshape(-1, 4)[:, DELTA_ORDER].reshape(-1)
            self.weights[f"{keras_name}/{part}"] = values[..., order]

    def resnet(self, stage_blocks, prefix):
        """torchvision's ResNet (keys `prefix` + conv1, bn1, layer1..4) → `backbone/`."""
        self.conv("backbone/stem_conv", f"{prefix}conv1", bias=False)
        self.frozen_bn("backbone/stem_bn", f"{prefix}bn1")
        for stage, blocks in enumerate(stage_blocks):
            for block in range(blocks):
                keras_block = f"backbone/layer{stage + 1}_block{block}"
                torch_block = f"{prefix}layer{stage + 1}.{block}"
                for index in (1, 2, 3):
                    self.conv(f"{keras_block}/conv{index}", f"{torch_block}.conv{index}", bias=False)
                    self.frozen_bn(f"{keras_block}/bn{index}", f"{torch_block}.bn{index}")
                if block == 0:
                    self.conv(f"{keras_block}/downsample_conv", f"{torch_block}.downsample.0",
                              bias=False)
                    self.frozen_bn(f"{keras_block}/downsample_bn", f"{torch_block}.downsample.1")

    def float32(self):
        return {name: value.astype(np.float32) for name, value in self.weights.items()}


def keras_weights(state_dict, config, batch_norm_epsilon=TORCHVISION_BATCH_NORM_EPSILON):
    """torchvision's weights in our layouts → {weight path inside `MaskRCNN`: float32 array}.

    `batch_norm_epsilon` is the ε the checkpoint's batch norms were run with (see
    TORCHVISION_BATCH_NORM_EPSILON). Raises ValueError on missing or unexpected entries.
    """
    checkpoint = _Checkpoint(state_dict)
    out = _KerasWeights(checkpoint, batch_norm_epsilon)
    out.resnet(config.backbone.stage_blocks, "backbone.body.")

    for level in range(len(config.backbone.stage_blocks)):
        out.conv(f"fpn/lateral{level}", f"backbone.fpn.inner_blocks.{level}.0")
        out.conv(f"fpn/output{level}", f"backbone.fpn.layer_blocks.{level}.0")

    out.conv("rpn_head/conv", "rpn.head.conv.0.0")
    out.conv("rpn_head/objectness", "rpn.head.cls_logits")
    out.conv("rpn_head/deltas", "rpn.head.bbox_pred")
    out.reorder_deltas("rpn_head/deltas")

    # fc6 reads torch's (F, P, P) flattening; permute its input rows to our (P, P, F).
    pool, channels = config.roi.box_pool_size, config.fpn.channels
    fc6 = checkpoint["roi_heads.box_head.fc6.weight"].T
    out.weights["box_head/fc1/kernel"] = (fc6.reshape(channels, pool, pool, -1)
                                          .transpose(1, 2, 0, 3).reshape(pool * pool * channels, -1))
    out.weights["box_head/fc1/bias"] = checkpoint["roi_heads.box_head.fc6.bias"]
    out.linear("box_head/fc2", "roi_heads.box_head.fc7")
    out.linear("box_head/class_logits", "roi_heads.box_predictor.cls_score")
    out.linear("box_head/deltas", "roi_heads.box_predictor.bbox_pred")
    out.reorder_deltas("box_head/deltas")

    for index in range(config.mask_head.num_convs):
        out.conv(f"mask_head/conv{index + 1}", f"roi_heads.mask_head.{index}.0")
    # The convolution's transpose also takes ConvTranspose2d's [in, out, kh, kw] to [kh, kw, out, in].
    out.conv("mask_head/deconv", "roi_heads.mask_predictor.conv5_mask")
    out.conv("mask_head/predictor", "roi_heads.mask_predictor.mask_fcn_logits")
    out.weights["mask_head/predictor/kernel"] = out.weights["mask_head/predictor/kernel"][..., 1:]
    out.weights["mask_head/predictor/bias"] = out.weights["mask_head/predictor/bias"][1:]

    checkpoint.check_all_read()
    return out.float32()


def resnet_backbone_weights(state_dict, config, batch_norm_epsilon=IMAGENET_BATCH_NORM_EPSILON):
    """A torchvision ImageNet ResNet's state dict (`torchvision.models.resnet50` or `resnet101`:
    conv1, bn1, layer1..4 and the classifier fc, which is left out) → {weight path: float32
    array} for `backbone/` of a `MaskRCNN` of `config`. Raises ValueError on missing or
    unexpected entries (e.g. a ResNet-101 file for a ResNet-50 config)."""
    checkpoint = _Checkpoint(state_dict, kind=f"a torchvision ResNet with {config.backbone.stage_blocks} blocks")
    out = _KerasWeights(checkpoint, batch_norm_epsilon)
    out.resnet(config.backbone.stage_blocks, "")
    checkpoint.check_all_read(ignored=("fc.weight", "fc.bias"))
    return out.float32()


def load_resnet_backbone(model, checkpoint_path, batch_norm_epsilon=IMAGENET_BATCH_NORM_EPSILON):
    """Copy a torchvision ImageNet ResNet checkpoint (a .pth state dict) into `model.backbone`;
    the rest of the model is left as it is. `model` is a `MaskRCNN` whose backbone is
    torchvision's ResNet (`config.r50_fpn`, `config.r101_fpn`): stride on the 3×3 convolution
    and torchvision's pixel normalisation. Raises ValueError naming the file otherwise."""
    config = model.model_config
    if config.backbone != BackboneConfig(stage_blocks=config.backbone.stage_blocks,
                                         norm=config.backbone.norm):
        raise ValueError(f"{checkpoint_path}: a torchvision ResNet needs torchvision's backbone "
                         f"layout (config.r50_fpn or r101_fpn), the config has {config.backbone}")
    if ((tuple(config.input.pixel_mean), tuple(config.input.pixel_std))
            != (IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD)):
        raise ValueError(f"{checkpoint_path}: a torchvision ResNet expects torchvision's pixel "
                         f"normalisation, the config has mean {config.input.pixel_mean} and std "
                         f"{config.input.pixel_std}")
    try:
        weights = resnet_backbone_weights(load_state_dict(checkpoint_path), config, batch_norm_epsilon)
    except ValueError as error:
        raise ValueError(f"{checkpoint_path}: {error}") from error
    assign_weights(model, weights, scope="backbone/")


def checkpoint_num_classes(state_dict):
    """Foreground classes of a torchvision checkpoint (its box predictor's labels minus background)."""
    return _Checkpoint(state_dict)["roi_heads.box_predictor.cls_score.weight"].shape[0] - 1


def convert_state_dict(state_dict, config=None, batch_norm_epsilon=TORCHVISION_BATCH_NORM_EPSILON):
    """A `MaskRCNN` holding torchvision's weights.

    `config` defaults to `torchvision_r50_fpn` with the checkpoint's number of classes; a
    given one must have the same layer sizes (its canvas, thresholds and so on are free).
    """
    num_classes = checkpoint_num_classes(state_dict)
    config = config or torchvision_r50_fpn(num_classes)
    if config.num_classes != num_classes:
        raise ValueError(f"the checkpoint has {num_classes} foreground classes, the config "
                         f"{config.num_classes}")
    model = MaskRCNN(config)
    assign_weights(model, keras_weights(state_dict, config, batch_norm_epsilon))
    return model


def convert_checkpoint(checkpoint_path, out_path, batch_norm_epsilon=TORCHVISION_BATCH_NORM_EPSILON,
                       config=None):
    """Read a torchvision checkpoint file and save it as a `.keras` model; returns `out_path`.

    Raises FileNotFoundError, ImportError (no torch) or ValueError, naming the checkpoint.
    """
    state_dict = load_state_dict(checkpoint_path)
    try:
        model = convert_state_dict(state_dict, config, batch_norm_epsilon)
    except ValueError as error:
        raise ValueError(f"{checkpoint_path}: {error}") from error
    model.save(out_path)
    return out_path

"""The backbones a config can name (`BackboneConfig.kind`), each described once.

A backbone is a Keras layer, images [B, H, W, 3] (normalised by the config's pixel mean and
std) → [C2, C3, C4, C5] of strides 4..32. What the rest of the package needs of it is here:
how to build it (`model.MaskRCNN`), its parts from the stem to C5 (which
`MaskRCNN.freeze_backbone_stages` and `--trainable-stages` count), and its ImageNet weights
from keras.applications (`convert.keras_applications`). Adding a backbone is a layer module in
`layers/`, an entry here and its name in `config.BACKBONE_KINDS` (docs/design.md §10).

keras.applications' ResNets are ResNet v1: each stage's first block strides on its first 1×1
convolution; its convolutions carry biases; its batch norms use ε = 1.001e-5; it expects
Caffe's preprocessing (BGR channels, mean subtracted, no scaling). `config.keras_imagenet_r50_fpn`
(and `keras_imagenet_r101_fpn`) describes the matching model (`stride_in_1x1`, Caffe's means).
The image stays RGB: the stem kernel's input channels are reversed here instead. Each bias folds
into the batch norm after its convolution (`layers.backbones.folded_batch_norm`).

The MobileNetV3 backbone (`layers.mobilenet`) is keras.applications' network itself: its
weights copy over layer by layer, under the same names. It expects pixels in [-1, 1]
(`config.mobilenetv3_fpn`'s normalisation), which its Rescaling layer, left out, would do.
"""

import dataclasses
from typing import Callable, Optional

import keras
import numpy as np

from keras_maskrcnn.config import (BACKBONE_KINDS, CAFFE_PIXEL_MEAN, CAFFE_PIXEL_STD,
                                   MOBILENET_PIXEL_MEAN, MOBILENET_PIXEL_STD,
                                   RESNET101_STAGE_BLOCKS, BackboneConfig)
from keras_maskrcnn.layers.backbones import ResNet, folded_batch_norm
from keras_maskrcnn.layers.mobilenet import MobileNetV3Backbone

# keras.applications names stages conv2..conv5, blocks from 1, and the shortcut convolution 0.
FIRST_STAGE_NAME = 2
# keras.applications' ResNets by blocks per stage.
KERAS_RESNETS = {(3, 4, 6, 3): "ResNet50", RESNET101_STAGE_BLOCKS: "ResNet101"}


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One kind of backbone.

    build: BackboneConfig → the layer, named "backbone".
    stages: the layer → its parts from the stem to C5 (lists of layers) that
      `freeze_backbone_stages` counts, or None when it trains whole or not at all.
    imagenet_weights: (MaskRCNNConfig, source) → {weight path under "backbone/": array}, from
      keras.applications' ImageNet network: `source` is "imagenet" (Keras downloads its file),
      a weights file of that network or the network itself. Raises ValueError when the config
      does not describe that network.
    """
    build: Callable
    stages: Optional[Callable]
    imagenet_weights: Callable


def _check_pixel_normalisation(config, network, mean, std, preset):
    """Raise ValueError unless `config` normalises pixels as `network` (a name) expects."""
    if (tuple(config.input.pixel_mean), tuple(config.input.pixel_std)) != (mean, std):
        raise ValueError(f"keras.applications' {network} expects pixel mean {mean} and std {std}, "
                         f"the config has {config.input.pixel_mean} and {config.input.pixel_std}; "
                         f"build it with config.{preset}")


def _keras_resnet_name(config):
    """The name of the keras.applications ResNet that `config` describes, with its inputs;
    raises ValueError if none does."""
    stage_blocks = config.backbone.stage_blocks
    if stage_blocks not in KERAS_RESNETS:
        raise ValueError(f"keras.applications' ResNets have {sorted(KERAS_RESNETS)} blocks per "
                         f"stage, the config has {stage_blocks}")
    name = KERAS_RESNETS[stage_blocks]
    expected = BackboneConfig(stage_blocks=stage_blocks, norm=config.backbone.norm,
                              stride_in_1x1=True)
    if config.backbone != expected:
        raise ValueError(f"keras.applications' {name} needs backbone {expected}, the config has "
                         f"{config.backbone}; build it with config.keras_imagenet_r50_fpn or "
                         f"keras_imagenet_r101_fpn")
    _check_pixel_normalisation(config, name, CAFFE_PIXEL_MEAN, CAFFE_PIXEL_STD,
                               "keras_imagenet_r50_fpn")
    return name


def keras_resnet_weights(resnet, stage_blocks):
    """A keras.applications ResNet50 or ResNet101 → {weight path inside `MaskRCNN`: array} for
    `backbone/`."""
    weights = {}

    def conv_bn(ours, conv_name, bn_name, reverse_input_channels=False):
        conv, bn = resnet.get_layer(conv_name), resnet.get_layer(bn_name)
        kernel = np.asarray(conv.kernel)
        weights[f"backbone/{ours[0]}/kernel"] = kernel[:, :, ::-1] if reverse_input_channels else kernel
        folded = folded_batch_norm(bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance, bn.epsilon,
                                   conv_bias=conv.bias)
        weights.update({f"backbone/{ours[1]}/{name}": value for name, value in folded.items()})

    conv_bn(("stem_conv", "stem_bn"), "conv1_conv", "conv1_bn", reverse_input_channels=True)
    for stage, blocks in enumerate(stage_blocks):
        for block in range(blocks):
            ours = f"layer{stage + 1}_block{block}"
            theirs = f"conv{stage + FIRST_STAGE_NAME}_block{block + 1}"
            for index in (1, 2, 3):
                conv_bn((f"{ours}/conv{index}", f"{ours}/bn{index}"), f"{theirs}_{index}_conv",
                        f"{theirs}_{index}_bn")
            if block == 0:
                conv_bn((f"{ours}/downsample_conv", f"{ours}/downsample_bn"), f"{theirs}_0_conv",
                        f"{theirs}_0_bn")
    return weights


def _resnet_imagenet_weights(config, source):
    name = _keras_resnet_name(config)
    network = source if isinstance(source, keras.Model) else getattr(keras.applications, name)(
        include_top=False, weights=source)
    return keras_resnet_weights(network, config.backbone.stage_blocks)


def _mobilenet_imagenet_weights(config, source):
    _check_pixel_normalisation(config, "MobileNetV3Large", MOBILENET_PIXEL_MEAN,
                               MOBILENET_PIXEL_STD, "mobilenetv3_fpn")
    # The weights fit any input size; 224 is the size keras expects for its ImageNet file.
    network = source if isinstance(source, keras.Model) else keras.applications.MobileNetV3Large(
        input_shape=(224, 224, 3), include_top=False, weights=source, include_preprocessing=False)
    return {f"backbone/{layer.name}/{variable.name}": np.asarray(variable)
            for layer in network.layers for variable in layer.weights}


BACKBONES = {
    "resnet": Backbone(
        build=lambda c: ResNet(c.stage_blocks, c.stem_filters, c.bottleneck_widths, c.norm,
                               c.stride_in_1x1, name="backbone"),
        stages=lambda layer: [layer.stem, *layer.stages],
        imagenet_weights=_resnet_imagenet_weights),
    "mobilenet_v3_large": Backbone(
        build=lambda c: MobileNetV3Backbone(c.norm, name="backbone"),
        stages=None,
        imagenet_weights=_mobilenet_imagenet_weights),
}
if tuple(BACKBONES) != BACKBONE_KINDS:
    raise AssertionError(f"backbones.BACKBONES {tuple(BACKBONES)} and config.BACKBONE_KINDS "
                         f"{BACKBONE_KINDS} must name the same backbones")


def get_backbone(kind):
    """The `Backbone` of a `BackboneConfig.kind`."""
    if kind not in BACKBONES:
        raise ValueError(f"unknown backbone.kind {kind!r}; choose one of {tuple(BACKBONES)}")
    return BACKBONES[kind]

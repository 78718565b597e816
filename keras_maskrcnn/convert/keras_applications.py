"""ImageNet weights for the backbone, from `keras.applications.ResNet50`, `ResNet101` or
`MobileNetV3Large`.

keras.applications' ResNets are ResNet v1: each stage's first block strides on its first 1×1
convolution; its convolutions carry biases; its batch norms use ε = 1.001e-5; it expects
Caffe's preprocessing (BGR channels, mean subtracted, no scaling). `config.keras_imagenet_r50_fpn`
(and `keras_imagenet_r101_fpn`) describes the matching model (`stride_in_1x1`, Caffe's means). The image stays RGB: the stem
kernel's input channels are reversed here instead. Each bias folds into the batch norm after
its convolution (`convert.batch_norm`).

The MobileNetV3 backbone (`layers.mobilenet`) is keras.applications' network itself: its
weights copy over layer by layer, under the same names. It expects pixels in [-1, 1]
(`config.mobilenetv3_fpn`'s normalisation), which its Rescaling layer, left out, would do.
"""

import keras
import numpy as np

from keras_maskrcnn.config import (CAFFE_PIXEL_MEAN, CAFFE_PIXEL_STD, MOBILENET_PIXEL_MEAN,
                                   MOBILENET_PIXEL_STD, RESNET101_STAGE_BLOCKS, BackboneConfig)
from keras_maskrcnn.convert.assign import assign_weights
from keras_maskrcnn.convert.batch_norm import folded_batch_norm

# keras.applications names stages conv2..conv5, blocks from 1, and the shortcut convolution 0.
FIRST_STAGE_NAME = 2
# keras.applications' ResNets by blocks per stage.
KERAS_RESNETS = {(3, 4, 6, 3): "ResNet50", RESNET101_STAGE_BLOCKS: "ResNet101"}


def _check_pixel_normalisation(config, network, mean, std, preset):
    """Raise ValueError unless `config` normalises pixels as `network` (a name) expects."""
    if (tuple(config.input.pixel_mean), tuple(config.input.pixel_std)) != (mean, std):
        raise ValueError(f"keras.applications' {network} expects pixel mean {mean} and std {std}, "
                         f"the config has {config.input.pixel_mean} and {config.input.pixel_std}; "
                         f"build it with config.{preset}")


def _check_resnet_config(config):
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


def backbone_weights(resnet, stage_blocks):
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


def mobilenet_weights(network):
    """A keras.applications MobileNetV3Large → {weight path inside `MaskRCNN`: array} for `backbone/`."""
    return {f"backbone/{layer.name}/{variable.name}": np.asarray(variable)
            for layer in network.layers for variable in layer.weights}


def load_imagenet_backbone(model, source="imagenet"):
    """Copy keras.applications' ImageNet weights into `model.backbone`; the rest of the model
    is left as it is.

    `model` is a `MaskRCNN` of `config.keras_imagenet_r50_fpn` (ResNet50),
    `keras_imagenet_r101_fpn` (ResNet101) or `mobilenetv3_fpn` (MobileNetV3Large). `source`
    is "imagenet" (Keras downloads its file), the path of a weights file of that
    keras.applications network with `include_top=False`, or such a network itself.
    """
    config = model.model_config
    if config.backbone.kind == "mobilenet_v3_large":
        _check_pixel_normalisation(config, "MobileNetV3Large", MOBILENET_PIXEL_MEAN,
                                   MOBILENET_PIXEL_STD, "mobilenetv3_fpn")
        # The weights fit any input size; 224 is the size keras expects for its ImageNet file.
        network = source if isinstance(source, keras.Model) else keras.applications.MobileNetV3Large(
            input_shape=(224, 224, 3), include_top=False, weights=source, include_preprocessing=False)
        weights = mobilenet_weights(network)
    else:
        name = _check_resnet_config(config)
        network = source if isinstance(source, keras.Model) else getattr(keras.applications, name)(
            include_top=False, weights=source)
        weights = backbone_weights(network, config.backbone.stage_blocks)
    assign_weights(model, weights, scope="backbone/")

"""ImageNet weights for the ResNet-50 backbone, from `keras.applications.ResNet50`.

keras.applications' ResNet50 is ResNet v1: each stage's first block strides on its first 1×1
convolution; its convolutions carry biases; its batch norms use ε = 1.001e-5; it expects
Caffe's preprocessing (BGR channels, mean subtracted, no scaling). `config.keras_imagenet_r50_fpn`
describes the matching model (`stride_in_1x1`, Caffe's means). The image stays RGB: the stem
kernel's input channels are reversed here instead. Each bias folds into the batch norm after
its convolution (`convert.batch_norm`).
"""

import keras
import numpy as np

from keras_maskrcnn.config import CAFFE_PIXEL_MEAN, CAFFE_PIXEL_STD, BackboneConfig
from keras_maskrcnn.convert.assign import assign_weights
from keras_maskrcnn.convert.batch_norm import folded_batch_norm

# keras.applications names stages conv2..conv5, blocks from 1, and the shortcut convolution 0.
FIRST_STAGE_NAME = 2


def _check_config(config):
    """Raise ValueError unless `config` describes keras.applications' ResNet50 and its inputs."""
    expected = BackboneConfig(norm=config.backbone.norm, stride_in_1x1=True)
    if config.backbone != expected:
        raise ValueError(f"keras.applications' ResNet50 needs backbone {expected}, the config has "
                         f"{config.backbone}; build it with config.keras_imagenet_r50_fpn")
    if (tuple(config.input.pixel_mean), tuple(config.input.pixel_std)) != (CAFFE_PIXEL_MEAN, CAFFE_PIXEL_STD):
        raise ValueError("keras.applications' ResNet50 expects Caffe's pixel normalisation "
                         f"(mean {CAFFE_PIXEL_MEAN}, std {CAFFE_PIXEL_STD}); build the config "
                         "with config.keras_imagenet_r50_fpn")


def backbone_weights(resnet, stage_blocks):
    """A keras.applications ResNet50 → {weight path inside `MaskRCNN`: array} for `backbone/`."""
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


def load_imagenet_backbone(model, source="imagenet"):
    """Copy ResNet-50 weights from keras.applications into `model.backbone` (a `MaskRCNN` of
    `config.keras_imagenet_r50_fpn`); the rest of the model is left as it is.

    `source` is "imagenet" (Keras downloads its file), the path of a weights file of
    `keras.applications.ResNet50(include_top=False)`, or such a model itself.
    """
    _check_config(model.model_config)
    resnet = source if isinstance(source, keras.Model) else keras.applications.ResNet50(
        include_top=False, weights=source)
    assign_weights(model, backbone_weights(resnet, model.model_config.backbone.stage_blocks),
                   scope="backbone/")

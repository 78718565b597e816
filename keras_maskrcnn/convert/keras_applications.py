"""ImageNet weights for the backbone, from keras.applications' network of its kind
(`backbones.Backbone.imagenet_weights`: ResNet50, ResNet101 or MobileNetV3Large)."""

from keras_maskrcnn.backbones import get_backbone
from keras_maskrcnn.convert.assign import assign_weights


def load_imagenet_backbone(model, source="imagenet"):
    """Copy keras.applications' ImageNet weights into `model.backbone`; the rest of the model
    is left as it is.

    `model` is a `MaskRCNN` of `config.keras_imagenet_r50_fpn` (ResNet50),
    `keras_imagenet_r101_fpn` (ResNet101) or `mobilenetv3_fpn` (MobileNetV3Large). `source`
    is "imagenet" (Keras downloads its file), the path of a weights file of that
    keras.applications network with `include_top=False`, or such a network itself.
    """
    config = model.model_config
    weights = get_backbone(config.backbone.kind).imagenet_weights(config, source)
    assign_weights(model, weights, scope="backbone/")

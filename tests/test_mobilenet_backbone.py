"""The MobileNetV3-Large backbone: feature strides, training, saving, ImageNet weights, TFLite.

One model of `mobilenetv3_fpn_tiny` (128 × 128) is built and trained for one step per module;
the ImageNet loader is checked offline on a random keras.applications network saved to a file.
"""

import dataclasses

import keras
import numpy as np
import pytest

from keras_maskrcnn import preprocessing
from keras_maskrcnn.config import (IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD, BackboneConfig,
                                   MaskRCNNConfig, mobilenetv3_fpn, mobilenetv3_fpn_tiny, tiny)
from keras_maskrcnn.convert.keras_applications import load_imagenet_backbone
from keras_maskrcnn.export.litert import TFLitePredictor, list_operators
from keras_maskrcnn.export.tflite import export_tflite
from keras_maskrcnn.inference import load_model
from keras_maskrcnn.layers.mobilenet import MobileNetV3Backbone, feature_layers
from keras_maskrcnn.model import MaskRCNN, rebuild
from random_statistics import randomise_batch_norms

pytestmark = pytest.mark.slow  # builds, converts or trains models: see pytest.ini

IMAGE_SIZE = 128
FEATURE_SHAPES = [(32, 32, 72), (16, 16, 240), (8, 8, 672), (4, 4, 960)]  # C2..C5


def _image():
    """A uint8 [128, 128, 3] noisy image with a red rectangle and a green square."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(90, 20, (IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 255).astype(np.uint8)
    image[20:60, 30:80] = (210, 40, 40)
    image[70:110, 70:110] = (40, 200, 60)
    return image


def _training_batch():
    canvas, image_info = preprocessing.preprocess_batch([_image()], (IMAGE_SIZE, IMAGE_SIZE))
    return {
        "images": canvas, "image_info": image_info,
        "gt_boxes": np.array([[[20, 30, 60, 80], [70, 70, 110, 110]]], np.float32),
        "gt_classes": np.array([[1, 2]], np.int32),
        "gt_masks": np.ones((1, 2, 32, 32), np.float32),
    }


def _weights_by_path(model):
    """Weights keyed by their path below the model: Keras numbers model names (mask_rcnn_3/...)
    by how many were built before in the process."""
    return {variable.path.split("/", 1)[1]: np.array(variable) for variable in model.weights}


@pytest.fixture(scope="module")
def stepped():
    """A random mobilenetv3_fpn_tiny model, its weights before, and the losses of one SGD step."""
    keras.utils.set_random_seed(0)
    # A low threshold so that the untrained model still detects something to compare.
    config = mobilenetv3_fpn_tiny(
        num_classes=2, detection=dict(score_threshold=0.01, max_detections=20, pre_nms_topk=256))
    model = MaskRCNN(config, seed=0)
    before = _weights_by_path(model)
    model.compile(optimizer=keras.optimizers.SGD(1e-2))
    losses = model.train_on_batch(_training_batch(), return_dict=True)
    return model, before, losses


def test_features_have_strides_4_to_32(stepped):
    model, _, _ = stepped
    images = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    features = model.backbone(images)
    assert [tuple(f.shape[1:]) for f in features] == FEATURE_SHAPES
    pyramid = model.fpn(features)
    assert [tuple(p.shape[1:3]) for p in pyramid] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]


def test_rebuild_moves_the_weights_to_another_canvas(stepped):
    model, _, _ = stepped
    config = model.model_config
    copy = rebuild(model, config.replace(input=dataclasses.replace(config.input, image_size=(64, 96))))
    for got, want in zip(copy.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)
    features = copy.backbone(np.zeros((1, 64, 96, 3), np.float32))
    assert [tuple(f.shape[1:3]) for f in features] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def test_features_are_the_deepest_maps_of_each_stride():
    network = keras.applications.MobileNetV3Large(input_shape=(64, 96, 3), include_top=False,
                                                  weights=None, include_preprocessing=False)
    chosen = feature_layers(network)
    assert [tuple(layer.output.shape[1:]) for layer in chosen] == [
        (16, 24, 72), (8, 12, 240), (4, 6, 672), (2, 3, 960)]
    order = {id(layer): index for index, layer in enumerate(network.layers)}
    # C2..C4 feed the padding of the next strided depthwise conv; C5 is the network's output.
    for layer in chosen[:3]:
        following = network.layers[order[id(layer)] + 1]
        assert isinstance(following, keras.layers.ZeroPadding2D), following.name
    assert chosen[3] is network.layers[-1]


def test_frozen_batch_norm_uses_moving_statistics():
    images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    frozen = MobileNetV3Backbone(norm="frozen_bn")
    frozen(images)
    norms = [layer for layer in frozen.network.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(layer.trainable_weights for layer in norms)
    for got, want in zip(frozen(images, training=True), frozen(images, training=False)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    with pytest.raises(ValueError, match="unknown norm"):
        MobileNetV3Backbone(norm="gn")


def test_one_training_step_has_finite_losses_and_trains_the_backbone(stepped):
    model, before, losses = stepped
    assert set(losses) == {"rpn_objectness", "rpn_box", "roi_class", "roi_box", "mask", "loss"}
    assert all(np.isfinite(value) for value in losses.values()), losses
    assert losses["rpn_box"] > 0 and losses["mask"] > 0  # the two boxes were matched
    after = _weights_by_path(model)
    # Its batch norm trains (norm="bn"): kernels and moving statistics both move.
    for path in ("backbone/conv/kernel", "backbone/conv_1/kernel", "backbone/conv_bn/moving_mean"):
        assert not np.array_equal(before[path], after[path]), path


def test_saved_model_file_predicts_the_same(stepped, tmp_path):
    model, _, _ = stepped
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_model(str(path))
    assert loaded.model_config == model.model_config
    canvas, image_info = preprocessing.preprocess_batch([_image()], (IMAGE_SIZE, IMAGE_SIZE))
    want = model({"images": canvas, "image_info": image_info})
    got = loaded({"images": canvas, "image_info": image_info})
    assert int(want["num_detections"][0]) > 0
    for name in want:
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(want[name]), atol=1e-5,
                                   err_msg=name)


def test_tflite_export_is_builtin_only_and_agrees_with_keras(stepped, tmp_path):
    model, _, _ = stepped
    path = export_tflite(model, tmp_path / "model.tflite")
    operators = list_operators(path)
    assert not [name for name in operators if name.startswith("CUSTOM")], operators
    assert "HARD_SWISH" in operators
    canvas, image_info = preprocessing.preprocess_batch([_image()], (IMAGE_SIZE, IMAGE_SIZE))
    want = model({"images": canvas, "image_info": image_info})
    got = TFLitePredictor(path).run(canvas, image_info)
    count = int(want["num_detections"][0])
    assert count > 0 and int(got["num_detections"][0]) == count
    np.testing.assert_allclose(got["detection_scores"][0, :count],
                               np.asarray(want["detection_scores"])[0, :count], atol=1e-3)
    np.testing.assert_allclose(got["detection_boxes"][0, :count],
                               np.asarray(want["detection_boxes"])[0, :count], atol=0.1)


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    """A random keras.applications MobileNetV3Large (with its Rescaling) and its weights file."""
    keras.utils.set_random_seed(1)
    network = keras.applications.MobileNetV3Large(
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), include_top=False, weights=None)
    randomise_batch_norms(network, np.random.default_rng(1))
    path = tmp_path_factory.mktemp("mobilenet") / "mobilenet_v3_large.weights.h5"
    network.save_weights(path)
    return network, path


def test_imagenet_weights_reproduce_keras_applications(imagenet_file):
    network, path = imagenet_file
    config = mobilenetv3_fpn(num_classes=2, input=dict(image_size=(IMAGE_SIZE, IMAGE_SIZE)))
    model = MaskRCNN(config)
    load_imagenet_backbone(model, str(path))

    image = np.random.default_rng(2).uniform(0, 255, (1, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    # keras' network rescales the 0..255 pixels itself; ours reads the config's normalisation.
    stages = keras.Model(network.input, [layer.output for layer in feature_layers(network)])
    normalised = (image - np.array(config.input.pixel_mean)) / np.array(config.input.pixel_std)
    for level, (want, got) in enumerate(zip(stages(image), model.backbone(normalised)), 2):
        want, got = np.asarray(want), np.asarray(got)
        assert want.shape == got.shape, level
        np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), err_msg=f"C{level}")


def test_imagenet_weights_need_the_mobilenet_normalisation(imagenet_file):
    network, _ = imagenet_file
    config = mobilenetv3_fpn_tiny(input=dict(image_size=(IMAGE_SIZE, IMAGE_SIZE),
                                             pixel_mean=IMAGENET_PIXEL_MEAN, pixel_std=IMAGENET_PIXEL_STD))
    with pytest.raises(ValueError, match="expects pixel mean"):
        load_imagenet_backbone(MaskRCNN(config), network)


def test_backbone_kind_defaults_to_resnet_and_is_checked():
    assert BackboneConfig().kind == "resnet"
    # A config saved before `kind` existed loads as the ResNet it described.
    values = tiny().to_dict()
    del values["backbone"]["kind"]
    assert MaskRCNNConfig.from_dict(values) == tiny()
    with pytest.raises(ValueError, match="unknown backbone.kind 'vgg'"):
        tiny(backbone=dict(kind="vgg"))


def test_mobilenetv3_fpn_normalises_to_minus_one_one():
    config = mobilenetv3_fpn()
    assert config.backbone.kind == "mobilenet_v3_large" and config.input.image_size == (320, 320)
    mean, std = np.array(config.input.pixel_mean), np.array(config.input.pixel_std)
    np.testing.assert_array_equal((np.array([0.0, 255.0])[:, None] - mean) / std, [[-1] * 3, [1] * 3])

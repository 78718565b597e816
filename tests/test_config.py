"""Configuration: JSON round trips, the seed's sizes in r50_fpn, and clear validation errors."""

import dataclasses

import pytest

from keras_maskrcnn.config import (TORCHVISION_SIZE_LIMITS, InputConfig, MaskRCNNConfig, PRESETS,
                                   keras_imagenet_r101_fpn, mobilenetv3_fpn_tiny, preset, r50_fpn,
                                   r101_fpn, tiny, torchvision_r50_fpn)


@pytest.mark.parametrize("make", [*PRESETS.values(), torchvision_r50_fpn, mobilenetv3_fpn_tiny])
def test_presets_round_trip_through_json(make):
    config = make(num_classes=4, category_ids=(3, 7, 9, 42), class_names=("a", "b", "c", "d"))
    assert MaskRCNNConfig.from_json(config.to_json()) == config


def test_r50_fpn_has_the_seed_sizes():
    config = r50_fpn()
    assert config.fpn.channels == 256
    assert (config.roi.box_pool_size, config.roi.mask_pool_size) == (7, 14)
    assert config.roi.fc_dim == 1024
    assert (config.mask_head.num_convs, config.mask_head.conv_dim, config.mask_size) == (4, 256, 28)
    assert config.backbone.stage_blocks == (3, 4, 6, 3)
    assert r101_fpn().backbone.stage_blocks == (3, 4, 23, 3)


def test_tiny_keeps_the_structure_but_is_narrow():
    small, big = tiny(), r50_fpn()
    assert small.input.image_size == (128, 128)
    assert small.fpn.channels < big.fpn.channels and small.roi.fc_dim < big.roi.fc_dim
    assert (small.roi.box_pool_size, small.roi.mask_pool_size, small.mask_size) == (7, 14, 28)


def test_dataset_category_ids_default_to_one_to_c():
    assert tiny(num_classes=3).dataset_category_ids() == (1, 2, 3)
    assert tiny(num_classes=2, category_ids=(5, 9)).dataset_category_ids() == (5, 9)


def test_invalid_configs_are_rejected_with_a_reason():
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny(input=dict(image_size=(100, 128)))
    with pytest.raises(ValueError, match="category_ids has 2 entries for 3 classes"):
        tiny(num_classes=3, category_ids=(1, 2))
    with pytest.raises(ValueError, match="unknown detection.paste_method 'nearest'"):
        tiny(detection=dict(paste_method="nearest"))
    with pytest.raises(ValueError, match="unknown loss.box_normalizer 'images'"):
        tiny(loss=dict(box_normalizer="images"))
    with pytest.raises(ValueError, match="unknown preset"):
        preset("r18")


def test_torchvision_r50_fpn_round_trips_with_its_class_names():
    config = torchvision_r50_fpn()
    assert config.num_classes == 90 and len(config.class_names) == 90
    assert config.input.size_limits == (800, 1333)
    assert config.detection.paste_method == "torchvision"
    assert MaskRCNNConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_box_losses_are_normalised_like_torchvision(name):
    assert preset(name).loss.box_normalizer == "sampled"
    assert torchvision_r50_fpn().loss.box_normalizer == "sampled"
    assert mobilenetv3_fpn_tiny().loss.box_normalizer == "sampled"


def test_a_saved_config_without_box_normalizer_loads_with_sampled():
    values = r50_fpn().to_dict()
    del values["loss"]["box_normalizer"]
    assert MaskRCNNConfig.from_dict(values).loss.box_normalizer == "sampled"


def test_mask_size_is_derived_from_the_mask_pool_size():
    config = tiny(roi=dict(mask_pool_size=7))
    assert config.mask_size == 14 and "mask_size" not in config.to_dict()["mask_head"]
    # A config saved when the mask size was a field of its own loads when it agrees ...
    values = tiny().to_dict()
    values["mask_head"]["mask_size"] = 28
    assert MaskRCNNConfig.from_dict(values) == tiny()
    # ... and names both fields when it does not.
    values["mask_head"]["mask_size"] = 32
    with pytest.raises(ValueError, match=r"mask_head.mask_size 32 must be 2 × roi.mask_pool_size 14"):
        MaskRCNNConfig.from_dict(values)


def test_a_preset_section_override_keeps_the_sections_other_fields():
    assert r50_fpn(input={"image_size": (512, 512)}).input == InputConfig(
        image_size=(512, 512), size_limits=TORCHVISION_SIZE_LIMITS)
    # Through two presets: keras_imagenet_r101_fpn's Caffe normalisation and r50's limits stay.
    config = keras_imagenet_r101_fpn(input={"image_size": (512, 512)}, backbone={"norm": "bn"})
    assert config.input == dataclasses.replace(keras_imagenet_r101_fpn().input,
                                               image_size=(512, 512))
    assert config.backbone.stage_blocks == (3, 4, 23, 3) and config.backbone.stride_in_1x1
    assert preset("tiny", roi={"fc_dim": 256}).roi.sampling_ratio == tiny().roi.sampling_ratio
    with pytest.raises(TypeError, match=r"input takes the fields to change as a mapping.*config\.replace"):
        r50_fpn(input=InputConfig(image_size=(512, 512)))
    with pytest.raises(ValueError, match=r"input has no field 'imagesize'"):
        r50_fpn(input={"imagesize": (512, 512)})

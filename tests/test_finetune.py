"""Fine-tuning: starting from another model's weights with other classes, and frozen backbone
stages, on tiny models and a few 64-px shapes images."""

import keras
import numpy as np
import pytest

from keras_maskrcnn import cli, training
from keras_maskrcnn.config import mobilenetv3_fpn_tiny, tiny, torchvision_r50_fpn
from keras_maskrcnn.finetune import (CLASS_SPECIFIC_LAYERS, TRAINED_PASTE_METHOD, FinetuneError,
                                     copy_matching_weights, describe_copy, finetune_config,
                                     load_source_model)
from keras_maskrcnn.inference import load_model
from keras_maskrcnn.layers.roi_heads import CLASS_INIT_STDDEV
from keras_maskrcnn.model import MaskRCNN
from keras_maskrcnn.train_config import TrainConfig, TrainConfigError

pytestmark = pytest.mark.slow  # builds, converts or trains models: see pytest.ini

SHAPES_CLASSES = 3
SOURCE_CLASSES = 5
SOURCE_FC_DIM = 128  # tiny's is 512: a model built from the preset would not fit the source
RESNET_PARTS = ("stem", "layer1", "layer2", "layer3", "layer4")


def _by_path(model):
    """{path below the model's name: numpy value}."""
    return {v.path.split("/", 1)[1]: np.asarray(v) for v in model.weights}


def _backbone_part(path):
    """"backbone/layer3_block0/conv1/kernel" → "layer3"; "backbone/stem_bn/gamma" → "stem"."""
    return path.split("/")[1].split("_")[0]


@pytest.fixture(scope="module")
def source_path(tmp_path_factory):
    """A tiny model of 5 classes with a narrower box head, its weights moved away from any
    initialisation (each scaled by a factor in [0.5, 1.5], plus noise), saved."""
    keras.utils.set_random_seed(1)
    model = MaskRCNN(tiny(SOURCE_CLASSES,
                          roi=dict(samples_per_image=64, fc_dim=SOURCE_FC_DIM)))
    rng = np.random.default_rng(1)
    for variable in model.weights:
        if variable is not model.sampling_step:
            value = np.asarray(variable)
            variable.assign(value * rng.uniform(0.5, 1.5, value.shape)
                            + np.abs(rng.normal(0, 0.01, value.shape)))
    path = tmp_path_factory.mktemp("source") / "source.keras"
    model.save(path)
    return path


def test_init_from_other_classes_copies_all_but_the_predictors(source_path):
    source = load_source_model(source_path)
    config = finetune_config(source.model_config, SHAPES_CLASSES, (7, 8, 9), ("a", "b", "c"))
    assert config.roi.fc_dim == SOURCE_FC_DIM and config.category_ids == (7, 8, 9)
    model = MaskRCNN(config)
    copied, reinitialised = copy_matching_weights(model, source, "source.keras")

    assert reinitialised == sorted(CLASS_SPECIFIC_LAYERS)
    theirs, ours = _by_path(source), _by_path(model)
    # A kernel and a bias per predictor, and the step counter, are not copied.
    assert len(copied) == len(ours) - 2 * len(CLASS_SPECIFIC_LAYERS) - 1
    for path in copied:
        np.testing.assert_array_equal(ours[path], theirs[path], err_msg=path)
    assert any(path.startswith("backbone/") for path in copied)
    assert ours["box_head/class_logits/kernel"].shape == (SOURCE_FC_DIM, SHAPES_CLASSES + 1)
    assert ours["box_head/deltas/kernel"].shape == (SOURCE_FC_DIM, 4 * (SHAPES_CLASSES + 1))
    assert ours["mask_head/predictor/kernel"].shape == (1, 1, 64, SHAPES_CLASSES)
    assert ours["mask_head/predictor/bias"].shape == (SHAPES_CLASSES,)
    # The new classifier has the box head's own initialisation.
    spread = np.std(ours["box_head/class_logits/kernel"])
    assert 0.5 * CLASS_INIT_STDDEV < spread < 2 * CLASS_INIT_STDDEV

    message = describe_copy(copied, reinitialised, "source.keras", SOURCE_CLASSES, SHAPES_CLASSES)
    assert f"copied {len(copied)} weights" in message
    assert f"re-initialised for 3 classes (source.keras has {SOURCE_CLASSES})" in message
    assert all(name in message for name in CLASS_SPECIFIC_LAYERS)


def test_init_from_the_same_number_of_classes_keeps_the_predictors(source_path):
    source = load_source_model(source_path)
    model = MaskRCNN(finetune_config(source.model_config, SOURCE_CLASSES))
    copied, reinitialised = copy_matching_weights(model, source, "source.keras")
    assert reinitialised == []
    np.testing.assert_array_equal(_by_path(model)["mask_head/predictor/kernel"],
                                  _by_path(source)["mask_head/predictor/kernel"])
    assert "kept source.keras's class-specific predictors" in describe_copy(
        copied, reinitialised, "source.keras", SOURCE_CLASSES, SOURCE_CLASSES)


def test_a_finetuned_torchvision_model_pastes_masks_the_way_its_targets_are_cut():
    source = torchvision_r50_fpn()
    config = finetune_config(source, SHAPES_CLASSES)
    assert source.detection.paste_method == "torchvision"
    assert config.detection.paste_method == TRAINED_PASTE_METHOD == "centres"
    # Nothing else changes but the classes.
    assert config.replace(detection=source.detection, num_classes=source.num_classes,
                          class_names=source.class_names) == source


def test_a_model_of_other_sizes_is_refused_naming_the_weight(source_path):
    source = load_source_model(source_path)
    with pytest.raises(FinetuneError, match=r"^source\.keras: .*box_head/fc1/kernel"):
        copy_matching_weights(MaskRCNN(tiny(SHAPES_CLASSES)), source, "source.keras")


@pytest.mark.parametrize("problem", ["missing", "not_keras", "garbage", "other_model"])
def test_cli_refuses_unusable_init_models_naming_the_file(problem, shapes, tmp_path, capsys):
    path = tmp_path / ("model.tflite" if problem == "not_keras" else "model.keras")
    expected = {"missing": "does not exist", "not_keras": "must be a .keras file",
                "garbage": "cannot load model", "other_model": "holds a Sequential"}[problem]
    if problem in ("not_keras", "garbage"):
        path.write_bytes(b"not a model")
    elif problem == "other_model":
        keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save(path)
    code = cli.main(["train", "--train", str(shapes / "train" / "annotations.json"), "--preset",
                     "tiny", "--batch-size", "2", "--out", str(tmp_path / "run"), "--init-from",
                     str(path)])
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err and expected in err


def test_cli_freeze_backbone_means_no_trainable_stage(monkeypatch):
    calls = []
    monkeypatch.setattr(training, "train", calls.append)
    assert cli.main(["train", "--train", "a.json", "--preset", "tiny", "--out", "r",
                     "--freeze-backbone"]) == 0
    assert calls[0].trainable_stages == 0


def test_freezing_counts_resnet_stages_from_the_deepest():
    model = MaskRCNN(tiny())
    heads = len(model.trainable_weights) - len(model.backbone.trainable_weights)
    for trainable_stages in range(6):
        model.freeze_backbone_stages(trainable_stages)
        trainable = {_backbone_part(v.path.split("/", 1)[1])
                     for v in model.backbone.trainable_weights}
        # torchvision's trainable_layers: the last N of stem, layer1..layer4.
        assert trainable == set(RESNET_PARTS[len(RESNET_PARTS) - trainable_stages:])
        assert len(model.trainable_weights) - len(model.backbone.trainable_weights) == heads
    with pytest.raises(ValueError, match="0..5"):
        model.freeze_backbone_stages(6)


def test_frozen_batch_norms_of_mobilenet_stay_frozen_when_unfreezing():
    model = MaskRCNN(mobilenetv3_fpn_tiny(backbone=dict(norm="frozen_bn")))
    built = {v.path for v in model.backbone.trainable_weights}
    assert built and not any("gamma" in path or "beta" in path for path in built)
    model.freeze_backbone_stages(0)
    assert model.backbone.trainable_weights == []
    model.freeze_backbone_stages(5)
    assert {v.path for v in model.backbone.trainable_weights} == built
    with pytest.raises(ValueError, match="trains whole"):
        model.freeze_backbone_stages(2)


def test_finetuning_run_copies_then_trains_only_the_unfrozen_stages(shapes, source_path, tmp_path,
                                                                     capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--train", str(shapes / "train" / "annotations.json"), "--preset",
                     "tiny", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
                     "--out", str(out), "--init-from", str(source_path), "--input-size", "96", "96",
                     "--trainable-stages", "2"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert f"initialised from {source_path}" in stdout and "re-initialised for 3 classes" in stdout
    assert "trainable weights:" in stdout

    model = load_model(out / training.MODEL_FILE)
    config = model.model_config
    assert config.num_classes == SHAPES_CLASSES
    assert config.class_names == ("square", "circle", "triangle")
    assert config.roi.fc_dim == SOURCE_FC_DIM and config.input.image_size == (96, 96)
    theirs, ours = _by_path(load_model(source_path)), _by_path(model)
    backbone = [path for path in ours if path.startswith("backbone/")]
    frozen = [path for path in backbone if _backbone_part(path) in ("stem", "layer1", "layer2")]
    trained = [path for path in backbone if _backbone_part(path) in ("layer3", "layer4")]
    assert frozen and trained and len(frozen) + len(trained) == len(backbone)
    # One step later the frozen stages, batch-norm statistics included, are the source's, and
    # every weight of the trained ones (tiny's batch norms train) has moved.
    for path in frozen:
        np.testing.assert_array_equal(ours[path], theirs[path], err_msg=path)
    for path in trained:
        assert not np.array_equal(ours[path], theirs[path]), path
    assert not np.array_equal(ours["box_head/fc1/kernel"], theirs["box_head/fc1/kernel"])


@pytest.mark.parametrize("trainable_stages, expected", [
    (None, RESNET_PARTS[-3:]),  # torchvision's default from pretrained weights
    (5, RESNET_PARTS),
])
def test_a_pretrained_frozen_batch_norm_resnet_trains_its_last_three_stages(
        source_path, shapes, trainable_stages, expected):
    config = TrainConfig(train=str(shapes / "train" / "annotations.json"), preset="tiny",
                         init_from=str(source_path), backbone_norm="frozen_bn",
                         trainable_stages=trainable_stages).resolved()
    model = training.build_model(config, training.open_dataset(config.train))
    trainable = {_backbone_part(v.path.split("/", 1)[1]) for v in model.backbone.trainable_weights}
    assert trainable == set(expected)


def test_a_frozen_batch_norm_preset_without_weights_is_refused_saying_what_to_pass():
    with pytest.raises(TrainConfigError) as error:
        TrainConfig(train="a.json", preset="r50_fpn")
    assert all(option in str(error.value) for option in
               ("--backbone-weights", "--init-from", "--backbone-norm) bn"))
    for accepted in ({"backbone_weights": "imagenet"}, {"init_from": "coco.keras"},
                     {"backbone_norm": "bn"}):
        TrainConfig(train="a.json", preset="r50_fpn", **accepted)

"""The training job's settings as one frozen dataclass, `TrainConfig`, validated in one place.

Its fields are the `train` command's options by name (`--steps-per-epoch` is
`steps_per_epoch`), so the command line fills it from parsed arguments and Python code builds
it directly; both get the same checks and the same messages (`TrainConfigError`). A run writes
the resolved config to `RUN_DIR/train_config.json`; `train --config FILE` reads one back, so a
run can be repeated from its own folder, and a resumed run must match the one it resumes.

Schedule fields left as None take the preset's (`PRESET_SCHEDULES`); `resolved()` fills them
in. This module does not import TensorFlow, so `--help` stays fast.
"""

import dataclasses
import json
import os
from typing import Optional, Tuple, Union

from keras_maskrcnn.atomic import write_json
from keras_maskrcnn.config import (BACKBONE_NORMS, BACKBONE_PARTS, BOX_NORMALIZERS,
                                   DEFAULT_MAX_IMAGE_PIXELS, PRESETS, canvas_size_problem)

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("cosine", "step")
# "coupled": wd·w joins the gradient before momentum (L2 regularisation, torch.optim.SGD's);
# "decoupled": w -= lr·wd·w beside the gradient step (Keras' `weight_decay`, AdamW's).
WEIGHT_DECAY_MODES = ("coupled", "decoupled")
BAD_DATA_MODES = ("skip", "error")
# Training flips (`data.make_dataset`): "left-right" mirrors half the images; "all" also flips
# up-down and swaps the axes, each with probability 0.5, so all 8 symmetries of a square are
# equally likely: for data with no up and no handedness (aerial, microscope, the shapes set).
FLIPS = ("left-right", "all")
# Where a run trains (`distribute` module): one device, the GPUs (or logical CPU devices) of
# this machine, or the machines of a TF_CONFIG cluster.
DISTRIBUTE_MODES = ("none", "mirrored", "multi-worker")
# What the layers compute in (`precision` module); variables stay float32.
PRECISIONS = ("float32", "bfloat16", "float16")
# Every preset samples at most a quarter of the RoIs as foreground: 4 leaves the mask head one.
MIN_ROIS_PER_IMAGE = 4
# A pretrained ResNet with frozen batch norm trains only its last 3 stages unless told otherwise:
# torchvision's trainable_backbone_layers default (detectron2's FREEZE_AT=2 is the same).
PRETRAINED_TRAINABLE_STAGES = 3
CONFIG_FILE = "train_config.json"
# Fields that name files: made absolute by `resolved()`, so a written config works from any
# folder. "imagenet" in backbone_weights is a name, not a file.
PATH_FIELDS = ("train", "train_images", "val", "val_images", "out", "init_from",
               "backbone_weights")
# Fields a resumed run may change: they decide where and how the run is reported, not what it
# computes.
RESUMABLE_CHANGES = ("out", "eval_every", "check_images")


class TrainConfigError(ValueError):
    """Settings that cannot train: the message names the option and the problem."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A preset's schedule and data defaults; any can be overridden per run.

    `max_instances` pads the ground truth to a fixed count (the largest instances are kept);
    `lr_steps` are fractions of the run after which the step schedule multiplies the rate by
    0.1 (`optimization.STEP_DECAY`).
    """
    epochs: int
    steps_per_epoch: int
    batch_size: int
    learning_rate: float
    max_instances: int
    optimizer: str
    warmup_steps: int
    lr_schedule: str
    lr_steps: Tuple[float, ...]
    weight_decay: float
    weight_decay_mode: str
    clip_norm: float


SCHEDULE_FIELDS = tuple(field.name for field in dataclasses.fields(Schedule))

# COCO's "1x" schedule (Detectron2): 90k steps at batch 16, about 12 epochs of train2017,
# SGD at 0.02 after a 1000-step warmup, ×0.1 after 60k and 80k steps, weight decay 1e-4
# coupled to the gradient as torch's SGD does it.
COCO_1X = Schedule(epochs=12, steps_per_epoch=7500, batch_size=16, learning_rate=0.02,
                   max_instances=100, optimizer="sgd", warmup_steps=1000, lr_schedule="step",
                   lr_steps=(2 / 3, 8 / 9), weight_decay=1e-4, weight_decay_mode="coupled",
                   clip_norm=10.0)
# torchvision's recipe for its MobileNetV3-Large-320-FPN detector: 26 COCO epochs at batch 16,
# SGD 0.02 after a 1000-step warmup, ×0.1 after epochs 16 and 22, weight decay 1e-4.
MOBILENET_320_SCHEDULE = dataclasses.replace(COCO_1X, epochs=26, lr_steps=(16 / 26, 22 / 26))
PRESET_SCHEDULES = {
    # Adam with decoupled weight decay 0.05 (AdamW's form, Keras' `weight_decay`): over four
    # training seeds on the demo's shapes set 0.005 more bbox AP and 0.003 more segm AP50 than
    # without (docs/training.md, "How `tiny` was chosen").
    "tiny": Schedule(epochs=16, steps_per_epoch=150, batch_size=8, learning_rate=1e-3,
                     max_instances=16, optimizer="adam", warmup_steps=0, lr_schedule="cosine",
                     lr_steps=(2 / 3, 8 / 9), weight_decay=0.05, weight_decay_mode="decoupled",
                     clip_norm=10.0),
    "r50_fpn": COCO_1X,
    "r101_fpn": COCO_1X,
    "keras_imagenet_r50_fpn": COCO_1X,
    "keras_imagenet_r101_fpn": COCO_1X,
    "mobilenetv3_fpn": MOBILENET_320_SCHEDULE,
    "mobile": MOBILENET_320_SCHEDULE,
}


def option(name):
    """How a field is spelled in both places a user meets it: `eval_every (--eval-every)`."""
    return f"{name} (--{name.replace('_', '-')})"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything one training run depends on. See `training.train` for what each does.

    Data: `train` (required) and `val` are COCO annotation files; image folders left None
    resolve against their annotation file's folder. `on_bad_data` is one of BAD_DATA_MODES;
    images over `max_image_pixels` pixels are bad data (`data.images`).
    Model: `preset` (required, one of `config.PRESETS`), or with `init_from` a `.keras` model
    to fine-tune (the preset then gives only the schedule); `input_size` (H, W) replaces the
    canvas, `rois_per_image` the RoIs sampled per image, `backbone_weights` "imagenet" or a
    weights file, `backbone_norm` one of `config.BACKBONE_NORMS` the preset's batch norm
    ("bn" trains a ResNet preset from scratch), `box_normalizer` one of
    `config.BOX_NORMALIZERS` the model's (`LossConfig.box_normalizer`). `trainable_stages` 0..BACKBONE_PARTS are the
    backbone parts that train; None trains the last PRETRAINED_TRAINABLE_STAGES of a ResNet
    with frozen batch norm that starts from pretrained weights (as torchvision), and the whole
    backbone otherwise.
    Schedule: the fields of `Schedule`, None taking the preset's.
    Scale: `distribute` one of DISTRIBUTE_MODES (`batch_size` is then the global batch, split
    over the replicas), `cpu_replicas` N splits the CPU into N logical devices for "mirrored",
    `precision` one of PRECISIONS, `jit_compile` compiles the training step with XLA.
    """
    train: Optional[str] = None
    preset: Optional[str] = None
    out: str = os.path.join("outputs", "run")
    train_images: Optional[str] = None
    val: Optional[str] = None
    val_images: Optional[str] = None
    seed: int = 0
    on_bad_data: str = "skip"
    check_images: bool = False
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    flips: str = "left-right"
    scale_jitter: Optional[Tuple[float, float]] = None
    cache: Union[bool, str] = False
    eval_every: Optional[int] = None
    init_from: Optional[str] = None
    input_size: Optional[Tuple[int, int]] = None
    rois_per_image: Optional[int] = None
    trainable_stages: Optional[int] = None
    backbone_weights: Optional[str] = None
    backbone_norm: Optional[str] = None
    box_normalizer: Optional[str] = None
    epochs: Optional[int] = None
    steps_per_epoch: Optional[int] = None
    batch_size: Optional[int] = None
    learning_rate: Optional[float] = None
    max_instances: Optional[int] = None
    optimizer: Optional[str] = None
    warmup_steps: Optional[int] = None
    lr_schedule: Optional[str] = None
    lr_steps: Optional[Tuple[float, ...]] = None
    weight_decay: Optional[float] = None
    weight_decay_mode: Optional[str] = None
    clip_norm: Optional[float] = None
    distribute: str = "none"
    cpu_replicas: Optional[int] = None
    precision: str = "float32"
    jit_compile: bool = False

    def __post_init__(self):
        for name in ("scale_jitter", "input_size", "lr_steps"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for problem in _problems(self):
            raise TrainConfigError(problem)

    def resolved(self):
        """This config with the preset's schedule filled in and file paths made absolute."""
        schedule = PRESET_SCHEDULES[self.preset]
        changes = {name: getattr(schedule, name) for name in SCHEDULE_FIELDS
                   if getattr(self, name) is None}
        if self.weight_decay_mode is None and changes.get("optimizer", self.optimizer) != "sgd":
            changes["weight_decay_mode"] = "decoupled"  # only SGD has a coupled form
        for name in PATH_FIELDS:
            value = getattr(self, name)
            if value is not None and not (name == "backbone_weights" and value == "imagenet"):
                changes[name] = os.path.abspath(value)
        if isinstance(self.cache, str):
            changes["cache"] = os.path.abspath(self.cache)
        return dataclasses.replace(self, **changes)

    @property
    def total_steps(self):
        return self.epochs * self.steps_per_epoch

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values, source="the config"):
        """A config from a dict such as `to_dict` gives; unknown keys are refused."""
        unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise TrainConfigError(f"{source}: unknown settings {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_args(cls, args, base=None):
        """`base` (default: a fresh config) with every field that the argparse namespace
        `args` holds, matched by name. Options the user did not give must be absent from it
        (argparse.SUPPRESS), so that they leave `base`'s values alone."""
        values = {} if base is None else base.to_dict()
        values.update({field.name: getattr(args, field.name)
                       for field in dataclasses.fields(cls) if hasattr(args, field.name)})
        return cls(**values)

    def save(self, path):
        """Write the config as JSON, atomically (`atomic`): another worker of the run may
        read it, and a run killed while writing it must still resume."""
        write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path):
        """Read a config written by `save`. Raises TrainConfigError naming `path`."""
        if not os.path.isfile(path):
            raise TrainConfigError(f"{path}: config file not found")
        try:
            with open(path) as f:
                values = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise TrainConfigError(f"{path}: not a training config ({error})") from error
        if not isinstance(values, dict):
            raise TrainConfigError(f"{path}: not a training config (a JSON object is expected)")
        try:
            return cls.from_dict(values, source=path)
        except TrainConfigError as error:
            message = str(error)
            raise TrainConfigError(message if message.startswith(path) else
                                   f"{path}: {message}") from None
        except TypeError as error:
            raise TrainConfigError(f"{path}: not a training config ({error})") from error

    def changed_fields(self, other):
        """Names of the fields whose values differ from `other`'s."""
        return [field.name for field in dataclasses.fields(self)
                if getattr(self, field.name) != getattr(other, field.name)]


def _problems(config):
    """Every rule a config must follow, as messages (the first one found is raised)."""
    c = config
    if c.train is None:
        yield f"{option('train')} is required: the training annotations"
    if c.preset is None:
        yield f"{option('preset')} is required; choose one of {sorted(PRESETS)}"
    elif c.preset not in PRESETS:
        yield f"{option('preset')}: unknown preset {c.preset!r}; choose one of {sorted(PRESETS)}"
    for name, choices in (("on_bad_data", BAD_DATA_MODES), ("flips", FLIPS),
                          ("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES),
                          ("backbone_norm", BACKBONE_NORMS),
                          ("weight_decay_mode", WEIGHT_DECAY_MODES),
                          ("box_normalizer", BOX_NORMALIZERS),
                          ("distribute", DISTRIBUTE_MODES), ("precision", PRECISIONS)):
        value = getattr(c, name)
        if value is not None and value not in choices:
            yield f"{option(name)}: unknown value {value!r}; choose one of {choices}"
    for name in ("epochs", "steps_per_epoch", "batch_size", "max_instances", "eval_every",
                 "cpu_replicas", "max_image_pixels"):
        value = getattr(c, name)
        if value is not None and (not _is_int(value) or value < 1):
            yield f"{option(name)} must be a whole number of at least 1, got {value!r}"
    if not _is_int(c.seed):
        yield f"{option('seed')} must be a whole number, got {c.seed!r}"
    if c.warmup_steps is not None and not (_is_int(c.warmup_steps) and c.warmup_steps >= 0):
        yield f"{option('warmup_steps')} must be a whole number ≥ 0, got {c.warmup_steps!r}"
    if c.learning_rate is not None and not _is_positive_number(c.learning_rate):
        yield f"{option('learning_rate')} must be positive, got {c.learning_rate!r}"
    for name in ("weight_decay", "clip_norm"):
        value = getattr(c, name)
        if value is not None and not (_is_number(value) and value >= 0):
            yield f"{option(name)} must not be negative (0 turns it off), got {value!r}"
    if c.lr_steps is not None and not (
            c.lr_steps and all(_is_number(f) and 0 < f < 1 for f in c.lr_steps)
            and list(c.lr_steps) == sorted(c.lr_steps)):
        yield (f"{option('lr_steps')} must be increasing fractions strictly between 0 and 1, "
               f"got {c.lr_steps!r}")
    if c.scale_jitter is not None:
        if len(c.scale_jitter) != 2 or not all(map(_is_positive_number, c.scale_jitter)):
            yield f"{option('scale_jitter')} must be two positive factors MIN MAX, got {c.scale_jitter!r}"
        elif c.scale_jitter[0] > c.scale_jitter[1]:
            yield (f"{option('scale_jitter')}: MIN {c.scale_jitter[0]} exceeds "
                   f"MAX {c.scale_jitter[1]}")
    if c.input_size is not None and canvas_size_problem(c.input_size):
        yield f"{option('input_size')} {canvas_size_problem(c.input_size)}"
    if c.rois_per_image is not None and not (_is_int(c.rois_per_image)
                                             and c.rois_per_image >= MIN_ROIS_PER_IMAGE):
        yield (f"{option('rois_per_image')} must be at least {MIN_ROIS_PER_IMAGE} (a quarter of "
               f"them are foreground slots for the mask head), got {c.rois_per_image!r}")
    if c.trainable_stages is not None and not (_is_int(c.trainable_stages)
                                               and 0 <= c.trainable_stages <= BACKBONE_PARTS):
        yield f"{option('trainable_stages')} must lie in 0..{BACKBONE_PARTS}, got {c.trainable_stages!r}"
    if c.preset in PRESETS and c.init_from is None and c.backbone_weights is None and (
            c.backbone_norm or PRESETS[c.preset]().backbone.norm) == "frozen_bn":
        yield (f"{option('preset')} {c.preset} keeps its backbone's batch norms frozen, which "
               f"suits pretrained weights only, and none are given: a frozen batch norm of an "
               f"untrained network is the identity and training goes badly. Pass "
               f"{option('backbone_weights')} (imagenet or a weights file) or "
               f"{option('init_from')} (a trained model), or {option('backbone_norm')} bn to "
               f"train the backbone from scratch with batch norms that learn")
    if c.weight_decay_mode == "coupled" and c.optimizer not in (None, "sgd"):
        yield (f"{option('weight_decay_mode')} coupled is torch's SGD; "
               f"{option('optimizer')} {c.optimizer} decays decoupled")
    if c.eval_every is not None and c.val is None:
        yield f"{option('eval_every')} needs {option('val')}, the set to evaluate on"
    if c.cpu_replicas is not None and c.distribute != "mirrored":
        yield (f"{option('cpu_replicas')} splits the CPU for {option('distribute')} mirrored, "
               f"not {c.distribute!r}")
    if (c.cpu_replicas is not None and _is_int(c.cpu_replicas) and _is_int(c.batch_size)
            and batch_split_problem(c.batch_size, c.cpu_replicas)):
        yield batch_split_problem(c.batch_size, c.cpu_replicas)
    if not isinstance(c.jit_compile, bool):
        yield f"{option('jit_compile')} must be true or false, got {c.jit_compile!r}"
    elif c.jit_compile and c.distribute != "none":
        yield (f"{option('jit_compile')} needs {option('distribute')} none: Keras compiles the "
               f"whole step, every replica's device at once, into one XLA program, which XLA "
               f"refuses (keras-team/keras#19005)")
    if c.val_images is not None and c.val is None:
        yield f"{option('val_images')} needs {option('val')}, the annotations of those images"


def batch_split_problem(batch_size, replicas):
    """Why a global batch of `batch_size` cannot train on `replicas` replicas, or None: each
    takes an equal share. Checked here when --cpu-replicas gives the count, and by
    `distribute.check_batch_split` once a strategy has counted its devices."""
    if batch_size % replicas:
        return (f"{option('batch_size')} {batch_size} is the global batch and must split "
                f"evenly over the {replicas} replicas")
    return None


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_positive_number(value):
    return _is_number(value) and value > 0

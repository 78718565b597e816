"""Model configuration: frozen dataclasses, one per stage, that round-trip through JSON.

Presets are plain functions: `r50_fpn()` has the seed's sizes (and torchvision's
`maskrcnn_resnet50_fpn` hyperparameters), `tiny()` the same structure made narrow for
128-px images and tests, `mobilenetv3_fpn()` a MobileNetV3-Large backbone for phones and
`mobile()` the same with the lighter heads a phone's latency budget wants.

A preset's keyword arguments change it: `num_classes`, `category_ids`, `class_names` as
values, a section as a mapping of the fields to change, which keeps the preset's other fields
of that section: `r50_fpn(input={"image_size": (512, 512)})` keeps r50's `size_limits`. To
replace a whole section, use `MaskRCNNConfig.replace` on the preset's config.
"""

import dataclasses
import json
from collections.abc import Mapping
from typing import Optional, Tuple

# torchvision's ImageNet normalisation on the 0..255 scale.
IMAGENET_PIXEL_MEAN = (123.675, 116.28, 103.53)
IMAGENET_PIXEL_STD = (58.395, 57.12, 57.375)
# keras.applications' ResNet50 ("caffe" preprocessing): the BGR mean subtracted, no scaling.
# Listed in RGB order: the converter reverses the stem kernel's input channels instead.
CAFFE_PIXEL_MEAN = (123.68, 116.779, 103.939)
CAFFE_PIXEL_STD = (1.0, 1.0, 1.0)
# keras.applications' MobileNetV3 without its Rescaling layer: pixels scaled to [-1, 1].
MOBILENET_PIXEL_MEAN = (127.5, 127.5, 127.5)
MOBILENET_PIXEL_STD = (127.5, 127.5, 127.5)

RESNET101_STAGE_BLOCKS = (3, 4, 23, 3)
# Stride of the deepest backbone map (C5); P6 below it rounds up, as torchvision's does.
BACKBONE_STRIDE = 32
# A ResNet's stem and its 4 stages, the parts torchvision's `trainable_layers` (0..5) counts
# (`MaskRCNN.freeze_backbone_stages`).
BACKBONE_PARTS = 5
# What a Keras model may compute in at inference (`inference.with_precision`): bfloat16 for
# CPUs whose bfloat16 convolutions beat their float32 ones (bench/bench_torchvision.py).
INFERENCE_PRECISIONS = ("float32", "bfloat16")
# Weight quantizations of the TFLite export (`export.tflite`).
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
# Images whose header claims more pixels are bad data, refused before decoding
# (`data.images`, `--max-image-pixels` of every command that reads images, and the server's):
# PIL's decompression-bomb limit, `PIL.Image.MAX_IMAGE_PIXELS` (importing PIL here would slow
# `--help`; tests/test_bad_images.py checks the two agree).
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


def canvas_size_problem(size):
    """What keeps `size` (H, W) from being a canvas, or None: both sides must be positive
    multiples of BACKBONE_STRIDE. The one rule for `InputConfig.image_size` and every
    `--input-size` option."""
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(side, int) and not isinstance(side, bool) and side > 0
                       and side % BACKBONE_STRIDE == 0 for side in size)):
        return f"must be H W, both positive multiples of {BACKBONE_STRIDE}, got {size!r}"
    return None


@dataclasses.dataclass(frozen=True)
class InputConfig:
    image_size: Tuple[int, int] = (800, 1344)  # canvas (H, W), multiples of BACKBONE_STRIDE
    pixel_mean: Tuple[float, float, float] = IMAGENET_PIXEL_MEAN
    pixel_std: Tuple[float, float, float] = IMAGENET_PIXEL_STD
    # (short, long): also keep the short side ≤ short and the long side ≤ long, as torchvision's
    # min_size/max_size do (`preprocessing`); None fits the image into the canvas only.
    size_limits: Optional[Tuple[int, int]] = None

    @property
    def canvas_per_image(self):
        """Whether Keras and SavedModel inference size the canvas by the images, as torchvision
        pads a batch: with `size_limits`, images are resized by them (and to fit `image_size`
        turned to their orientation, which the torchvision presets' never binds) and padded to
        the batch's largest, rounded up to BACKBONE_STRIDE. Training uses `image_size` turned
        to each image's orientation (`data.pipeline`); the TFLite export, `image_size` as is."""
        return self.size_limits is not None


BACKBONE_KINDS = ("resnet", "mobilenet_v3_large")
# "frozen_bn": fixed statistics and affine parameters (pretrained backbones); "bn": batch norm
# that trains (from scratch).
BACKBONE_NORMS = ("frozen_bn", "bn")
# How box-frame masks are resampled into the image (`postprocess`).
PASTE_METHODS = ("centres", "torchvision")
# What the box losses' sums are divided by (`losses`): all sampled anchors / RoIs of the batch
# (torchvision's and Detectron2's), or only the positive ones.
BOX_NORMALIZERS = ("sampled", "positives")


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    # "mobilenet_v3_large" is keras.applications' network (`layers.mobilenet`); it reads only
    # `norm` below, the other fields describe the ResNet.
    kind: str = "resnet"
    stage_blocks: Tuple[int, ...] = (3, 4, 6, 3)  # ResNet-50; (3, 4, 23, 3) is ResNet-101
    stem_filters: int = 64
    bottleneck_widths: Tuple[int, ...] = (64, 128, 256, 512)  # output = 4 × width
    norm: str = "frozen_bn"  # one of BACKBONE_NORMS
    # ResNet v1 puts a block's stride on its first 1×1 conv (keras.applications' ResNet50);
    # v1.5, the default, on the 3×3 (torchvision's, and most detection checkpoints').
    stride_in_1x1: bool = False


@dataclasses.dataclass(frozen=True)
class FPNConfig:
    channels: int = 256
    min_level: int = 2
    max_level: int = 6  # P6 = stride-2 subsampling of P5, for the RPN only


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
    sizes: Tuple[int, ...] = (32, 64, 128, 256, 512)  # one size per level P2..P6
    aspect_ratios: Tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width


@dataclasses.dataclass(frozen=True)
class RPNConfig:
    pre_nms_topk_train: int = 2000  # per level
    pre_nms_topk_test: int = 1000
    post_nms_topk_train: int = 2000
    post_nms_topk_test: int = 1000
    nms_threshold: float = 0.7
    min_box_size: float = 1e-3
    fg_iou_threshold: float = 0.7
    bg_iou_threshold: float = 0.3
    samples_per_image: int = 256
    positive_fraction: float = 0.5
    box_coder_weights: Tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class RoIConfig:
    """RoI sampling, RoIAlign and the box head."""
    samples_per_image: int = 512
    positive_fraction: float = 0.25
    fg_iou_threshold: float = 0.5
    box_pool_size: int = 7
    mask_pool_size: int = 14
    sampling_ratio: int = 2
    aligned: bool = False  # torchvision's maskrcnn_resnet50_fpn pools without the half-pixel shift
    fc_dim: int = 1024
    box_coder_weights: Tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)


# The mask head's deconvolution upsamples its RoIAlign features by this factor
# (`layers.mask_head`): the mask size M is MASK_HEAD_UPSAMPLING × `roi.mask_pool_size`
# (MaskRCNNConfig.mask_size), 28 from 14.
MASK_HEAD_UPSAMPLING = 2


@dataclasses.dataclass(frozen=True)
class MaskHeadConfig:
    num_convs: int = 4
    conv_dim: int = 256
    gt_mask_size: int = 56  # resolution of ground-truth mini-masks in the input pipeline


@dataclasses.dataclass(frozen=True)
class DetectionConfig:
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    max_detections: int = 100
    pre_nms_topk: int = 1000  # best (box, class) pairs considered by the class-wise NMS
    min_box_size: float = 1e-2
    paste_method: str = "centres"  # one of PASTE_METHODS, used by evaluate and predict


@dataclasses.dataclass(frozen=True)
class LossConfig:
    rpn_objectness: float = 1.0
    rpn_box: float = 1.0
    roi_class: float = 1.0
    roi_box: float = 1.0
    mask: float = 1.0
    smooth_l1_beta: float = 1.0 / 9  # torchvision's value for both box losses
    # One of BOX_NORMALIZERS: "sampled" for every preset (for `tiny` it gave 0.02 more bbox and
    # segm AP50 than "positives" on two shapes sets, the same bbox AP:
    # bench/results/box_normalizer_shapes.json). A saved config without this field (a .keras
    # file written before it) loads with it too, so an older `tiny` model, trained with
    # "positives", fine-tunes with "sampled".
    box_normalizer: str = "sampled"


_SECTIONS = {
    "input": InputConfig, "backbone": BackboneConfig, "fpn": FPNConfig, "anchors": AnchorConfig,
    "rpn": RPNConfig, "roi": RoIConfig, "mask_head": MaskHeadConfig,
    "detection": DetectionConfig, "loss": LossConfig,
}


@dataclasses.dataclass(frozen=True)
class MaskRCNNConfig:
    num_classes: int = 80  # foreground classes; label 0 is background
    category_ids: Optional[Tuple[int, ...]] = None  # dataset id of labels 1..C (None: 1..C)
    class_names: Optional[Tuple[str, ...]] = None
    input: InputConfig = InputConfig()
    backbone: BackboneConfig = BackboneConfig()
    fpn: FPNConfig = FPNConfig()
    anchors: AnchorConfig = AnchorConfig()
    rpn: RPNConfig = RPNConfig()
    roi: RoIConfig = RoIConfig()
    mask_head: MaskHeadConfig = MaskHeadConfig()
    detection: DetectionConfig = DetectionConfig()
    loss: LossConfig = LossConfig()

    def __post_init__(self):
        problem = canvas_size_problem(self.input.image_size)
        if problem:
            raise ValueError(f"input.image_size {problem}")
        if self.backbone.kind not in BACKBONE_KINDS:
            raise ValueError(f"unknown backbone.kind {self.backbone.kind!r}; choose one of "
                             f"{BACKBONE_KINDS}")
        if self.backbone.norm not in BACKBONE_NORMS:
            raise ValueError(f"unknown backbone.norm {self.backbone.norm!r}; choose one of "
                             f"{BACKBONE_NORMS}")
        if self.detection.paste_method not in PASTE_METHODS:
            raise ValueError(f"unknown detection.paste_method {self.detection.paste_method!r}; "
                             f"choose one of {PASTE_METHODS}")
        if self.loss.box_normalizer not in BOX_NORMALIZERS:
            raise ValueError(f"unknown loss.box_normalizer {self.loss.box_normalizer!r}; "
                             f"choose one of {BOX_NORMALIZERS}")
        if len(self.anchors.sizes) != self.fpn.max_level - self.fpn.min_level + 1:
            raise ValueError("anchors.sizes needs one size per FPN level")
        for name in ("category_ids", "class_names"):
            value = getattr(self, name)
            if value is not None and len(value) != self.num_classes:
                raise ValueError(f"{name} has {len(value)} entries for {self.num_classes} classes")

    @property
    def mask_size(self):
        """M, the side of the box-frame masks the mask head predicts and trains on."""
        return MASK_HEAD_UPSAMPLING * self.roi.mask_pool_size

    def dataset_category_ids(self):
        """Dataset category id of each label 1..C."""
        return tuple(self.category_ids or range(1, self.num_classes + 1))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values):
        values = dict(values)
        if "mask_size" in values.get("mask_head", {}):
            # Configs saved before the mask size was derived stored it; it must agree.
            values["mask_head"] = dict(values["mask_head"])
            mask_size = values["mask_head"].pop("mask_size")
            pool_size = values.get("roi", {}).get("mask_pool_size", RoIConfig.mask_pool_size)
            if mask_size != MASK_HEAD_UPSAMPLING * pool_size:
                raise ValueError(f"mask_head.mask_size {mask_size} must be {MASK_HEAD_UPSAMPLING} × "
                                 f"roi.mask_pool_size {pool_size}; leave it out (it is derived)")
        for name, section in _SECTIONS.items():
            if name in values:
                values[name] = section(**_tuples(values[name]))
        return cls(**_tuples(values))

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))


def _tuples(values):
    """JSON turns tuples into lists; frozen dataclasses want them back as (hashable) tuples."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}


def _merged(preset_changes, changes):
    """A preset's changes with the caller's `changes` on top: a section's field changes
    (mappings) merge field by field, other values replace."""
    merged = dict(preset_changes)
    for name, value in changes.items():
        if name in _SECTIONS:
            if not isinstance(value, Mapping):
                raise TypeError(
                    f"a preset's {name} takes the fields to change as a mapping, e.g. "
                    f"{name}={{'field': value}}, which keeps the preset's other {name} fields; "
                    f"got {type(value).__name__}. To replace the whole section use "
                    f"config.replace({name}=...)")
            merged[name] = {**merged.get(name, {}), **value}
        else:
            merged[name] = value
    return merged


def _from_changes(num_classes, changes):
    """MaskRCNNConfig's defaults with `changes` (see `_merged`) applied."""
    values = {}
    for name, value in changes.items():
        if name in _SECTIONS:
            fields = {field.name for field in dataclasses.fields(_SECTIONS[name])}
            unknown = sorted(set(value) - fields)
            if unknown:
                raise ValueError(f"{name} has no field {unknown[0]!r}; its fields: {sorted(fields)}")
            value = _SECTIONS[name](**value)
        values[name] = value
    return MaskRCNNConfig(num_classes=num_classes, **values)


# GeneralizedRCNNTransform's min_size and max_size in maskrcnn_resnet50_fpn.
TORCHVISION_SIZE_LIMITS = (800, 1333)


def r50_fpn(num_classes=80, **changes):
    """ResNet-50-FPN with the seed's head sizes and torchvision's hyperparameters, resizing
    images by torchvision's rule (short side 800, long side ≤ 1333) in either orientation."""
    return _from_changes(num_classes, _merged({"input": {"size_limits": TORCHVISION_SIZE_LIMITS}},
                                              changes))


def tiny(num_classes=3, **changes):
    """The same structure, narrow, for 128-px images: fast enough to train on a CPU.

    Widths: doubling the earlier 8–64 (16-channel stem) raised bbox AP on the shapes set by
    0.08 after 6 epochs, for a fifth more step time; widening them by half again, or doubling
    the FPN's or the mask head's channels, gained at most 0.012 for 18–62 % more
    (docs/training.md, "How `tiny` was chosen").
    One RoIAlign sample per bin costs no AP there and takes a fifth off the step.
    A box head of FC 512 rather than 256: over three training seeds on the demo's set, 0.005
    more bbox AP on average (0.829 against 0.824) for 7 % more training time; FC 1024 gave no
    more (docs/training.md, "How `tiny` was chosen").
    """
    sections = dict(
        input=dict(image_size=(128, 128)),
        backbone=dict(stage_blocks=(1, 1, 1, 1), stem_filters=32,
                      bottleneck_widths=(16, 32, 64, 128), norm="bn"),
        fpn=dict(channels=64),
        anchors=dict(sizes=(8, 16, 32, 64, 128)),
        rpn=dict(pre_nms_topk_train=512, pre_nms_topk_test=256, post_nms_topk_train=256,
                 post_nms_topk_test=128, samples_per_image=128),
        roi=dict(samples_per_image=32, sampling_ratio=1, fc_dim=512, aligned=True),
        mask_head=dict(conv_dim=64, gt_mask_size=32),
        detection=dict(max_detections=20, pre_nms_topk=256),
    )
    return _from_changes(num_classes, _merged(sections, changes))


# torchvision loads its published COCO weights with `overwrite_eps(model, 0.0)`: their frozen
# batch norms divide by √var exactly. A model built with weights=None uses BatchNorm2d's 1e-5.
TORCHVISION_BATCH_NORM_EPSILON = 0.0
# torchvision's COCO labels 1..90 (label l is COCO category id l); "N/A" marks the ids COCO
# left unused.
TORCHVISION_COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack",
    "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet",
    "N/A", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "N/A", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)


def torchvision_r50_fpn(num_classes=len(TORCHVISION_COCO_CLASS_NAMES), **changes):
    """r50_fpn in torchvision's COCO label space, for weights converted from its
    `maskrcnn_resnet50_fpn` (`convert.torchvision`); class names are torchvision's when
    num_classes is its 90. Images are resized by torchvision's rule (short side 800, long side
    ≤ 1333) and masks pasted its way; Keras and SavedModel inference pad each image only to
    multiples of 32, as torchvision does (`InputConfig.canvas_per_image`)."""
    own = {"detection": {"paste_method": "torchvision"}}
    if num_classes == len(TORCHVISION_COCO_CLASS_NAMES):
        own["class_names"] = TORCHVISION_COCO_CLASS_NAMES
    return r50_fpn(num_classes, **_merged(own, changes))


def r101_fpn(num_classes=80, **changes):
    """r50_fpn with ResNet-101 (23 blocks in the third stage), torchvision's layout: for
    torchvision's ImageNet resnet101 weights (`convert.torchvision.load_resnet_backbone`)."""
    return r50_fpn(num_classes, **_merged({"backbone": {"stage_blocks": RESNET101_STAGE_BLOCKS}},
                                          changes))


def keras_imagenet_r50_fpn(num_classes=80, **changes):
    """r50_fpn with keras.applications' ResNet50 as backbone, to start from its ImageNet
    weights (`convert.keras_applications`): ResNet v1 and Caffe's pixel normalisation."""
    own = {"input": {"pixel_mean": CAFFE_PIXEL_MEAN, "pixel_std": CAFFE_PIXEL_STD},
           "backbone": {"stride_in_1x1": True}}
    return r50_fpn(num_classes, **_merged(own, changes))


def keras_imagenet_r101_fpn(num_classes=80, **changes):
    """keras_imagenet_r50_fpn with keras.applications' ResNet101."""
    return keras_imagenet_r50_fpn(
        num_classes, **_merged({"backbone": {"stage_blocks": RESNET101_STAGE_BLOCKS}}, changes))


def mobilenetv3_fpn(num_classes=80, **changes):
    """MobileNetV3-Large-FPN for phones: a 320 × 320 canvas and narrower heads.

    At 320 px the backbone costs about 0.45 GMAC and has 3 M weights; r50_fpn's head sizes
    would cost many times that, so they are cut where the cost is:
    - FPN 128 channels: the FPN's 3×3 output convs and the RPN's shared 3×3 conv run on every
      pixel of P2 (stride 4) to P6 at channels² MACs each: about 2.5 GMAC at 128, 10 at 256.
    - Box head FC 512: an RoI's 7·7·128 features take 3.5 M weights and MACs at FC 512, 7.5 M
      at FC 1024 (2.5 times the backbone's weights); it runs on 300 proposals (r50_fpn: 1000).
    - Mask head 128 channels, its FPN's width as in r50_fpn: about 0.14 GMAC for each of the
      `detection.max_detections` slots, filled or not. At COCO's 100 it is the largest part
      (on 2 CPU threads the whole model takes 0.64× the time with 50): fewer detections are
      the lever.
    - Anchors 16..256, r50_fpn's halved: objects are about 0.3× the size they have in its
      800-px canvas.
    Start from ImageNet weights (`convert.keras_applications.load_imagenet_backbone`): the
    backbone's batch norm is frozen.
    """
    sections = dict(
        input=dict(image_size=(320, 320), pixel_mean=MOBILENET_PIXEL_MEAN,
                   pixel_std=MOBILENET_PIXEL_STD),
        backbone=dict(kind="mobilenet_v3_large"),
        fpn=dict(channels=128),
        anchors=dict(sizes=(16, 32, 64, 128, 256)),
        rpn=dict(pre_nms_topk_train=1000, pre_nms_topk_test=300, post_nms_topk_train=1000,
                 post_nms_topk_test=300),
        roi=dict(fc_dim=512),
        mask_head=dict(conv_dim=128),
    )
    return _from_changes(num_classes, _merged(sections, changes))


def mobile(num_classes=80, **changes):
    """mobilenetv3_fpn cut to a phone's budget, as D2Go's mobile Mask R-CNNs cut theirs:
    lighter heads and fewer detections at the same 320 × 320 canvas and backbone.
    - FPN and RPN at 64 channels: their 3×3 convs on P2..P6 cost a quarter of 128's.
    - 50 proposals into a box head of FC 256 (its RoIAlign and FCs cost in proportion).
    - At most 10 detections, each through a mask head of 2 convs at 64 channels: the mask
      head runs on every detection slot, filled or not.
    Where its int8 time goes: bench/bench_mobile.py.
    """
    sections = dict(
        fpn=dict(channels=64),
        rpn=dict(pre_nms_topk_train=1000, pre_nms_topk_test=200, post_nms_topk_train=1000,
                 post_nms_topk_test=50),
        roi=dict(fc_dim=256),
        mask_head=dict(num_convs=2, conv_dim=64),
        detection=dict(max_detections=10, pre_nms_topk=200),
    )
    return mobilenetv3_fpn(num_classes, **_merged(sections, changes))


def mobilenetv3_fpn_tiny(num_classes=3, **changes):
    """mobilenetv3_fpn at tiny's 128-px canvas, widths and proposal counts: for tests and CPU
    runs on the shapes set. MobileNetV3 keeps its full width; its batch norm trains."""
    sections = dict(
        input=dict(pixel_mean=MOBILENET_PIXEL_MEAN, pixel_std=MOBILENET_PIXEL_STD),
        # The ResNet fields MobileNetV3 does not read are left at their defaults.
        backbone=dataclasses.asdict(BackboneConfig(kind="mobilenet_v3_large", norm="bn")),
    )
    return tiny(num_classes, **_merged(sections, changes))


# Training presets. torchvision_r50_fpn describes weights that `convert-torchvision` writes,
# and is not among them.
PRESETS = {"r50_fpn": r50_fpn, "r101_fpn": r101_fpn, "tiny": tiny,
           "mobilenetv3_fpn": mobilenetv3_fpn, "mobile": mobile,
           "keras_imagenet_r50_fpn": keras_imagenet_r50_fpn,
           "keras_imagenet_r101_fpn": keras_imagenet_r101_fpn}


def preset(name, **changes):
    """A preset by name (see PRESETS)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name](**changes)

"""int8 TFLite quantization that keeps its accuracy: which ops stay float, and how close the
int8 model's detections are to the float model's (docs/design.md §6.3).

Only the ops of INT8_LAYERS (convolutions and FC layers) are quantized. Inside them, the
converter may still give an int8 tensor a step far wider than the values calibration saw: it
makes ops that must share one scale (reshape, top-k, concatenation, select) share it along a
chain, so the -1e4 that marks dropped proposals (`ops.nms.INVALID_SCORE`) once reached back to
the RPN's objectness logits and gave them a step of ~40 logits for values within ±50: every
anchor of an image scored alike, and AP50 fell from 0.95 to 0.73. `quantize_int8` measures each
int8 tensor's resolution (its calibrated range counted in int8 steps), keeps the ops below
`min_int8_levels` (MIN_INT8_LEVELS by default) float and quantizes again.
`detection_agreement` compares the int8 model's detections with the float model's;
`export_tflite` stores the result as an `Int8Report`.

Shapes: K detections of one image.
"""

import dataclasses
import numbers
import re

import numpy as np

from keras_maskrcnn.ops.boxes import pairwise_iou
from keras_maskrcnn.private_api import calibrate_only, mlir_quantize, tflite_schema

schema = tflite_schema()

# Layers whose ops int8 quantizes: the convolutions and FC layers, where the time goes. The
# rest (box decoding and clipping, score thresholds, NMS inputs, RoIAlign sampling) stays
# float: int8 steps of 1/256 of a tensor's range would move boxes by pixels and merge scores.
INT8_LAYERS = ("backbone", "fpn", "rpn_head", "box_head", "mask_head")
# An op of INT8_LAYERS names its scope as a path component: "mask_rcnn_1/rpn_head_1/...", or
# "backbone/..." in a function that calls the layer itself.
_INT8_SCOPE = re.compile(rf"(^|[/;])({'|'.join(INT8_LAYERS)})(_\d+)?/")
# By default an int8 tensor whose calibrated range spans fewer steps than this keeps its op
# float. A tensor quantized from its own range spans 255; those a shared scale widened spanned
# 0.7–1.6 in the model above, and every other tensor 159 or more.
MIN_INT8_LEVELS = 64
# Each round keeps float what the last one found; ops freed from a shared scale can expose
# others that shared it.
MAX_FALLBACK_ROUNDS = 4
# Agreement: float-model detections scoring at least AGREEMENT_SCORE, matched by an int8
# detection of the same class with box IoU ≥ AGREEMENT_IOU and score ≥ AGREEMENT_SCORE / 2.
AGREEMENT_SCORE = 0.5
AGREEMENT_IOU = 0.75
# Below this share of matched detections (either way) `export_tflite` warns.
POOR_AGREEMENT = 0.9


def _op_output_names(tflite_bytes):
    """Names of the tensors that the operators of a `.tflite` flatbuffer write → list of str."""
    graph = schema.Model.GetRootAsModel(tflite_bytes, 0).Subgraphs(0)
    return [graph.Tensors(op.Outputs(j)).Name().decode()
            for op in map(graph.Operators, range(graph.OperatorsLength()))
            for j in range(op.OutputsLength())]


def _tensors_by_name(tflite_bytes):
    graph = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(tflite_bytes, 0)).subgraphs[0]
    return {tensor.name.decode(): tensor for tensor in graph.tensors}


def int8_levels(calibrated_model, quantized_model):
    """{tensor name: int8 steps its calibrated range spans} for the int8 tensors of
    `quantized_model` that calibration saw vary (`.tflite` bytes both)."""
    calibrated = _tensors_by_name(calibrated_model)
    levels = {}
    for name, tensor in _tensors_by_name(quantized_model).items():
        quantization = tensor.quantization
        if (tensor.type != schema.TensorType.INT8 or quantization is None
                or quantization.scale is None or len(quantization.scale) != 1
                or name not in calibrated):
            continue
        statistics = calibrated[name].quantization
        if statistics is None or statistics.min is None or len(statistics.min) != 1:
            continue
        spread = float(statistics.max[0] - statistics.min[0])
        if spread > 0:
            levels[name] = spread / float(quantization.scale[0])
    return levels


def check_min_int8_levels(min_int8_levels):
    """`min_int8_levels` if it is a number of int8 steps in [0, 255], else a ValueError."""
    if (isinstance(min_int8_levels, bool) or not isinstance(min_int8_levels, numbers.Real)
            or not 0 <= min_int8_levels <= 255):
        raise ValueError(f"min_int8_levels must be a number of int8 steps from 0 to 255 (0 keeps "
                         f"no op float for its resolution), not {min_int8_levels!r}")
    return min_int8_levels


def quantize_int8(converter, min_int8_levels=MIN_INT8_LEVELS):
    """Quantize `converter`'s model (its representative_dataset set) → (`.tflite` bytes, op
    names kept float for their resolution).

    An op whose int8 output spans fewer than `min_int8_levels` steps of its calibrated range
    (`int8_levels`) is kept float; 0 keeps none (every op of INT8_LAYERS int8). Takes the two
    steps of TFLite's QuantizationDebugger, its route to selective quantization, without
    building its instrumented debug model: calibrate once, then quantize as often as needed
    with the named ops kept float.
    """
    check_min_int8_levels(min_int8_levels)
    calibrate_only(converter)
    calibrated = converter.convert()
    op_names = set(_op_output_names(calibrated))
    outside_layers = [name for name in op_names if not _INT8_SCOPE.search(name)]
    fallbacks = []
    for _ in range(MAX_FALLBACK_ROUNDS):
        # A top-k named here still follows its int8 input; only listing the op type keeps it float.
        quantized = mlir_quantize(
            calibrated, denylisted_ops=["TOPK_V2"], denylisted_nodes=outside_layers + fallbacks)
        coarse = sorted(name for name, levels in int8_levels(calibrated, quantized).items()
                        if levels < min_int8_levels and name in op_names and name not in fallbacks)
        if not coarse:
            return quantized, tuple(fallbacks)
        fallbacks += coarse
    raise RuntimeError(f"int8 quantization still gives tensors fewer than {min_int8_levels} "
                       f"steps after {MAX_FALLBACK_ROUNDS} rounds: {coarse}")


def layer_paths(op_names):
    """Keras layer paths (e.g. "rpn_head/objectness") of TFLite op output names, sorted.

    An op's name ends with the scope of the Keras op that made it
    ("mask_rcnn_1/rpn_head_1/objectness_1/Squeeze"); the model's own scope, the op and the
    tracing suffixes (_1, _9) are dropped.
    """
    paths = set()
    for name in op_names:
        parts = [re.sub(r"_\d+$", "", part) for part in name.split(";")[-1].split("/")]
        inside = [part for part in parts[1:-1] if part]  # drop the model scope and the op
        paths.add("/".join(inside) or parts[-1])
    return sorted(paths)


def detection_agreement(reference, candidate):
    """How many detections two models share on the same images.

    Args:
      reference, candidate: lists (one entry per image) of detections dicts with `boxes`
        [K, 4], `scores` [K] and `category_ids` [K] (`postprocess.unpack_detections`).
    Returns: dict of `reference` (its detections scoring ≥ AGREEMENT_SCORE), `candidate`
      (likewise), `matched` (reference ones with a candidate of the same class, box IoU ≥
      AGREEMENT_IOU, score ≥ AGREEMENT_SCORE / 2; each candidate used once, best scores first)
      and `max_score_difference` over the matched pairs.
    """
    counts = {"reference": 0, "candidate": 0, "matched": 0, "max_score_difference": 0.0}
    for ref, cand in zip(reference, candidate):
        confident = np.flatnonzero(ref["scores"] >= AGREEMENT_SCORE)
        confident = confident[np.argsort(-ref["scores"][confident])]
        counts["reference"] += len(confident)
        counts["candidate"] += int(np.sum(cand["scores"] >= AGREEMENT_SCORE))
        if not len(confident) or not len(cand["scores"]):
            continue
        iou = pairwise_iou(ref["boxes"][confident], cand["boxes"]).numpy()
        available = cand["scores"] >= AGREEMENT_SCORE / 2
        for row, index in enumerate(confident):
            eligible = (available & (cand["category_ids"] == ref["category_ids"][index])
                        & (iou[row] >= AGREEMENT_IOU))
            if eligible.any():
                best = int(np.argmax(np.where(eligible, iou[row], -1.0)))
                available[best] = False
                counts["matched"] += 1
                counts["max_score_difference"] = max(
                    counts["max_score_difference"],
                    float(abs(cand["scores"][best] - ref["scores"][index])))
    return counts


@dataclasses.dataclass(frozen=True)
class Int8Report:
    """What an int8 export measured: kept-float layers and agreement with the float model."""
    calibration_images: int
    held_out_images: int
    float_layers: tuple  # layer paths (`layer_paths`) kept float for their resolution
    reference_detections: int  # float model's detections scoring ≥ AGREEMENT_SCORE
    int8_detections: int  # the int8 model's
    matched: int
    max_score_difference: float

    @property
    def agreement(self):
        """Matched detections over the larger of the two counts (1.0 when both are 0)."""
        larger = max(self.reference_detections, self.int8_detections)
        return self.matched / larger if larger else 1.0

    @property
    def poor(self):
        return self.agreement < POOR_AGREEMENT

    def lines(self):
        """The report as short lines of text, for the export's output."""
        kept = ", ".join(self.float_layers) or "none"
        lines = [
            f"int8: calibrated on {self.calibration_images} images; layers outside "
            f"{'/'.join(INT8_LAYERS)} stay float, and so do these, whose int8 step was too "
            f"coarse: {kept}",
            f"int8 vs float32 on {self.held_out_images} held-out images: {self.matched} of "
            f"{self.reference_detections} detections (float32) / {self.int8_detections} (int8) "
            f"scoring ≥ {AGREEMENT_SCORE} match (same class, box IoU ≥ {AGREEMENT_IOU}): "
            f"agreement {self.agreement:.1%}, scores within {self.max_score_difference:.2f}",
        ]
        if self.poor:
            lines.append(f"WARNING: int8 agreement {self.agreement:.1%} is below "
                         f"{POOR_AGREEMENT:.0%}: check the int8 model's AP (keras-maskrcnn "
                         "evaluate) or export float16 / dynamic instead")
        return lines

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        return cls(**{**values, "float_layers": tuple(values["float_layers"])})

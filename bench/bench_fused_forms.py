"""The converted R50-FPN's inference with its layers in the forms oneDNN fuses (as they are
now) against the two implementations before, in float32 and bfloat16.

Writes JSON (default bench/results/fused_forms.json). The model is bench_torchvision.py's (a
seeded random-init torchvision `maskrcnn_resnet50_fpn`, converted). Per precision
(`inference.with_precision`) three `KerasPredictor`s are traced, with the backbone's code
replaced while tracing where the variant says:
- "mul_add": each `FrozenBatchNorm` after its convolution as y = x·scale + (β − mean·scale),
  scale = γ/√(var + ε), in the compute dtype; the backbone's residual sums and the FPN's
  top-down sums plain adds, the mask head's upsampling its transposed convolution (the first
  implementation);
- "fused_bn": each `FrozenBatchNorm` as TensorFlow's fused inference batch norm after its
  convolution, the rest as in mul_add (the second);
- "folded": the layers as they are (`layers.backbones.run_layers`,
  `ops.map_sum.same_shape_sum`, `MaskHead.upsample`).
Per image size (default 480 × 640 and 800 × 1333), after a warm-up each, `repeats` rounds time
every variant's `KerasPredictor.forward` in turn (`benchutil.time_in_turn`; min and median ms);
reported: each variant's speed-up over mul_add per precision, and how far each one's detections
are from mul_add's (largest box and score difference over the detections both keep, and the
counts).

  flock /tmp/heavy.lock .venv/bin/python bench/bench_fused_forms.py [--repeats N] [--threads T]
"""

import argparse

import keras
import numpy as np
import tensorflow as tf

from bench_torchvision import IMAGE_SIZES, PRECISIONS, bench_image, converted_model
from benchutil import machine_info, time_in_turn, write_report

from keras_maskrcnn import preprocessing
from keras_maskrcnn.inference import KerasPredictor, with_precision
from keras_maskrcnn.layers import backbones, fpn
from keras_maskrcnn.layers.backbones import FrozenBatchNorm
from keras_maskrcnn.layers.mask_head import MaskHead


def mul_add_call(layer, inputs):
    """The first `FrozenBatchNorm.call`: a multiply and an add in the compute dtype."""
    dtype = inputs.dtype
    gamma, beta, mean, variance = (tf.cast(v, dtype) for v in (
        layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance))
    scale = gamma * tf.math.rsqrt(variance + tf.cast(layer.epsilon, dtype))
    return inputs * scale + (beta - mean * scale)


def layers_in_turn(layer_list, inputs, training):
    """`run_layers` without folding: each layer called in turn."""
    for layer in layer_list:
        inputs = layer(inputs, training=training)
    return inputs


# Per variant, the backbone functions replaced while tracing: {(owner, name): replacement}.
PLAIN_FORMS = {(backbones, "same_shape_sum"): lambda a, b: a + b,
               (fpn, "same_shape_sum"): lambda a, b: a + b,
               (MaskHead, "upsample"): lambda head, x: head.deconv(x)}
VARIANTS = {
    "mul_add": {(FrozenBatchNorm, "call"): mul_add_call, (backbones, "run_layers"): layers_in_turn,
                **PLAIN_FORMS},
    "fused_bn": {(backbones, "run_layers"): layers_in_turn, **PLAIN_FORMS},
    "folded": {},
}


def traced_predictor(model, canvas, image_info, replacements):
    """A `KerasPredictor` of `model`, its compiled forward traced (on `canvas`) with the
    `replacements` (VARIANTS) in place."""
    originals = {key: getattr(*key) for key in replacements}
    for (owner, name), replacement in replacements.items():
        setattr(owner, name, replacement)
    try:
        predictor = KerasPredictor(model)
        predictor.forward(canvas, image_info)
    finally:
        for (owner, name), original in originals.items():
            setattr(owner, name, original)
    return predictor


def detection_difference(a, b):
    """Largest |box| and |score| difference over the detections both kept, and their counts."""
    count_a, count_b = int(a["num_detections"][0]), int(b["num_detections"][0])
    kept = min(count_a, count_b)
    return {"detections": [count_a, count_b],
            "max_box_difference_px": float(np.abs(a["detection_boxes"][0, :kept]
                                                  - b["detection_boxes"][0, :kept]).max()),
            "max_score_difference": float(np.abs(a["detection_scores"][0, :kept]
                                                 - b["detection_scores"][0, :kept]).max()),
            "same_classes": bool((a["detection_classes"][0, :kept]
                                  == b["detection_classes"][0, :kept]).all())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/fused_forms.json")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model = converted_model(args.seed)
    models = {precision: with_precision(model, precision) for precision in PRECISIONS}
    results = {}
    for name, image_hw in IMAGE_SIZES.items():
        image = bench_image(image_hw, args.seed)
        canvas, image_info = preprocessing.preprocess_for_model([image], model.model_config.input)
        functions, outputs = {}, {}
        for precision, precision_model in models.items():
            for variant, replacements in VARIANTS.items():
                predictor = traced_predictor(precision_model, canvas, image_info, replacements)
                key = f"{precision}_{variant}"
                outputs[key] = predictor.forward(canvas, image_info)
                functions[key] = lambda p=predictor: p.forward(canvas, image_info)
        times = time_in_turn(functions, args.repeats)
        entry = {"canvas_hw": list(canvas.shape[1:3]),
                 "median_ms": {k: v[1] for k, v in times.items()},
                 "min_ms": {k: v[0] for k, v in times.items()}}
        for precision in PRECISIONS:
            baseline = f"{precision}_mul_add"
            entry[precision] = {
                f"{variant}_speedup": round(times[baseline][1] / times[f"{precision}_{variant}"][1], 3)
                for variant in VARIANTS if variant != "mul_add"}
            entry[precision].update({
                f"{variant}_against_mul_add": detection_difference(
                    outputs[f"{precision}_{variant}"], outputs[baseline])
                for variant in VARIANTS if variant != "mul_add"})
        results[name] = entry
        print(name, entry, flush=True)
    write_report({"machine": machine_info(tensorflow=tf.__version__, keras=keras.__version__),
                  "threads": args.threads, "batch_size": 1, "repeats": args.repeats,
                  "seed": args.seed, "results": results}, args.out)


if __name__ == "__main__":
    main()

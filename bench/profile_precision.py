"""Where the converted R50-FPN's inference time goes, in float32 and bfloat16, by TensorFlow's
profiler.

Writes JSON (default bench/results/profile_precision.json). The model is bench_torchvision.py's:
a seeded random-init torchvision `maskrcnn_resnet50_fpn` converted by `convert.torchvision`
(random heads keep all 100 detections, so the mask head runs on 100). Per precision
(`inference.with_precision`) its compiled host-path forward (`KerasPredictor.forward`) runs on
one preprocessed image (default 480 × 640: canvas 800 × 1088), `threads` intra-op threads and one
inter-op thread, so that ops run one at a time and their times add up:
- wall: `repeats` timed calls without the profiler (min and median ms);
- profile: `repeats` calls under `tf.profiler.experimental`; each op's self time (its trace
  event less the op events nested in it) per call, summed by part of the model (the name scope
  of the layer or stage it runs in: backbone, fpn, rpn_head, proposals, box_roi_align,
  box_head, detections, mask_roi_align, mask_head, normalize, outputs) and by kind (convolution,
  matmul, cast, nms: the ops of the non-max suppressions' loops, other), with each part's and
  kind's share of the traced time and each part's costliest op types; traced time per call
  against the wall time says how much the profiler adds (its per-op overhead weighs most on
  NMS's thousands of small ops);
- conv rates: each part's convolution and matrix-product GFLOP/s, their FLOPs counted on the
  model's static-path graph (`model(inputs)`, which runs the mask head on all 100 slots, as
  here) against their traced time, next to this CPU's probe convolution
  (`precision.conv_rates`: a 3×3, 256→256 convolution on 200×336).

  flock /tmp/heavy.lock .venv/bin/python bench/profile_precision.py [--image-size H W] \\
      [--repeats N] [--threads T] [--out PATH]
"""

import argparse
import collections
import glob
import re
import statistics
import tempfile
import time

import keras
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from bench_torchvision import PRECISIONS, bench_image, converted_model
from benchutil import machine_info, write_report

from keras_maskrcnn import preprocessing
from keras_maskrcnn.inference import KerasPredictor, with_precision
from keras_maskrcnn.precision import conv_rates

# Name scopes of the model's layers and stages (`MaskRCNN.infer`), in the order they run.
PARTS = ("normalize", "backbone", "fpn", "rpn_head", "proposals", "box_roi_align", "box_head",
         "detections", "mask_roi_align", "mask_head", "outputs")
# How many of each part's op types (as traced, after oneDNN's rewrites) the report lists.
TOP_OP_TYPES = 6
# Op types whose FLOPs are counted: 2 × multiply-adds.
FLOP_OP_TYPES = ("Conv2D", "Conv2DBackpropInput", "DepthwiseConv2dNative", "MatMul",
                 "BatchMatMulV2")


def part_of(op_name):
    """The PARTS entry of an op's name (its first scope that names one, less Keras' "_1"
    suffixes), or "other"."""
    for scope in op_name.split("/")[:-1]:
        scope = re.sub(r"_\d+$", "", scope)
        if scope in PARTS:
            return scope
    return "other"


def kind_of(op_name, op_type):
    """convolution, matmul, cast, nms or other, from a traced op's name and type (oneDNN's
    rewrites rename types: `_MklNativeFusedConv2D`, `_MklNativeFusedMatMul`, ...)."""
    if "non_max_suppression" in op_name:
        return "nms"
    if "Conv2D" in op_type or "Conv2d" in op_type:
        return "convolution"
    if "MatMul" in op_type:
        return "matmul"
    if op_type == "Cast":
        return "cast"
    return "other"


def flops_by_part(model, canvas_hw):
    """{part: GFLOP} of the convolutions and matrix products (FLOP_OP_TYPES) of one forward
    pass of the model's static path on a canvas_hw canvas, batch 1."""
    spec = [tf.TensorSpec([1, *canvas_hw, 3], tf.float32), tf.TensorSpec([1, 5], tf.float32)]
    function = tf.function(lambda images, info: model({"images": images, "image_info": info}))
    flops = collections.Counter()
    for op in function.get_concrete_function(*spec).graph.get_operations():
        if op.type not in FLOP_OP_TYPES:
            continue
        if op.type == "Conv2DBackpropInput":  # the transposed convolution: per input pixel
            kernel = op.inputs[1].shape  # [kh, kw, out channels, in channels]
            count = op.inputs[2].shape.num_elements() * kernel[0] * kernel[1] * kernel[2]
        elif op.type in ("Conv2D", "DepthwiseConv2dNative"):
            kernel = op.inputs[1].shape
            per_output = kernel[0] * kernel[1] * (kernel[2] if op.type == "Conv2D" else 1)
            count = op.outputs[0].shape.num_elements() * per_output
        else:
            transpose_a = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
            depth = op.inputs[0].shape[-2 if transpose_a else -1]
            count = op.outputs[0].shape.num_elements() * depth
        flops[part_of(op.name)] += 2 * count / 1e9
    return dict(flops)


def traced_ops(logdir):
    """[(op name, op type, self ps)] of every op event in the profile under `logdir`: its
    duration less that of the op events nested in it on the same thread."""
    ops = []
    for path in glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as file:
            space.ParseFromString(file.read())
        for plane in space.planes:
            if plane.name != "/host:CPU":
                continue
            for line in plane.lines:
                events = []
                for event in line.events:
                    meta = plane.event_metadata[event.metadata_id]
                    # Op events are "name:type" with the type as display name; framework events
                    # (executor, thread pool, eager runtime) are not.
                    if meta.display_name and meta.name.endswith(":" + meta.display_name):
                        name = meta.name[:-len(meta.display_name) - 1]
                        events.append([event.offset_ps, event.duration_ps, name,
                                       meta.display_name, event.duration_ps])
                events.sort(key=lambda e: (e[0], -e[1]))
                stack = []
                for event in events:
                    while stack and stack[-1][0] + stack[-1][1] <= event[0]:
                        stack.pop()
                    if stack:
                        stack[-1][4] -= event[1]
                    stack.append(event)
                ops.extend((name, op_type, self_ps) for _, _, name, op_type, self_ps in events)
    return ops


def profile_precision(predictor, canvas, image_info, repeats, flops):
    """Wall times, then the profiled calls' per-call ms by part and kind, and conv rates."""
    for _ in range(2):
        predictor.forward(canvas, image_info)
    wall = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.forward(canvas, image_info)
        wall.append(1000 * (time.perf_counter() - start))
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(repeats):
            predictor.forward(canvas, image_info)
        tf.profiler.experimental.stop()
        ops = traced_ops(logdir)
    by_part_kind = collections.defaultdict(float)
    by_part_type = collections.defaultdict(collections.Counter)
    for name, op_type, self_ps in ops:
        by_part_kind[part_of(name), kind_of(name, op_type)] += self_ps / 1e9 / repeats
        by_part_type[part_of(name)][op_type] += self_ps / 1e9 / repeats
    traced = sum(by_part_kind.values())
    parts = {}
    for part in PARTS + ("other",):
        kinds = {kind: round(ms, 1) for (p, kind), ms in sorted(by_part_kind.items()) if p == part}
        if not kinds:
            continue
        ms = sum(kinds.values())
        entry = {"ms": round(ms, 1), "share": round(ms / traced, 3), "by_kind_ms": kinds,
                 "top_op_types_ms": {op_type: round(ms, 1) for op_type, ms
                                     in by_part_type[part].most_common(TOP_OP_TYPES)}}
        conv_ms = kinds.get("convolution", 0) + kinds.get("matmul", 0)
        if flops.get(part) and conv_ms:
            entry["conv_gflop"] = round(flops[part], 1)
            entry["conv_gflop_per_s"] = round(flops[part] / conv_ms * 1000, 1)
        parts[part] = entry
    kinds = collections.Counter()
    for (_, kind), ms in by_part_kind.items():
        kinds[kind] += ms
    conv_ms = kinds["convolution"] + kinds["matmul"]
    return {
        "wall_ms": {"min": round(min(wall), 1), "median": round(statistics.median(wall), 1)},
        "traced_ms_per_call": round(traced, 1),
        "parts": parts,
        "kinds": {kind: {"ms": round(ms, 1), "share": round(ms / traced, 3)}
                  for kind, ms in kinds.most_common()},
        "conv_gflop_per_s": round(sum(flops.values()) / conv_ms * 1000, 1),
        "model_gflop_per_s": round(sum(flops.values()) / statistics.median(wall) * 1000, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/profile_precision.json")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model = converted_model(args.seed)
    image = bench_image(tuple(args.image_size), args.seed)
    canvas, image_info = preprocessing.preprocess_for_model([image], model.model_config.input)
    canvas_hw = tuple(canvas.shape[1:3])
    flops = flops_by_part(model, canvas_hw)
    results = {}
    for precision in PRECISIONS:
        predictor = KerasPredictor(with_precision(model, precision))
        results[precision] = profile_precision(predictor, canvas, image_info, args.repeats, flops)
        print(precision, results[precision], flush=True)
    probe = conv_rates().to_dict()
    for precision in PRECISIONS:
        rate = probe[f"{precision}_gflops"]
        results[precision]["conv_share_of_probe"] = round(
            results[precision]["conv_gflop_per_s"] / rate, 3)
        results[precision]["model_share_of_probe"] = round(
            results[precision]["model_gflop_per_s"] / rate, 3)
    speedup = {
        "wall": round(results["float32"]["wall_ms"]["median"]
                      / results["bfloat16"]["wall_ms"]["median"], 2),
        **{part: round(results["float32"]["parts"][part]["ms"]
                       / results["bfloat16"]["parts"][part]["ms"], 2)
           for part in results["bfloat16"]["parts"]
           if results["bfloat16"]["parts"][part]["ms"] and results["float32"]["parts"].get(part, {}).get("ms")}}
    write_report({"machine": machine_info(tensorflow=tf.__version__, keras=keras.__version__),
                  "conv_probe": probe, "image_hw": list(args.image_size),
                  "canvas_hw": list(canvas_hw), "threads": args.threads, "batch_size": 1,
                  "repeats": args.repeats, "seed": args.seed,
                  "conv_gflop_by_part": {part: round(g, 1) for part, g in flops.items()},
                  "results": results, "bfloat16_speedup": speedup}, args.out)


if __name__ == "__main__":
    main()

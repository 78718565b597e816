"""COCO AP of trained models with their batch norms frozen (`FrozenBatchNorm`, folded into the
convolutions when run), in float32 and bfloat16, beside the models as trained.

  .venv/bin/python bench/frozen_norm_accuracy.py --run MODEL.keras VAL.json [--run ...] \\
      [--out PATH]

Each model, trained with `backbone.norm="bn"` (as `tiny` is), is rebuilt with
`backbone.norm="frozen_bn"` (`model.rebuild`): `FrozenBatchNorm` holds the same four weights as
Keras' batch norm and computes its inference map, so in float32 the frozen model's AP is the
trained one's, and its bfloat16 AP shows what the folded convolutions cost in bfloat16. Every
model is evaluated with `commands.evaluate` once per precision
(`eval_bfloat16_accuracy.metrics_per_precision`); writes JSON (default
bench/results/frozen_norm_accuracy.json) with the metrics and the largest drops.
"""

import argparse
import dataclasses
import os
import tempfile

import keras
import tensorflow as tf

from benchutil import machine_info, write_report
from eval_bfloat16_accuracy import COMPARED, metrics_per_precision
from keras_maskrcnn.inference import load_model
from keras_maskrcnn.model import rebuild


def frozen_copy(model_path, out_path):
    """Save `model_path`'s model rebuilt with frozen batch norm at `out_path`."""
    model = load_model(model_path)
    config = model.model_config
    if config.backbone.norm != "bn":
        raise ValueError(f"{model_path}: backbone.norm is {config.backbone.norm!r}, not 'bn'")
    frozen = rebuild(model, config.replace(
        backbone=dataclasses.replace(config.backbone, norm="frozen_bn")))
    frozen.save(out_path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs=2, action="append", required=True,
                        metavar=("MODEL.keras", "VAL.json"))
    parser.add_argument("--out", default="bench/results/frozen_norm_accuracy.json")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as work_dir:
        for index, (model_path, val_data) in enumerate(args.run):
            frozen_path = os.path.join(work_dir, f"frozen{index}.keras")
            frozen_copy(model_path, frozen_path)
            runs.append({"model": model_path, "val": val_data,
                         "trained": metrics_per_precision(model_path, val_data),
                         "frozen": metrics_per_precision(frozen_path, val_data)})
    keys = [f"{iou_type}_{metric}" for iou_type, metric in COMPARED]
    report = {
        "machine": machine_info(tensorflow=tf.__version__, keras=keras.__version__),
        "runs": runs,
        # Frozen float32 against trained float32 (should be 0), and frozen bfloat16 against
        # frozen float32, the largest over the runs.
        "largest_frozen_float32_difference": {key: round(max(
            abs(r["frozen"]["float32"][key] - r["trained"]["float32"][key]) for r in runs), 4)
            for key in keys},
        "largest_frozen_bfloat16_drop": {key: round(max(
            r["frozen"]["float32"][key] - r["frozen"]["bfloat16"][key] for r in runs), 4)
            for key in keys},
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()

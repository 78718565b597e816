"""COCO AP of trained `.keras` models computing in float32 and in bfloat16, side by side.

  .venv/bin/python bench/eval_bfloat16_accuracy.py --run MODEL.keras VAL.json [--run ...] \
      [--out PATH]

Evaluates each model on its VAL.json with `commands.evaluate` (`keras-maskrcnn evaluate`)
once per precision in `inference.INFERENCE_PRECISIONS`, timing each evaluation, and writes JSON
(default bench/results/bfloat16_inference.json) with every metric and the largest drop of bbox
and segm AP and AP50 from float32 to bfloat16 over the runs.
"""

import argparse
import time

from benchutil import machine_info, write_report
from keras_maskrcnn import commands
from keras_maskrcnn.config import INFERENCE_PRECISIONS

COMPARED = [(iou_type, metric) for iou_type in ("bbox", "segm") for metric in ("AP", "AP50")]


def metrics_per_precision(model_path, val_data):
    """{precision: {"seconds", "bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"}} of one model
    evaluated on `val_data` once per precision in `INFERENCE_PRECISIONS`."""
    results = {}
    for precision in INFERENCE_PRECISIONS:
        start = time.perf_counter()
        metrics = commands.evaluate(model_path, val_data, precision=precision)
        results[precision] = {"seconds": round(time.perf_counter() - start, 1),
                              **{f"{iou_type}_{metric}": round(metrics[iou_type][metric], 4)
                                 for iou_type, metric in COMPARED}}
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs=2, action="append", required=True,
                        metavar=("MODEL.keras", "VAL.json"))
    parser.add_argument("--out", default="bench/results/bfloat16_inference.json")
    args = parser.parse_args()
    runs = [{"model": model_path, "val": val_data,
             "results": metrics_per_precision(model_path, val_data)}
            for model_path, val_data in args.run]
    largest_drop = {f"{iou_type}_{metric}": round(max(
        run["results"]["float32"][f"{iou_type}_{metric}"]
        - run["results"]["bfloat16"][f"{iou_type}_{metric}"] for run in runs), 4)
        for iou_type, metric in COMPARED}
    write_report({"machine": machine_info(), "runs": runs,
                  "largest_drop_float32_to_bfloat16": largest_drop}, args.out)


if __name__ == "__main__":
    main()

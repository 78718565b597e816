"""COCO AP of trained models and of every export variant, through the same `evaluate` path.

  .venv/bin/python bench/eval_export_accuracy.py \
      --run MODEL.keras VAL.json CALIBRATION.json [--run ...] [--out PATH]

For each --run: exports the model as a SavedModel and as TFLite with each quantization (as
`keras-maskrcnn export` does), evaluates the `.keras` file and each export on VAL.json with
`commands.evaluate` (TFLite on TFLITE_THREADS LiteRT threads), and records per variant its
file size and bbox and segm metrics, and for int8 the export's `Int8Report`. int8 calibrates
on the first --calibration-images images of CALIBRATION.json and checks agreement on the
INT8_CHECK_IMAGES after them. Writes JSON (default bench/results/export_accuracy.json) with
each run's results and the largest drop of each int8 metric from float32 TFLite.
"""

import argparse
import os
import tempfile

import keras
import tensorflow as tf

from bench_export import size_bytes
from benchutil import machine_info, write_report
from keras_maskrcnn import commands
from keras_maskrcnn.export_config import (DEFAULT_CALIBRATION_IMAGES, INT8_CHECK_IMAGES,
                                          ExportConfig)
from keras_maskrcnn.export.litert import read_int8_report
from keras_maskrcnn.export.tflite import QUANTIZATIONS

TFLITE_THREADS = 2


def export_variants(model_path, work_dir, calibration_data, calibration_images):
    """{variant name: (exported path, LiteRT threads or None)}, the `.keras` file included."""
    variants = {"keras": (model_path, None)}
    saved_model_dir = os.path.join(work_dir, "saved_model")
    variants["saved_model"] = (commands.export(ExportConfig(
        model=model_path, out=saved_model_dir, format="saved_model")), None)
    for quantize in QUANTIZATIONS:
        path = os.path.join(work_dir, f"model_{quantize}.tflite")
        int8 = quantize == "int8"
        commands.export(ExportConfig(model=model_path, out=path, format="tflite",
                                     quantize=quantize,
                                     calibration_data=calibration_data if int8 else None,
                                     calibration_images=calibration_images))
        variants[f"tflite_{quantize}"] = (path, TFLITE_THREADS)
    return variants


METRICS = ("AP", "AP50", "AP75")


def evaluate_run(model_path, data, calibration_data, calibration_images):
    """{variant: {file_bytes, bbox, segm[, int8_report]}} for one trained model."""
    results = {}
    with tempfile.TemporaryDirectory() as work_dir:
        variants = export_variants(model_path, work_dir, calibration_data, calibration_images)
        for variant, (path, threads) in variants.items():
            metrics = commands.evaluate(path, data, num_threads=threads)
            results[variant] = {"file_bytes": size_bytes(path), **metrics}
            if variant == "tflite_int8":
                results[variant]["int8_report"] = read_int8_report(path).to_dict()
            print(f"{variant:>16}  bbox AP {metrics['bbox']['AP']:.3f} AP50 {metrics['bbox']['AP50']:.3f}"
                  f"  segm AP {metrics['segm']['AP']:.3f} AP50 {metrics['segm']['AP50']:.3f}", flush=True)
    return results


def int8_drops(results):
    """{iou type: {metric: float32 TFLite minus int8}} of one run."""
    return {iou_type: {metric: results["tflite_none"][iou_type][metric]
                       - results["tflite_int8"][iou_type][metric] for metric in METRICS}
            for iou_type in ("bbox", "segm")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs=3, action="append", required=True,
                        metavar=("MODEL.keras", "VAL.json", "CALIBRATION.json"),
                        help="a trained model, its evaluation set and its int8 calibration set")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                        metavar="N", help="default: %(default)s")
    parser.add_argument("--out", default="bench/results/export_accuracy.json")
    args = parser.parse_args()
    runs = []
    for model_path, data, calibration_data in args.run:
        print(f"{model_path} on {data}", flush=True)
        results = evaluate_run(model_path, data, calibration_data, args.calibration_images)
        runs.append({"model": model_path, "data": data, "calibration_data": calibration_data,
                     "results": results, "int8_drop": int8_drops(results)})
    worst = {iou_type: {metric: max(run["int8_drop"][iou_type][metric] for run in runs)
                        for metric in METRICS} for iou_type in ("bbox", "segm")}
    report = {"machine": machine_info(tensorflow=tf.__version__, keras=keras.__version__),
              "calibration_images": args.calibration_images,
              "int8_check_images": INT8_CHECK_IMAGES, "tflite_threads": TFLITE_THREADS,
              "runs": runs, "worst_int8_drop": worst}
    write_report(report, args.out)
    print(f"largest int8 drop from float32 TFLite: {worst}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

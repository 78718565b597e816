"""COCO AP of a trained model and of every export variant, through the same `evaluate` path.

  .venv/bin/python bench/eval_export_accuracy.py --model outputs/demo/run/model.keras \
      --data outputs/demo/data/val/annotations.json \
      [--calibration-data outputs/demo/data/train/annotations.json] [--out PATH]

Exports the model as a SavedModel and as TFLite with each quantization (as `keras-maskrcnn
export` does), evaluates the `.keras` file and each export with `commands.evaluate` (TFLite on
TFLITE_THREADS LiteRT threads), and writes JSON (default bench/results/export_accuracy.json):
per variant its file size and the bbox and segm metrics. int8 calibrates on the first
--calibration-images images of --calibration-data, which defaults to --data itself.
"""

import argparse
import json
import os
import tempfile

from bench_export import size_bytes
from keras_maskrcnn import commands
from keras_maskrcnn.export.tflite import QUANTIZATIONS

TFLITE_THREADS = 2


def export_variants(model_path, work_dir, calibration_data, calibration_images):
    """{variant name: (exported path, LiteRT threads or None)}, the `.keras` file included."""
    variants = {"keras": (model_path, None)}
    saved_model_dir = os.path.join(work_dir, "saved_model")
    variants["saved_model"] = (commands.export(model_path, saved_model_dir, "saved_model"), None)
    for quantize in QUANTIZATIONS:
        path = os.path.join(work_dir, f"model_{quantize}.tflite")
        int8 = quantize == "int8"
        commands.export(model_path, path, "tflite", quantize,
                   calibration_data=calibration_data if int8 else None,
                   calibration_images=calibration_images)
        variants[f"tflite_{quantize}"] = (path, TFLITE_THREADS)
    return variants


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, metavar="MODEL.keras")
    parser.add_argument("--data", required=True, metavar="ANN.json", help="evaluation set")
    parser.add_argument("--calibration-data", metavar="ANN.json", help="default: --data")
    parser.add_argument("--calibration-images", type=int, default=commands.DEFAULT_CALIBRATION_IMAGES,
                        metavar="N", help="default: %(default)s")
    parser.add_argument("--out", default="bench/results/export_accuracy.json")
    args = parser.parse_args()
    calibration_data = args.calibration_data or args.data
    results = {}
    with tempfile.TemporaryDirectory() as work_dir:
        variants = export_variants(args.model, work_dir, calibration_data, args.calibration_images)
        for variant, (path, threads) in variants.items():
            metrics = commands.evaluate(path, args.data, num_threads=threads)
            results[variant] = {"file_bytes": size_bytes(path), **metrics}
            print(f"{variant:>16}  bbox AP {metrics['bbox']['AP']:.3f} AP50 {metrics['bbox']['AP50']:.3f}"
                  f"  segm AP {metrics['segm']['AP']:.3f} AP50 {metrics['segm']['AP50']:.3f}", flush=True)
    report = {"model": args.model, "data": args.data, "calibration_data": calibration_data,
              "calibration_images": args.calibration_images, "tflite_threads": TFLITE_THREADS,
              "results": results}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

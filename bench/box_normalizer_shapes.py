"""`tiny` on the shapes set with each box-loss normaliser (`train --box-normalizer`), through
the command line, on one or more independently generated sets; writes AP and wall times to JSON
(default bench/results/box_normalizer_shapes.json).

Each set is `make-shapes` with its own seed (1000 training / 100 validation images at 128 px,
as `make demo`), trained with tiny's default schedule and `--seed` equal to the set's, and
evaluated with `evaluate` (pycocotools).

  .venv/bin/python bench/box_normalizer_shapes.py [--seeds 0 1] [--normalizers sampled positives]
"""

import argparse
import json
import os
import subprocess
import sys
import time

from benchutil import machine_info, write_report

from keras_maskrcnn.config import BOX_NORMALIZERS  # TensorFlow-free


def keras_maskrcnn(*argv):
    """Run `keras-maskrcnn ARGV...` in a new process → its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "keras_maskrcnn", *map(str, argv)], check=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--normalizers", nargs="+", choices=BOX_NORMALIZERS,
                        default=list(BOX_NORMALIZERS))
    parser.add_argument("--work", default=os.path.join("outputs", "box_normalizer_shapes"))
    parser.add_argument("--out", default=os.path.join("bench", "results",
                                                      "box_normalizer_shapes.json"))
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        data = os.path.join(args.work, f"shapes-{seed}")
        keras_maskrcnn("make-shapes", data, "--seed", seed)
        val = os.path.join(data, "val", "annotations.json")
        for normalizer in args.normalizers:
            run_dir = os.path.join(args.work, f"tiny-{normalizer}-{seed}")
            train_seconds = keras_maskrcnn(
                "train", "--train", os.path.join(data, "train", "annotations.json"), "--preset",
                "tiny", "--box-normalizer", normalizer, "--seed", seed, "--out", run_dir)
            metrics_file = os.path.join(run_dir, "metrics.json")
            keras_maskrcnn("evaluate", "--model", os.path.join(run_dir, "model.keras"),
                           "--data", val, "--out", metrics_file)
            with open(metrics_file) as f:
                metrics = json.load(f)
            runs.append({"data_seed": seed, "box_normalizer": normalizer,
                         "train_seconds": round(train_seconds, 1), "metrics": metrics})
            write_report({"machine": machine_info(), "runs": runs}, args.out)


if __name__ == "__main__":
    main()

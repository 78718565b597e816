"""What `--val` costs per epoch: `tiny` trained on one shapes set with and without `--val`,
each epoch's wall time side by side, as JSON.

Each run is `keras-maskrcnn train --preset tiny` in a process of its own, as a user types it;
the times are the history's (`callbacks.EpochTimer`): `epoch_seconds` (training, validation
and what `fit` does between them), `train_seconds` and `val_seconds`. Checks, after the first
epoch (which also traces the steps):
  - with --val, the slowest epoch is within 1.25× the median;
  - with --val, no epoch pays more than its validation steps and 5 % of its training steps:
    "lost_fraction" = (epoch − train − val seconds) / train seconds ≤ 0.05.
Beside them, "extra_fraction" compares each --val epoch less its validation with the median
epoch of the run without: it carries the run-to-run noise of a shared machine as well.

  flock /tmp/heavy.lock .venv/bin/python bench/bench_validation_cost.py \\
      --out bench/results/validation_cost.json
"""

import argparse
import json
import os
import shlex
import shutil
import sys

import numpy as np

from benchutil import machine_info, run_cli, write_report

SLOWEST_OVER_MEDIAN = 1.25
LOST_FRACTION = 0.05


def train(data, run_dir, epochs, steps_per_epoch, val):
    """One `train` run → its history (dict of per-epoch lists)."""
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, never a resumed one
    options = ["--val", os.path.join(data, "val", "annotations.json")] if val else []
    if steps_per_epoch:
        options += ["--steps-per-epoch", steps_per_epoch]
    process_seconds = run_cli(["train", "--train", os.path.join(data, "train", "annotations.json"),
                               "--preset", "tiny", "--epochs", epochs, *options, "--out", run_dir])
    with open(os.path.join(run_dir, "history.json")) as f:
        history = json.load(f)
    history["process_seconds"] = process_seconds
    return history


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="default: the tiny preset's")
    parser.add_argument("--work", default=os.path.join("outputs", "validation_cost"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    data = os.path.join(args.work, "shapes")
    run_cli(["make-shapes", data, "--train", args.train_images, "--val", args.val_images,
             "--size", args.size])
    runs = {name: train(data, os.path.join(args.work, name), args.epochs, args.steps_per_epoch,
                        val=name == "val") for name in ("no_val", "val")}

    keys = ("epoch_seconds", "train_seconds", "val_seconds")
    epochs = [{"epoch": epoch + 1,
               **{f"{name}_{key}": round(runs[name][key][epoch], 2)
                  for name in runs for key in keys}}
              for epoch in range(args.epochs)]
    later = slice(1, None)
    with_val = np.array(runs["val"]["epoch_seconds"][later])
    val_steps = np.array(runs["val"]["val_seconds"][later])
    without_val = float(np.median(runs["no_val"]["epoch_seconds"][later]))
    extra = (with_val - val_steps) / without_val - 1
    train_steps = np.array(runs["val"]["train_seconds"][later])
    lost = with_val - train_steps - val_steps
    for row, seconds, fraction in zip(epochs[later], lost, extra):
        row["lost_seconds"] = round(float(seconds), 2)
        row["lost_fraction"] = round(float(seconds / row["val_train_seconds"]), 3)
        row["extra_fraction"] = round(float(fraction), 3)
    lost_fraction = lost / train_steps
    slowest_over_median = float(with_val.max() / np.median(with_val))
    report = {
        "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
        "machine": machine_info(),
        "train_images": args.train_images, "val_images": args.val_images, "size": args.size,
        "epochs_table": epochs,
        "process_seconds": {name: round(run["process_seconds"], 1) for name, run in runs.items()},
        "val_run_slowest_over_median": round(slowest_over_median, 3),
        "max_lost_fraction": round(float(lost_fraction.max()), 3),
        "max_extra_fraction": round(float(extra.max()), 3),
        "passes": bool(slowest_over_median <= SLOWEST_OVER_MEDIAN
                       and lost_fraction.max() <= LOST_FRACTION),
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()

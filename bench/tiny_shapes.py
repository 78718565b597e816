"""`tiny` on shapes sets with named variants of the `train` options, side by side: each run's
training time, images/s, AP per epoch (with --eval-every) and final COCO AP, as JSON.

Each set is `make-shapes` with its own seed (by default as `make demo` makes it: 2000 training /
200 validation images at 128 px). Each variant runs `train --preset tiny --seed SET_SEED
OPTIONS...` then `evaluate` (pycocotools), each in a process of its own, as a user would.
Runs of other (set, variant) pairs already in the output file are kept, so sets and variants
can be added one command at a time; compare times only between runs of one command. --hard
makes the sets with `make-shapes --hard`; --val trains with `--val` (validation losses each
epoch), the default command a user types.

  .venv/bin/python bench/tiny_shapes.py --variant sampled="--box-normalizer sampled" \\
      --variant positives="--box-normalizer positives" --seeds 0 1 \\
      --out bench/results/box_normalizer_shapes.json
  .venv/bin/python bench/tiny_shapes.py --variant float32= \\
      --variant bfloat16="--precision bfloat16" --out bench/results/precision_shapes.json
  flock /tmp/heavy.lock .venv/bin/python bench/tiny_shapes.py --variant default= --hard --val \
      --seeds 101 --out bench/results/tiny_hard_shapes.json
"""

import argparse
import json
import os
import shlex
import shutil
import sys

from benchutil import machine_info, run_cli, write_report

from keras_maskrcnn.commands import DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES  # TensorFlow-free


def variant(text):
    """"NAME=OPTIONS" → (name, [option, ...])."""
    name, separator, options = text.partition("=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=OPTIONS, got {text!r}")
    return name, shlex.split(options)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def train_and_evaluate(data, run_dir, seed, options, eval_every, with_val=False):
    """One variant on one set → the run's record (times, AP curve, final metrics)."""
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, never a resumed one
    val = os.path.join(data, "val", "annotations.json")
    curve_options = (["--val", val] if eval_every or with_val else []) + (
        ["--eval-every", eval_every] if eval_every else [])
    process_seconds = run_cli([
        "train", "--train", os.path.join(data, "train", "annotations.json"), "--preset", "tiny",
        "--seed", seed, *curve_options, *options, "--out", run_dir])
    metrics_file = os.path.join(run_dir, "metrics.json")
    run_cli(["evaluate", "--model", os.path.join(run_dir, "model.keras"), "--data", val,
             "--out", metrics_file])
    config = read_json(os.path.join(run_dir, "train_config.json"))
    history = read_json(os.path.join(run_dir, "history.json"))
    epoch_seconds = history["train_seconds"]
    epoch_images = config["steps_per_epoch"] * config["batch_size"]
    record = {"train_process_seconds": round(process_seconds, 1),
              "train_step_seconds": round(sum(epoch_seconds), 1),
              "images_per_second": round(epoch_images * len(epoch_seconds) / sum(epoch_seconds), 2),
              # After the first epoch, which also traces (and with XLA compiles) the step.
              "later_images_per_second": round(
                  epoch_images * (len(epoch_seconds) - 1) / sum(epoch_seconds[1:]), 2)
              if len(epoch_seconds) > 1 else None,
              "epoch_train_seconds": [round(seconds, 1) for seconds in epoch_seconds],
              "final_loss": history["loss"][-1],
              "metrics": read_json(metrics_file)}
    if eval_every:
        record["epoch_AP"] = {key: history[key] for key in
                              ("val_bbox_AP", "val_bbox_AP50", "val_segm_AP", "val_segm_AP50")}
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", type=variant, action="append", required=True,
                        metavar="NAME=OPTIONS", help="train options of one variant (repeat)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one shapes set per seed; also the training seed")
    parser.add_argument("--train-images", type=int, default=DEMO_TRAIN_IMAGES)
    parser.add_argument("--val-images", type=int, default=DEMO_VAL_IMAGES)
    parser.add_argument("--eval-every", type=int, default=0,
                        help="COCO AP on the validation set every N epochs (the AP curve)")
    parser.add_argument("--hard", action="store_true", help="make the sets with make-shapes --hard")
    parser.add_argument("--val", action="store_true",
                        help="train with --val: validation losses after each epoch")
    parser.add_argument("--work", default=os.path.join("outputs", "tiny_shapes"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    variants = dict(args.variant)
    report = read_json(args.out) if os.path.exists(args.out) else {"runs": []}
    report["machine"] = machine_info()
    report.setdefault("commands", []).append(" ".join(map(shlex.quote, sys.argv)))
    for seed in args.seeds:
        kind = "hard-" if args.hard else ""
        data = os.path.join(args.work, f"shapes-{kind}{seed}-{args.train_images}")
        run_cli(["make-shapes", data, "--seed", seed, "--train", args.train_images,
                 "--val", args.val_images, *(["--hard"] if args.hard else [])])
        for name, options in variants.items():
            run_dir = os.path.join(args.work, f"{name}-{kind}{seed}-{args.train_images}")
            record = {"data_seed": seed, "hard": args.hard, "variant": name, "options": options,
                      "train_with_val": args.val or bool(args.eval_every),
                      "train_images": args.train_images, "val_images": args.val_images,
                      **train_and_evaluate(data, run_dir, seed, options, args.eval_every,
                                           args.val)}
            key = (seed, args.hard, name)
            report["runs"] = [run for run in report["runs"] if
                              (run["data_seed"], run.get("hard", False), run["variant"]) != key
                              ] + [record]
            write_report(report, args.out)


if __name__ == "__main__":
    main()

"""`make demo` on a fresh clone, as a new user runs it: wall time (installation included),
training time and images/s, and the COCO AP it prints; writes JSON (default
bench/results/make_demo.json).

  flock /tmp/heavy.lock .venv/bin/python bench/bench_make_demo.py [--keep DIR]

The clone is of this checkout's HEAD (commit recorded); its `make demo` creates its own
virtual environment (pip's cache makes that about a minute) and must run alone on the CPU to
give a training speed. `--keep DIR` clones into DIR and leaves it, so that its trained model
(DIR/outputs/demo/run/model.keras) can be served or exported afterwards.
"""

import argparse
import json
import os
import subprocess
import tempfile
import time

from benchutil import machine_info, write_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_OUT = os.path.join("outputs", "demo")  # the Makefile's --out
RUN_SECONDS = 3600


def run_demo(clone):
    """Clone this checkout's HEAD into `clone`, run `make demo` there → (wall seconds, its
    output)."""
    subprocess.run(["git", "clone", "--quiet", REPO, clone], check=True)
    start = time.perf_counter()
    done = subprocess.run(["make", "demo"], cwd=clone, capture_output=True, text=True,
                          timeout=RUN_SECONDS)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"make demo failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    return wall, done.stdout


def demo_figures(clone):
    """Training seconds, images/s and COCO AP from the demo's run folder."""
    out = os.path.join(clone, DEMO_OUT)
    with open(os.path.join(out, "run", "history.json")) as f:
        history = json.load(f)
    with open(os.path.join(out, "run", "train_config.json")) as f:
        config = json.load(f)
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    train_seconds = sum(history["train_seconds"])
    images = config["epochs"] * config["steps_per_epoch"] * config["batch_size"]
    return {"epochs": config["epochs"], "steps_per_epoch": config["steps_per_epoch"],
            "batch_size": config["batch_size"], "train_seconds": round(train_seconds, 1),
            "train_images_per_second": round(images / train_seconds, 1),
            "metrics": {task: {name: round(metrics[task][name], 3) for name in ("AP", "AP50", "AP75")}
                        for task in ("bbox", "segm")}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", metavar="DIR", help="clone into DIR and keep it")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "make_demo.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        clone = args.keep or os.path.join(scratch, "demo")
        wall, output = run_demo(clone)
        figures = demo_figures(clone)
    write_report({
        "description": "make demo on a fresh clone: tiny trained on the synthetic shapes set "
                       "(2000 training, 200 validation images, 128 px), evaluated on the 200 "
                       "validation images; the virtual environment installed from pip's cache",
        "machine": machine_info(),
        "alone_on_the_cpu": True,
        "wall_seconds_with_installation": round(wall, 1),
        **figures,
        "printed": output.strip().splitlines()[-12:],
    }, args.out)


if __name__ == "__main__":
    main()

"""Host mask pasting: `postprocess.paste_masks` (`ops.paste` compiled) against the numpy code it
replaced (`tests/reference_paste.py`), for 100 masks into a 480 × 640 image; writes JSON
(default bench/results/paste.json).

Box sets: `mixed` (sides 20 to 300 px anywhere, some across the border), `small` (sides 8 to
64 px) and `one_large` (99 small boxes and one covering the image: `ops.paste` interpolates
every detection in a window as large as the largest box). The two are timed in turn, so that
load from other processes falls on both; min and median of `--repeats` calls after a warm-up.

  PYTHONPATH=. .venv/bin/python bench/bench_paste.py [--repeats N]
"""

import argparse
import os
import sys

import numpy as np
import tensorflow as tf

from benchutil import machine_info, time_in_turn, write_report
from keras_maskrcnn import postprocess
from keras_maskrcnn.config import PASTE_METHODS

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import reference_paste  # noqa: E402  (the numpy paste, kept as the tests' reference)

NUM_MASKS, IMAGE_HW, MASK_SIZE = 100, (480, 640), 28


def make_boxes(rng, kind):
    """float32 [NUM_MASKS, 4] boxes of one of the box sets (see the module docstring)."""
    low, high = (20, 300) if kind == "mixed" else (8, 64)
    sizes = rng.uniform(low, high, (NUM_MASKS, 2))
    corners = rng.uniform(-20, np.subtract(IMAGE_HW, 20), (NUM_MASKS, 2))
    boxes = np.concatenate([corners, corners + sizes], axis=1)
    if kind == "one_large":
        boxes[0] = [0, 0, *IMAGE_HW]
    return boxes.astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="bench/results/paste.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(NUM_MASKS, MASK_SIZE, MASK_SIZE)).astype(np.float32)
    results = {}
    for kind in ("mixed", "small", "one_large"):
        boxes = make_boxes(rng, kind)
        for method in PASTE_METHODS:
            ours = postprocess.paste_masks(masks, boxes, IMAGE_HW, method=method)
            assert np.array_equal(ours, reference_paste.paste_masks(masks, boxes, IMAGE_HW, method=method))
            (tf_min, tf_median), (np_min, np_median) = time_in_turn({
                "tf": lambda: postprocess.paste_masks(masks, boxes, IMAGE_HW, method=method),
                "numpy": lambda: reference_paste.paste_masks(masks, boxes, IMAGE_HW, method=method),
            }, args.repeats).values()
            results[f"{kind}/{method}"] = {"ops_paste_ms": {"min": tf_min, "median": tf_median},
                                           "numpy_ms": {"min": np_min, "median": np_median}}
    write_report({"machine": machine_info(tensorflow=tf.__version__), "num_masks": NUM_MASKS,
                  "image_hw": IMAGE_HW, "repeats": args.repeats, "results": results}, args.out)


if __name__ == "__main__":
    main()

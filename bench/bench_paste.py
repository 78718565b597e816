"""Host mask pasting: `postprocess.paste_masks` (`ops.paste` on numpy arrays) against the same
grouping with `ops.paste` as TensorFlow ops in one concrete function a group (the host paste
before numpy), timed in turn; writes JSON (default bench/results/paste.json).

Cases: 100 masks into a 480 × 640 image, box sets `mixed` (sides 20 to 300 px anywhere, some
across the border), `small` (sides 8 to 64 px) and `one_large` (99 small boxes and one
covering the image: a group interpolates every detection in a window as large as its largest
box); and `serving`, 3 masks into a 128 × 128 image (what `:detect` pastes for the make demo
model), timed both back to back and `--pause-ms` after a model-sized matrix product (the
request path: the paste follows a model call). Min and median of `--repeats` calls after a
warm-up; both give the reference's masks (`tests/reference_paste.py`).

  PYTHONPATH=. .venv/bin/python bench/bench_paste.py [--repeats N]
"""

import argparse
import functools
import os
import sys
import time

import numpy as np
import tensorflow as tf

from benchutil import machine_info, time_in_turn, write_report
from keras_maskrcnn import postprocess
from keras_maskrcnn.config import PASTE_METHODS
from keras_maskrcnn.ops import paste

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import reference_paste  # noqa: E402  (the numpy paste, kept as the tests' reference)

NUM_MASKS, IMAGE_HW, MASK_SIZE = 100, (480, 640), 28
SERVING_MASKS, SERVING_HW = 3, (128, 128)


def make_boxes(rng, kind):
    """float32 boxes of one of the box sets (see the module docstring)."""
    if kind == "serving":
        corners = rng.uniform(0, 80, (SERVING_MASKS, 2))
        return np.concatenate([corners, corners + rng.uniform(20, 48, (SERVING_MASKS, 2))],
                              axis=1).astype(np.float32)
    low, high = (20, 300) if kind == "mixed" else (8, 64)
    sizes = rng.uniform(low, high, (NUM_MASKS, 2))
    corners = rng.uniform(-20, np.subtract(IMAGE_HW, 20), (NUM_MASKS, 2))
    boxes = np.concatenate([corners, corners + sizes], axis=1)
    if kind == "one_large":
        boxes[0] = [0, 0, *IMAGE_HW]
    return boxes.astype(np.float32)


@functools.cache
def _tensorflow_windows(method):
    """`ops.paste.pasted_windows` as TensorFlow ops, thresholded, in one concrete function."""
    def windows(masks, boxes, height, width):
        probabilities, extents = paste.pasted_windows(masks, boxes, height, width, method)
        return probabilities >= paste.MASK_THRESHOLD, extents
    return tf.function(windows).get_concrete_function(
        tf.TensorSpec([None, MASK_SIZE, MASK_SIZE], tf.float32), tf.TensorSpec([None, 4], tf.float32),
        tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32))


def paste_with_tensorflow(masks, boxes, image_hw, method):
    """`postprocess.paste_masks` with TensorFlow ops in place of numpy: bool [K, H, W]."""
    height, width = image_hw
    pasted = np.zeros((len(boxes), height, width), bool)
    for group in postprocess._paste_groups(boxes, height, width):  # noqa: SLF001 - same groups
        windows, extents = (value.numpy() for value in _tensorflow_windows(method)(
            masks[group], boxes[group], height, width))
        for k, window, (top, bottom, left, right) in zip(group, windows, extents):
            pasted[k, top:bottom, left:right] = window[:bottom - top, :right - left]
    return pasted


def after_model_work(function, pause_s, model_work):
    """`function` timed right after `model_work` that follows a `pause_s` sleep → ms."""
    time.sleep(pause_s)
    model_work()
    start = time.perf_counter()
    function()
    return 1000 * (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--pause-ms", type=float, default=250.0)
    parser.add_argument("--out", default="bench/results/paste.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(NUM_MASKS, MASK_SIZE, MASK_SIZE)).astype(np.float32)
    # About a tiny model's worth of work (a few ms on 2 cores), through TensorFlow's threads.
    features = tf.random.stateless_uniform([1024, 1024], seed=(1, 2))
    results = {}
    for kind in ("mixed", "small", "one_large", "serving"):
        boxes = make_boxes(rng, kind)
        image_hw = SERVING_HW if kind == "serving" else IMAGE_HW
        chosen = masks[:len(boxes)]
        for method in PASTE_METHODS:
            contenders = {
                "numpy": lambda: postprocess.paste_masks(chosen, boxes, image_hw, method=method),
                "tensorflow": lambda: paste_with_tensorflow(chosen, boxes, image_hw, method)}
            want = reference_paste.paste_masks(chosen, boxes, image_hw, method=method)
            for name, function in contenders.items():
                assert np.array_equal(function(), want), (kind, method, name)
            timed = time_in_turn(contenders, args.repeats)
            result = {f"{name}_ms": {"min": low, "median": median}
                      for name, (low, median) in timed.items()}
            if kind == "serving":
                for name, function in contenders.items():
                    result[f"{name}_after_model_ms"] = round(float(np.median([after_model_work(
                        function, args.pause_ms / 1000, lambda: (features @ features).numpy())
                        for _ in range(args.repeats)])), 2)
            results[f"{kind}/{method}"] = result
            print(kind, method, result, flush=True)
    write_report({"machine": machine_info(tensorflow=tf.__version__), "num_masks": NUM_MASKS,
                  "image_hw": IMAGE_HW, "serving_masks": SERVING_MASKS, "serving_hw": SERVING_HW,
                  "repeats": args.repeats, "pause_ms": args.pause_ms, "results": results},
                 args.out)


if __name__ == "__main__":
    main()

"""The model alone, what bench_serve.py's overhead is taken against: the public predictor API
(`inference.load_predictor(...).predict`) on the images `:detect` decodes
(`data.images.decode_image`, as the server does), in this process (`model_alone`) or in a
process of its own that is called a burst at a time (`ModelAlone`, so that its calls can be
interleaved with a server's requests and run TensorFlow's threads as the server does).
"""

import json
import os
import select
import subprocess
import sys
import time

import numpy as np

from serveload import die_with_parent, read_images

REPEATS = 50  # calls a median of `model_alone` is taken over
TIMEOUT_S = 300.0  # the most a ModelAlone child may take to start or to answer


def load(model_dir, images):
    """The predictor of `model_dir` and `images` ((bytes, content type) pairs) decoded as the
    server decodes them: uint8 [h, w, 3] arrays."""
    from keras_maskrcnn.data.images import decode_image
    from keras_maskrcnn.inference import load_predictor

    return load_predictor(model_dir), [decode_image(data) for data, _ in images]


def model_alone(model_dir, images, rate, repeats=REPEATS, score_threshold=None):
    """`timed` on the model of `model_dir`, loaded here."""
    return timed(*load(model_dir, images), rate, repeats, score_threshold)


def timed(predictor, arrays, rate, repeats=REPEATS, score_threshold=None):
    """The model alone on `arrays`, in ms (medians of `repeats`):

    - `predict_ms`: `predictor.predict([image])`, one call every 1 / `rate` s (as the low-rate
      requests come, so both pay for waking TensorFlow's idle threads), and
      `predict_back_to_back_ms` with no pause;
    - `paste_kept_ms`: `add_full_masks` on the detections :detect keeps (score >=
      `score_threshold`, default :detect's DEFAULT_SCORE_THRESHOLD), the pasting `predict`
      leaves out and :detect does for rle;
    - `rle_encode_ms`: encoding those pasted masks as COCO RLE.
    """
    from keras_maskrcnn.serving.detect import DEFAULT_SCORE_THRESHOLD
    from keras_maskrcnn.serving.masks import encode_rle

    if score_threshold is None:
        score_threshold = DEFAULT_SCORE_THRESHOLD

    def median_ms(function, pause_s=0.0):
        times = []
        for index in range(repeats):
            time.sleep(pause_s)
            start = time.perf_counter()
            function(index % len(arrays))
            times.append(1000 * (time.perf_counter() - start))
        return round(float(np.median(times)), 2)

    kept = []  # predicting each image once here also warms the predictor up
    for array in arrays:
        found = predictor.predict([array])[0]
        keep = found["scores"] >= score_threshold
        kept.append({name: value[keep] for name, value in found.items()})
    pasted = [predictor.add_full_masks(dict(found), array.shape[:2])["full_masks"]
              for found, array in zip(kept, arrays)]
    return {
        "predict_ms": median_ms(lambda i: predictor.predict([arrays[i]]), 1 / rate),
        "predict_back_to_back_ms": median_ms(lambda i: predictor.predict([arrays[i]])),
        "paste_kept_ms": median_ms(lambda i: predictor.add_full_masks(dict(kept[i]),
                                                                       arrays[i].shape[:2])),
        "rle_encode_ms": median_ms(lambda i: [encode_rle(mask) for mask in pasted[i]]),
        "mean_kept_detections": round(float(np.mean([len(found["scores"]) for found in kept])), 2),
    }


class ModelAlone:
    """The model alone (`child`) in a process of its own whose environment adds `environment`
    (TensorFlow's threads are fixed once per process), from `with` to its end; its stderr goes
    to `log_path`."""

    def __init__(self, model_dir, image_folder, image_count, environment, log_path):
        script = "import sys; from model_alone import child; child(*sys.argv[1:])"
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, model_dir, image_folder, str(image_count)],
            cwd=os.path.dirname(os.path.abspath(__file__)), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.log, text=True, env={**os.environ, **environment},
            preexec_fn=die_with_parent)

    def __enter__(self):
        self._answer()  # "ready", once the model is loaded and warmed up
        return self

    def __exit__(self, *exc_info):
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def _ask(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._answer()

    def _answer(self):
        """The child's next line, parsed as JSON; raises when it ends or takes too long."""
        ready, _, _ = select.select([self.process.stdout], [], [], TIMEOUT_S)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.process.kill()
            raise RuntimeError(f"the model alone stopped or took over {TIMEOUT_S} s; "
                               f"see {self.log.name}")
        return json.loads(line)

    def burst(self, rate, count):
        """`count` predict calls due every 1 / `rate` s (the first 1 / `rate` s from now) →
        their times (ms)."""
        return self._ask(f"burst {rate} {count}")

    def summary(self, rate):
        """`timed` on the child's model and images, predict called at `rate`."""
        return self._ask(f"summary {rate}")


def child(model_dir, image_folder, image_count):
    """The process of a ModelAlone: load the predictor, warm it up, print "ready" (as JSON),
    then answer each line of stdin: "burst RATE COUNT" with the times (ms) of COUNT calls of
    predict due every 1 / RATE s, "summary RATE" with `timed`; one JSON line each."""
    predictor, arrays = load(model_dir, read_images(image_folder, int(image_count)))
    for array in arrays:
        predictor.predict([array])
    print(json.dumps("ready"), flush=True)
    calls = 0
    for line in sys.stdin:
        command, *arguments = line.split()
        if command == "burst":
            rate, count = float(arguments[0]), int(arguments[1])
            start, times = time.perf_counter(), []
            for index in range(1, count + 1):
                time.sleep(max(start + index / rate - time.perf_counter(), 0.0))
                began = time.perf_counter()
                predictor.predict([arrays[calls % len(arrays)]])
                times.append(1000 * (time.perf_counter() - began))
                calls += 1
            print(json.dumps(times), flush=True)
        elif command == "summary":
            print(json.dumps(timed(predictor, arrays, float(arguments[0]))), flush=True)
        else:
            raise SystemExit(f"unknown command {line!r}")

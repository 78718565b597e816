"""Training throughput as the run scales: precision × XLA × replicas, for `tiny` and `r50_fpn`.

Each cell runs in a subprocess of its own (logical CPU devices, like a device count, are fixed
before TensorFlow initialises) and times `model.fit` on one synthetic global batch, repeated,
under the strategy, dtype policy and `jit_compile` that `train` would use, after a warm-up fit
of the same length. Images/s count global-batch images. Writes JSON (default
bench/results/scale.json). Not part of `make test`; compare numbers from one run only.

On this machine (replicas are logical CPU devices sharing its cores):
  .venv/bin/python bench/bench_scale.py
On a GPU machine, 1..N GPUs (N visible):
  .venv/bin/python bench/bench_scale.py --device gpu --replicas 1 2 4 8 \
      --precisions float32 bfloat16 float16 --out bench/results/scale_gpu.json
"""

import argparse
import json
import os
import subprocess
import sys
import time

from benchutil import machine_info, write_report

# preset → (canvas side, batch per replica, timed steps by default); r50_fpn trains from
# scratch with learning batch norms, as an r50_fpn without pretrained weights must
# (`train --backbone-norm bn`). A fit call has a fixed cost: tiny's fast steps need many.
CASES = {"tiny": (128, 4, 20), "r50_fpn": (512, 2, 3)}
CELL_TIMEOUT_SECONDS = 1800


def run_cell(preset_name, device, replicas, precision, jit_compile, steps):
    """Images per second of one cell, in this process (called by the child)."""
    import keras
    import tensorflow as tf

    from bench_core import synthetic_batch
    from keras_maskrcnn.config import preset
    from keras_maskrcnn.distribute import make_strategy
    from keras_maskrcnn.model import MaskRCNN
    from keras_maskrcnn.optimization import make_optimizer
    from keras_maskrcnn.precision import dtype_policy, with_loss_scaling

    side, batch_size, _ = CASES[preset_name]
    batch_size *= replicas
    if device == "cpu":
        strategy = (make_strategy("none") if replicas == 1
                    else make_strategy("mirrored", cpu_replicas=replicas))
    else:
        gpus = [f"/gpu:{index}" for index in range(replicas)]
        strategy = tf.distribute.MirroredStrategy(gpus)
    config = preset(preset_name, input={"image_size": (side, side)}, backbone={"norm": "bn"})
    keras.utils.set_random_seed(0)
    with strategy.scope():
        with dtype_policy(precision):
            model = MaskRCNN(config)
        model.compile(optimizer=with_loss_scaling(make_optimizer("sgd", 1e-3), precision),
                      jit_compile=jit_compile)
    dataset = tf.data.Dataset.from_tensors(synthetic_batch(config, batch_size)).repeat()
    # The first fit of a given length runs slower throughout (bench_core): warm up with one.
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return {"images_per_second": batch_size * steps / (time.perf_counter() - start),
            "global_batch": batch_size}


def child_command(preset_name, device, replicas, precision, jit_compile, steps):
    return [sys.executable, os.path.abspath(__file__), "--cell", preset_name, device,
            str(replicas), precision, str(int(jit_compile)), str(steps)]


def measure(preset_name, device, replicas, precision, jit_compile, steps):
    """One cell in a fresh process: its result dict, or why it has none."""
    if jit_compile and replicas > 1:
        return {"skipped": "XLA with several replicas: Keras compiles every replica's device "
                           "into one XLA program, which XLA refuses (keras-team/keras#19005); "
                           "train refuses --jit-compile with --distribute mirrored"}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        done = subprocess.run(child_command(preset_name, device, replicas, precision,
                                            jit_compile, steps),
                              capture_output=True, text=True, env=env,
                              timeout=CELL_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return {"error": f"over {CELL_TIMEOUT_SECONDS} s"}
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1][-300:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"],
                        choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--xla", type=int, nargs="+", default=[0, 1], choices=(0, 1))
    parser.add_argument("--steps", type=int,
                        help="timed steps per cell (default: tiny 20, r50_fpn 3)")
    parser.add_argument("--out", default=os.path.join("bench", "results", "scale.json"))
    parser.add_argument("--cell", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        preset_name, device, replicas, precision, jit_compile, steps = args.cell
        print(json.dumps(run_cell(preset_name, device, int(replicas), precision,
                                  bool(int(jit_compile)), int(steps))))
        return
    import keras
    import tensorflow as tf
    results = []
    for preset_name in args.presets:
        side, batch, default_steps = CASES[preset_name]
        steps = args.steps or default_steps
        for precision in args.precisions:
            for jit_compile in map(bool, args.xla):
                for replicas in args.replicas:
                    cell = {"preset": preset_name, "image_side": side,
                            "batch_per_replica": batch, "precision": precision,
                            "xla": jit_compile, "replicas": replicas, "steps": steps,
                            **measure(preset_name, args.device, replicas, precision,
                                      jit_compile, steps)}
                    print(json.dumps(cell), flush=True)
                    results.append(cell)
    write_report({"machine": machine_info(tensorflow=tf.__version__, keras=keras.__version__),
                  "device": args.device,
                  "command": " ".join(["bench/bench_scale.py", *sys.argv[1:]]),
                  "results": results}, args.out)


if __name__ == "__main__":
    main()

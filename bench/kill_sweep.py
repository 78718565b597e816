"""Kill a short training run at each named moment and check that rerunning the command
finishes it with the weights and history of a run never interrupted; JSON report.

Each moment gets a fresh run folder: `train` (tiny, 64 px, 3 epochs of 2 steps, --val with 2
steps) is started with KILL_AT (tests/paused_cli.py) and SIGKILLs itself there; the same
command is then rerun without it. Recorded per moment: the epochs the backup held after the
kill, whether the rerun resumed or started afresh, its exit code, the largest weight difference
from the uninterrupted run and whether the history's losses match it.

  flock /tmp/heavy.lock .venv/bin/python bench/kill_sweep.py --out bench/results/kill_sweep.json
"""

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

from benchutil import machine_info, run_cli, write_report

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from paused_cli import DRIVER  # noqa: E402

EPOCHS = 3
# (KILL_AT, the moment in words), in the order they happen in a run.
MOMENTS = [
    ("write:train_config.json", "writing the run's config, at the start"),
    ("train_step#1", "after the first training step, nothing backed up"),
    ("train_step#3", "mid-epoch 2, after its first step"),
    ("val_step#3", "validating epoch 2, after its first validation step"),
    ("write:history.json#2", "writing epoch 2's history"),
    ("write:epoch-002.keras", "writing epoch 2's checkpoint"),
    ("write:epoch-002.weights.h5", "writing epoch 2's backup weights"),
    ("write:training_metadata.json#2", "epoch 2's backup weights in place, its metadata not"),
    ("written:training_metadata.json#2", "just after epoch 2 is backed up"),
    ("write:model.keras", "writing the final model"),
    ("removed:training_metadata.json", "removing the backup, the final model saved"),
    ("write:bad_data.json", "writing the bad-data report, the last file"),
]
TIMEOUT_SECONDS = 600


def command(driver, data, out):
    return [sys.executable, driver, "train", "--train",
            os.path.join(data, "train", "annotations.json"), "--val",
            os.path.join(data, "val", "annotations.json"), "--preset", "tiny", "--input-size",
            "64", "64", "--epochs", str(EPOCHS), "--steps-per-epoch", "2", "--batch-size", "2",
            "--seed", "3", "--out", out]


def train(driver, data, out, kill_at=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if kill_at:
        env["KILL_AT"] = kill_at
    start = time.perf_counter()
    done = subprocess.run(command(driver, data, out), capture_output=True, text=True, env=env,
                          timeout=TIMEOUT_SECONDS)
    return done, time.perf_counter() - start


def weights(path):
    import keras
    model = keras.saving.load_model(path, compile=False)
    return {w.path.split("/", 1)[-1]: np.asarray(w) for w in model.weights}


def read_history(out):
    with open(os.path.join(out, "history.json")) as f:
        return json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=os.path.join("outputs", "kill_sweep"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from keras_maskrcnn import training  # after argparse: TensorFlow is slow to import

    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    driver = os.path.join(args.work, "driver.py")
    with open(driver, "w") as f:
        f.write(DRIVER)
    data = os.path.join(args.work, "shapes")
    run_cli(["make-shapes", data, "--train", "8", "--val", "4", "--size", "64"])

    reference_dir = os.path.join(args.work, "uninterrupted")
    done, reference_seconds = train(driver, data, reference_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    reference, reference_history = (weights(os.path.join(reference_dir, "model.keras")),
                                    read_history(reference_dir))
    moments = []
    for kill_at, words in MOMENTS:
        out = os.path.join(args.work, kill_at.replace(":", "-").replace("#", "-"))
        killed, killed_seconds = train(driver, data, out, kill_at)
        backed_up = training.resumed_epoch(out)
        left = sorted(os.listdir(out)) if os.path.isdir(out) else []
        rerun, rerun_seconds = train(driver, data, out)
        record = {"kill_at": kill_at, "moment": words,
                  "killed": killed.returncode == -signal.SIGKILL,
                  "killed_seconds": round(killed_seconds, 1), "files_left": left,
                  "backup_epochs": backed_up,
                  "rerun": ("resumed after epoch " + str(backed_up)) if backed_up else "afresh",
                  "rerun_exit_code": rerun.returncode, "rerun_seconds": round(rerun_seconds, 1)}
        if rerun.returncode == 0:
            final = weights(os.path.join(out, "model.keras"))
            history = read_history(out)
            record["same_weight_names"] = sorted(final) == sorted(reference)
            record["max_weight_difference"] = float(max(
                np.abs(final[name] - reference[name]).max() for name in reference))
            record["history_losses_equal"] = all(
                np.allclose(history[key], reference_history[key], rtol=1e-6, atol=0)
                for key in reference_history if key.endswith("loss"))
            record["equal"] = (record["same_weight_names"] and record["history_losses_equal"]
                               and all(np.allclose(final[name], reference[name], rtol=1e-6,
                                                   atol=1e-7) for name in reference))
        else:
            record["rerun_stderr"] = rerun.stderr[-2000:]
            record["equal"] = False
        print(json.dumps(record), flush=True)
        moments.append(record)

    write_report({"command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
                  "machine": machine_info(),
                  "run": " ".join(command("DRIVER", "DATA", "OUT")[1:]),
                  "uninterrupted_seconds": round(reference_seconds, 1),
                  "moments": moments,
                  "all_killed": all(m["killed"] for m in moments),
                  "all_equal": all(m["equal"] for m in moments)}, args.out)


if __name__ == "__main__":
    main()

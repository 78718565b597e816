"""`keras-maskrcnn serve` under load: capacity, latency at fixed request rates, a 4x overload,
memory over thousands of requests, answer sizes, and the server's overhead over the model
alone; writes JSON (default bench/results/serve_tiny.json).

  flock /tmp/heavy.lock .venv/bin/python bench/bench_serve.py --model SAVED_MODEL --images DIR
  flock /tmp/heavy.lock .venv/bin/python bench/bench_serve.py --plan heavy \
      --model FLOAT32_SAVED_MODEL BFLOAT16_SAVED_MODEL --images DIR --score-threshold 0.05 \
      --out bench/results/serve_r50_fpn.json

The server runs in its own process on 127.0.0.1 on a free port, started and always stopped by
this script (it also dies with it; `serveload`): in the default plan once with its default
flags (micro-batching), once with `--max-batch-size 1` and once with two model workers of one
TensorFlow thread each (TWO_WORKERS_FLAGS); each meets the 4x overload. Every phase is
bounded in time.

Requests go open loop: on a fixed schedule of evenly spaced send times, whatever the answers
do, and each latency runs from the request's scheduled send time, so a stalled server (or a
stalled client) shows in the latency instead of lowering the rate. Capacity is measured first,
closed loop (CONCURRENCY clients, each sending its next request when its last is answered);
the open-loop rates are fractions of it. The client is one asyncio loop speaking HTTP/1.1 over
keep-alive connections; it shares the machine's CPUs with the server, so each phase reports
the client's CPU time beside the server's, and how late the client sent
(`client_send_late_ms`: up to PRECISE_SEND_RPS it polls its loop before each send, see
serveload).

Request kinds: `:detect` with the image file as the body and mask_format rle or box, and TF
Serving's `:predict` with the image as a b64 instance of `serving_default`. The server's
overhead is the p50 latency of a low-rate point minus the median time of the model alone
through the public predictor API (`inference.load_predictor(...).predict`, on the images
decoded as the server decodes them) called at the same rate, in a process of its own
(`model_alone.ModelAlone`, with the server's TensorFlow threads) and interleaved with the server's
requests: LOW_RATE_ROUNDS times, LOW_RATE requests to the server for a part of the point,
then as many calls of the model alone at that rate, so that both meet the machine in the same
state (on a shared VM the model's time at a low rate drifts by several ms from one minute to
the next). `predict` returns box-frame masks, while `:detect` with rle also pastes the kept
masks into the image and encodes them: the report times those two apart (`model_alone.timed`) and
gives the server's own overhead without them beside the overhead.

`--plan heavy` is for models of a second or more a request (a converted R50-FPN; its models
and images: bench/r50_serving_models.py), where the default plan would take hours. Each
`--model` in turn (one per precision; the report keys them by the precision line the server
printed) gets the default server only, `:detect` with rle and `--score-threshold`: a warm-up,
capacity with HEAVY_CONCURRENCY clients for HEAVY_CAPACITY_SECONDS, then open loop at 50 % and
80 % of it (HEAVY_REQUESTS each, so a point lasts HEAVY_REQUESTS / rate) and at 25 %
(HEAVY_LOW_REQUESTS), where the overhead is taken against the model alone called at that rate;
p50/p90/p95/p99/max and the mean detections kept per point, and bfloat16's speed-ups over
float32 when both ran.
"""

import argparse
import collections
import contextlib
import json
import os
import signal
import sys
import tempfile
import time

import numpy as np

from benchutil import machine_info, write_report
from model_alone import ModelAlone, model_alone
from serveload import ANSWER_FORMATS, Server, Session, closed_loop, open_loop, read_images

CONCURRENCY = 16  # closed-loop clients when measuring capacity
WARM_UP_REQUESTS = 500  # RSS is read after these, and again after at least MANY_REQUESTS
MANY_REQUESTS = 5000
LOW_RATE = 4.0  # requests/s at which the server's overhead is measured
LOW_RATE_ROUNDS = 4  # server, then model alone, in turn, in a low-rate point
OPEN_LOOP_FRACTIONS = {"rle": (0.5, 0.8, 1.0, 1.2), "box": (0.5, 0.8), "predict": (0.5, 0.8)}
BATCH_1_FRACTIONS = (0.5, 0.8)
OVERLOAD_FACTOR = 4.0
OVERLOAD_SECONDS = 10.0
RECOVERY_SECONDS = 6.0  # at RECOVERY_FRACTION of capacity, straight after the overload
RECOVERY_FRACTION = 0.25
RECOVERY_BIN_SECONDS = 0.5
BATCH_1_FLAGS = ["--max-batch-size", "1"]
# Two model calls at once, each with one TensorFlow thread; the model alone is then timed with
# one thread too (TWO_WORKERS_ENV, in a process of its own).
TWO_WORKERS_FLAGS = ["--model-workers", "2", "--intra-op-threads", "1"]
TWO_WORKERS_ENV = {"TF_NUM_INTRAOP_THREADS": "1"}
FILL_SECONDS = 120  # the most the closed loop up to MANY_REQUESTS may take
# --plan heavy, for models of a second or more a request:
HEAVY_CONCURRENCY = 3  # closed-loop clients: one in the model, the next already queued
HEAVY_WARM_UP_REQUESTS = 6
HEAVY_CAPACITY_SECONDS = 60.0
HEAVY_FRACTIONS = (0.5, 0.8)  # of capacity, open loop
HEAVY_REQUESTS = 60  # per open-loop point: it lasts HEAVY_REQUESTS / rate seconds
HEAVY_LOW_FRACTION = 0.25  # of capacity: the point the overhead is measured at
HEAVY_LOW_REQUESTS = 20
HEAVY_MODEL_ALONE_REPEATS = 16
HEAVY_QUANTILES = (50, 90, 95, 99)
HEAVY_KEPT_BODY_BYTES = 10_000_000  # every :detect answer, for its detections and timing_ms


def answer_sizes(session):
    """Mean answer bytes and detections per image for each request kind (score_threshold 0.5)."""
    async def run():
        sizes = {}
        for kind in (*ANSWER_FORMATS, "predict"):
            answers = [await session.client.send(raw) for raw in session.requests[kind]]
            assert all(status == 200 for status, _ in answers), (kind, answers[0])
            sizes[kind] = {"mean_answer_bytes": round(float(np.mean([len(b) for _, b in answers])))}
            if kind != "predict":
                sizes[kind]["mean_detections"] = float(np.mean(
                    [len(json.loads(body)["detections"]) for _, body in answers]))
        return sizes
    sizes = session.client.run(run())
    session.requests_sent += len(session.requests["rle"]) * (len(ANSWER_FORMATS) + 1)
    return sizes


def overload(session, capacity, baseline_p99_ms):
    """OVERLOAD_FACTOR x capacity for OVERLOAD_SECONDS, then RECOVERY_FRACTION of it, open loop:
    the codes during the overload, and the latency in bins after its end."""
    _, records = session.phase("rle", "overload, then recovery", open_loop,
                               [(OVERLOAD_FACTOR * capacity, OVERLOAD_SECONDS),
                                (RECOVERY_FRACTION * capacity, RECOVERY_SECONDS)])
    during = [r for r in records if r.due < OVERLOAD_SECONDS]
    after = [r for r in records if r.due >= OVERLOAD_SECONDS]
    bins = []
    for start in np.arange(0, RECOVERY_SECONDS, RECOVERY_BIN_SECONDS):
        chosen = [r for r in after
                  if start <= r.due - OVERLOAD_SECONDS < start + RECOVERY_BIN_SECONDS]
        latencies = [1000 * r.latency for r in chosen]
        bins.append({"from_s": float(start), "sent": len(chosen),
                     "codes": dict(collections.Counter(str(r.status) for r in chosen)),
                     "max_ms": round(max(latencies), 1) if latencies else None})
    late = [r for r in after if r.due - OVERLOAD_SECONDS >= 2.0]
    # Normal after 2 s: every request sent 2 s or more after the overload's end answered 200,
    # none slower than twice the p99 at half the capacity.
    normal = bool(late) and all(r.status == 200 and 1000 * r.latency <= 2 * baseline_p99_ms
                                for r in late)
    codes = collections.Counter(str(r.status) for r in during)
    return {"rate_rps": round(OVERLOAD_FACTOR * capacity, 1), "seconds": OVERLOAD_SECONDS,
            "sent": len(during), "status_counts": dict(codes),
            "only_200_and_503": set(codes) <= {"200", "503"},
            "p50_ms_of_200s": round(float(np.median([1000 * r.latency for r in during
                                                     if r.status == 200])), 1),
            "recovery_rate_rps": round(RECOVERY_FRACTION * capacity, 1),
            "after_end": bins, "normal_latency_rule": "all 200 and <= 2 x p99 at 50 % of capacity",
            "normal_within_2_s": normal}


def run_default(model_dir, images, seconds, log_dir, points, alone):
    """Everything on the server with its default flags (micro-batching; `alone` its model
    alone, a ModelAlone) → its findings."""
    with (Server(model_dir, [], os.path.join(log_dir, "serve_default.log")) as server,
          contextlib.closing(Session(server, "default", images, points)) as session):
        rss = [{"requests": 0, "rss_mb": server.rss_mb()}]
        session.phase("rle", "warm-up (closed loop)", closed_loop, CONCURRENCY, count=WARM_UP_REQUESTS)
        rss.append({"requests": session.requests_sent, "rss_mb": server.rss_mb()})
        sizes = answer_sizes(session)
        for kind in ("rle", "box", "predict"):
            low_rate_point(session, kind, alone, 2 * seconds)
        capacity = {kind: session.capacity(kind, seconds, CONCURRENCY) for kind in OPEN_LOOP_FRACTIONS}
        for kind, fractions in OPEN_LOOP_FRACTIONS.items():
            for fraction in fractions:
                session.at_rate(kind, f"{fraction:.0%} of capacity", fraction * capacity[kind], seconds)
        baseline_p99 = next(p["p99_ms"] for p in points if p["server"] == "default"
                            and p["kind"] == "rle" and p["phase"] == "50% of capacity")
        overloaded = overload(session, capacity["rle"], baseline_p99)
        remaining = MANY_REQUESTS - session.requests_sent
        if remaining > 0:
            session.phase("rle", "more requests (closed loop)", closed_loop, CONCURRENCY,
                          seconds=FILL_SECONDS, count=remaining)
        rss.append({"requests": session.requests_sent, "rss_mb": server.rss_mb()})
    return {"capacity_rps": capacity, "answer_sizes": sizes, "overload": overloaded, "rss": rss,
            "rss_growth_after_warm_up": round(rss[-1]["rss_mb"] / rss[1]["rss_mb"] - 1, 3)}


def run_variant(name, flags, model_dir, images, seconds, log_dir, points, alone):
    """rle on a server with `flags` (its points under `name`; `alone` its model alone, a
    ModelAlone): warm-up, low rate, capacity, open loop at BATCH_1_FRACTIONS of it and the
    overload → {"flags", "capacity_rps": {"rle": capacity}, "overload"}."""
    log_path = os.path.join(log_dir, f"serve_{name.replace(' ', '_')}.log")
    with (Server(model_dir, flags, log_path) as server,
          contextlib.closing(Session(server, name, images, points)) as session):
        session.phase("rle", "warm-up (closed loop)", closed_loop, CONCURRENCY, count=len(images) * 4)
        low_rate_point(session, "rle", alone, 2 * seconds)
        capacity = session.capacity("rle", seconds, CONCURRENCY)
        half = None
        for fraction in BATCH_1_FRACTIONS:
            point = session.at_rate("rle", f"{fraction:.0%} of capacity", fraction * capacity,
                                    seconds)
            half = point if fraction == 0.5 else half
        overloaded = overload(session, capacity, half["p99_ms"])
    return {"flags": flags, "capacity_rps": {"rle": capacity}, "overload": overloaded}


def low_rate_point(session, kind, alone, seconds):
    """`kind` at LOW_RATE for `seconds` in LOW_RATE_ROUNDS parts, each followed by as many calls
    of the model alone (`alone`, a ModelAlone) at the same rate → the point, with the model
    alone's median (`model_alone_p50_ms`) and `overhead_ms`, the point's p50 minus it. Each
    part opens new connections (the server closes idle ones after 5 s)."""
    part_seconds = seconds / LOW_RATE_ROUNDS
    alone_ms = []

    def interleaved(client, requests):
        records, wall, cpu = [], 0.0, 0.0
        for _ in range(LOW_RATE_ROUNDS):
            client.drop_idle()
            part, part_wall, part_cpu = open_loop(client, requests, [(LOW_RATE, part_seconds)])
            records += [record._replace(due=record.due + wall) for record in part]
            wall, cpu = wall + part_wall, cpu + part_cpu
            alone_ms.extend(alone.burst(LOW_RATE, round(LOW_RATE * part_seconds)))
        return records, wall, cpu
    point, _ = session.phase(kind, "low rate", interleaved, rate=LOW_RATE)
    point["model_alone_p50_ms"] = round(float(np.median(alone_ms)), 2)
    point["overhead_ms"] = round(point["p50_ms"] - point["model_alone_p50_ms"], 2)
    print(f"  {session.name} {kind} low rate: model alone {point['model_alone_p50_ms']} ms, "
          f"overhead {point['overhead_ms']} ms", flush=True)
    return point


def run_heavy(model_dir, images, score_threshold, log_dir):
    """The heavy plan on one model, default flags (micro-batching), `:detect` with rle asking
    for `score_threshold` → its findings: the server's precision line, capacity (closed loop),
    the open-loop points, the model alone at the low point's rate and the overhead."""
    points = []
    with (Server(model_dir, [], os.path.join(log_dir, "serve_heavy.log")) as server,
          contextlib.closing(Session(server, "default", images, points, score_threshold,
                                     HEAVY_QUANTILES, HEAVY_KEPT_BODY_BYTES)) as session):
        precision_line = server.precision_line()
        print(f"  {model_dir}: {precision_line}", flush=True)
        session.phase("rle", "warm-up (closed loop)", closed_loop, HEAVY_CONCURRENCY,
                      count=HEAVY_WARM_UP_REQUESTS)
        capacity = session.capacity("rle", HEAVY_CAPACITY_SECONDS, HEAVY_CONCURRENCY)
        for fraction in (*HEAVY_FRACTIONS, HEAVY_LOW_FRACTION):
            rate = fraction * capacity
            count = HEAVY_LOW_REQUESTS if fraction == HEAVY_LOW_FRACTION else HEAVY_REQUESTS
            _, records = session.phase("rle", f"{fraction:.0%} of capacity", open_loop,
                                       [(rate, count / rate)], rate=rate)
            points[-1]["mean_detections"] = mean_detections(records)
    low = points[-1]
    alone = model_alone(model_dir, images, HEAVY_LOW_FRACTION * capacity,
                        HEAVY_MODEL_ALONE_REPEATS, score_threshold)
    overhead = low["p50_ms"] - alone["predict_ms"]
    server_only = overhead - alone["paste_kept_ms"] - alone["rle_encode_ms"]
    return {"model": model_dir, "server_precision_line": precision_line,
            "capacity_rps": capacity, "low_rate_rps": low["rate_rps"], "model_alone_ms": alone,
            "overhead_ms": round(overhead, 1),
            "overhead_share_of_model": round(overhead / alone["predict_ms"], 4),
            "server_only_overhead_ms": round(server_only, 1),
            "server_only_overhead_share_of_model": round(server_only / alone["predict_ms"], 4),
            "points": points}


def mean_detections(records):
    """Mean detections per `:detect` answer of `records` answered 200."""
    counts = [len(json.loads(r.body)["detections"]) for r in records
              if r.status == 200 and r.body is not None]
    return round(float(np.mean(counts)), 2) if counts else None


def heavy_report(models, images, score_threshold):
    """`run_heavy` on each model in turn (keyed by the precision its server printed), and
    bfloat16's speed-ups over float32 where both ran."""
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as log_dir:
        for model_dir in models:
            run = run_heavy(model_dir, images, score_threshold, log_dir)
            precision = (run["server_precision_line"] or "precision: unknown").split()[1].rstrip(",")
            if precision in runs:
                raise SystemExit(f"{model_dir}: a second {precision} model; give one per precision")
            runs[precision] = run
    report = {"runs": runs}
    if {"float32", "bfloat16"} <= set(runs):
        f32, bf16 = runs["float32"], runs["bfloat16"]
        report["bfloat16_speedup_over_float32"] = {
            "capacity": round(bf16["capacity_rps"] / f32["capacity_rps"], 3),
            "model_alone_predict": round(f32["model_alone_ms"]["predict_ms"]
                                         / bf16["model_alone_ms"]["predict_ms"], 3)}
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", choices=("default", "heavy"), default="default",
                        help="default: every phase, for a model of milliseconds; heavy: "
                        "capacity, 50 %% and 80 %% of it and the overhead, for a model of seconds")
    parser.add_argument("--model", required=True, nargs="+",
                        help="an exported SavedModel folder; --plan heavy takes one per "
                        "precision (e.g. float32 and bfloat16) and serves each in turn")
    parser.add_argument("--model-note", default="", help="where the model comes from, for the report")
    parser.add_argument("--images", required=True, help="a folder of .png/.jpg images to send")
    parser.add_argument("--image-count", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="default plan: each capacity or rate point")
    parser.add_argument("--score-threshold", type=float,
                        help="heavy plan: :detect's score_threshold (default: the server's 0.5)")
    parser.add_argument("--commands", nargs="*", default=[],
                        help="the commands that made the models, for the report")
    parser.add_argument("--out", help="default: bench/results/serve_tiny.json (default plan), "
                        "bench/results/serve_heavy.json (heavy plan)")
    args = parser.parse_args()
    for model in args.model:
        if not os.path.isfile(os.path.join(model, "saved_model.pb")):
            raise SystemExit(f"{model}: not a SavedModel folder (no saved_model.pb)")
    if args.plan == "default" and len(args.model) != 1:
        raise SystemExit("--plan default serves one --model")
    # A `timeout` or Ctrl-C ends the script through its `finally`s, which stop the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    images = read_images(args.images, args.image_count)
    started = time.monotonic()
    if args.plan == "heavy":
        report = {"plan": "heavy", "score_threshold": args.score_threshold,
                  "concurrency_for_capacity": HEAVY_CONCURRENCY,
                  "capacity_seconds": HEAVY_CAPACITY_SECONDS,
                  "requests_per_point": HEAVY_REQUESTS, "low_rate_fraction": HEAVY_LOW_FRACTION,
                  "low_rate_requests": HEAVY_LOW_REQUESTS,
                  "overhead_definition": "p50 at low_rate_rps minus model_alone_ms.predict_ms "
                                         "(predict called at low_rate_rps); server_only also "
                                         "minus model_alone_ms.paste_kept_ms and rle_encode_ms",
                  **heavy_report(args.model, images, args.score_threshold)}
    else:
        report = default_report(args.model[0], images, args.seconds, args.images,
                                args.image_count)
    import tensorflow as tf
    write_report({
        **({"commands": args.commands} if args.commands else {}),
        "machine": machine_info(tensorflow=tf.__version__),
        "model": {"path": " ".join(args.model), "note": args.model_note},
        "images": {"folder": args.images, "count": len(images),
                   "mean_bytes": round(float(np.mean([len(d) for d, _ in images])))},
        **report,
        "bench_seconds": round(time.monotonic() - started, 1)},
        args.out or f"bench/results/serve_{'tiny' if args.plan == 'default' else 'heavy'}.json")


def default_report(model_dir, images, seconds, image_folder, image_count):
    """The default plan's findings: the three servers, each low-rate point against its model
    alone (TensorFlow's default threads, or one for the two-worker server), the model alone's
    summary in both settings and the overheads."""
    points = []
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as log_dir:
        def model_alone_process(name, environment):
            return ModelAlone(model_dir, image_folder, image_count, environment,
                              os.path.join(log_dir, f"model_alone_{name}.log"))
        with (model_alone_process("default", {}) as alone,
              model_alone_process("one_thread", TWO_WORKERS_ENV) as alone_one_thread):
            default = run_default(model_dir, images, seconds, log_dir, points, alone)
            batch_1 = run_variant("batch 1", BATCH_1_FLAGS, model_dir, images, seconds, log_dir,
                                  points, alone)
            two_workers = run_variant("2 workers", TWO_WORKERS_FLAGS, model_dir, images, seconds,
                                      log_dir, points, alone_one_thread)
            summary = alone.summary(LOW_RATE)
            summary_one_thread = alone_one_thread.summary(LOW_RATE)
    overhead, server_only = {}, {}
    for point in points:
        if point["phase"] != "low rate":
            continue
        name = f"{point['server']} {point['kind']}"
        overhead[name] = point["overhead_ms"]
        # rle pastes and encodes the kept masks, which `predict` leaves out: the server's own
        # share is what remains once those are taken off too.
        model = summary_one_thread if point["server"] == "2 workers" else summary
        host_masks = model["paste_kept_ms"] + model["rle_encode_ms"] if point["kind"] == "rle" else 0.0
        server_only[name] = round(point["overhead_ms"] - host_masks, 2)
    return {
        "concurrency_for_capacity": CONCURRENCY, "low_rate_rps": LOW_RATE,
        "low_rate_rounds": LOW_RATE_ROUNDS, "seconds_per_point": seconds,
        "model_alone_ms": summary,
        "model_alone_one_thread_ms": summary_one_thread,
        "overhead_ms": overhead,
        "overhead_definition": "each low-rate point's p50 minus the median of the model alone "
                               "called at the same rate, interleaved with it (one TensorFlow "
                               "thread for the 2 workers server): the points' overhead_ms",
        "server_only_overhead_ms": server_only,
        "server_only_overhead_definition": "overhead_ms minus, for rle, model_alone_ms."
                                           "paste_kept_ms and rle_encode_ms (work predict "
                                           "does not do)",
        "default": default, "batch_1": batch_1, "two_workers": two_workers, "points": points}


if __name__ == "__main__":
    main()

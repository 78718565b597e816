"""`keras-maskrcnn serve` under load: capacity, latency at fixed request rates, a 4x overload,
memory over thousands of requests, answer sizes, and the server's overhead over the model
alone; writes JSON (default bench/results/serve_tiny.json).

  flock /tmp/heavy.lock .venv/bin/python bench/bench_serve.py --model SAVED_MODEL --images DIR

The server runs in its own process on 127.0.0.1 on a free port, started and always stopped by
this script (it also dies with it): once with its default flags (micro-batching) and once with
`--max-batch-size 1`. Every phase is bounded in time.

Requests go open loop: on a fixed schedule of evenly spaced send times, whatever the answers
do, and each latency runs from the request's scheduled send time, so a stalled server (or a
stalled client) shows in the latency instead of lowering the rate. Capacity is measured first,
closed loop (CONCURRENCY clients, each sending its next request when its last is answered);
the open-loop rates are fractions of it. The client is one asyncio loop speaking HTTP/1.1 over
keep-alive connections; it shares the machine's CPUs with the server, so each phase reports
the client's CPU time beside the server's.

Request kinds: `:detect` with the image file as the body and mask_format rle or box, and TF
Serving's `:predict` with the image as a b64 instance of `serving_default`. The server's
overhead is the p50 latency of `:detect` at LOW_RATE minus the median time of the model alone
through the public predictor API (`inference.load_predictor(...).predict`, on the image
decoded as the server decodes it, called at LOW_RATE too, in this process while no server
runs). `predict` returns box-frame masks, while `:detect` with rle also pastes the kept
masks into the image and encodes them: the report times those two apart (`model_alone`) and
gives the server's own overhead without them beside the overhead.
"""

import argparse
import asyncio
import base64
import collections
import contextlib
import ctypes
import glob
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np

from benchutil import machine_info, write_report

MODEL_NAME = "bench"
CONCURRENCY = 16  # closed-loop clients when measuring capacity
WARM_UP_REQUESTS = 500  # RSS is read after these, and again after at least MANY_REQUESTS
MANY_REQUESTS = 5000
LOW_RATE = 4.0  # requests/s at which the server's overhead is measured
OPEN_LOOP_FRACTIONS = {"rle": (0.5, 0.8, 1.0, 1.2), "box": (0.5, 0.8), "predict": (0.5, 0.8)}
BATCH_1_FRACTIONS = (0.5, 0.8)
OVERLOAD_FACTOR = 4.0
OVERLOAD_SECONDS = 10.0
RECOVERY_SECONDS = 6.0  # at RECOVERY_FRACTION of capacity, straight after the overload
RECOVERY_FRACTION = 0.25
RECOVERY_BIN_SECONDS = 0.5
REQUEST_TIMEOUT_S = 30.0
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
MODEL_ALONE_REPEATS = 50
KEPT_BODY_BYTES = 100_000  # :detect answers are kept (for their timing_ms); :predict's are not
ANSWER_FORMATS = ("rle", "png", "polygon", "box", "none")
BATCH_1_FLAGS = ["--max-batch-size", "1"]
FILL_SECONDS = 120  # the most the closed loop up to MANY_REQUESTS may take
PR_SET_PDEATHSIG = 1


# --- the server process -------------------------------------------------------------------

def _die_with_parent():
    """In the server's process: get SIGTERM when this script ends, however it ends."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`keras-maskrcnn serve MODEL` with `flags`, from `with` to its end; logs to `log_path`."""

    def __init__(self, model_dir, flags, log_path):
        self.model_dir, self.flags, self.log_path = model_dir, list(flags), log_path
        self.port = _free_port()
        self.process = None

    def __enter__(self):
        self.log = open(self.log_path, "w")
        command = [sys.executable, "-m", "keras_maskrcnn", "serve", self.model_dir,
                   "--model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(self.port),
                   *self.flags]
        print("$ " + " ".join(command[2:]), flush=True)
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        preexec_fn=_die_with_parent)
        try:
            self.wait_available()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def wait_available(self):
        url = f"http://127.0.0.1:{self.port}/v1/models/{MODEL_NAME}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    status = json.load(response)
                if status["model_version_status"][0]["state"] == "AVAILABLE":
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"serve was not AVAILABLE within {START_TIMEOUT_S} s; see {self.log_path}")

    def __exit__(self, *exc_info):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def rss_mb(self):
        """The server process's resident memory (MiB), from /proc."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
        raise RuntimeError("no VmRSS in /proc status")

    def cpu_seconds(self):
        """User + system CPU time the server has used so far (all its threads)."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the client ----------------------------------------------------------------------------

class Client:
    """HTTP/1.1 to 127.0.0.1:port over keep-alive connections, one per request in flight."""

    def __init__(self, port):
        self.port = port
        self.idle = []
        # One event loop for the client's life: its connections belong to it.
        self.loop = asyncio.new_event_loop()

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def close(self):
        self.drop_idle()
        self.loop.close()

    def raw_request(self, path, body, content_type):
        """The bytes of a POST of `body` to `path`, built once and sent many times."""
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n")
        return head.encode("ascii") + body

    def drop_idle(self):
        """Close the idle connections (between phases: the server may have timed them out)."""
        for _, writer in self.idle:
            writer.close()
        self.idle = []

    async def send(self, raw):
        """Send one request → (status code, answer body bytes). A kept-alive connection that
        the server closed meanwhile is replaced by a new one."""
        for attempt in range(2):
            reused = bool(self.idle) and attempt == 0
            reader, writer = (self.idle.pop() if reused
                              else await asyncio.open_connection("127.0.0.1", self.port))
            try:
                writer.write(raw)
                await writer.drain()
                status_line = await reader.readline()
                if not status_line:
                    raise ConnectionResetError("the server closed the connection")
                status, body, close = await self.read_answer(status_line, reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                writer.close()
                if reused:
                    continue
                raise
            except BaseException:
                writer.close()
                raise
            if close:
                writer.close()
            else:
                self.idle.append((reader, writer))
            return status, body
        raise AssertionError("unreachable")

    @staticmethod
    async def read_answer(status_line, reader):
        status = int(status_line.split()[1])
        length, chunked, close = None, False, False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value
            elif name == "connection":
                close = "close" in value
        if chunked:
            parts = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                parts.append(await reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(part[:-2] for part in parts)
        else:
            body = await reader.readexactly(length or 0)
        return status, body, close

    async def timed(self, raw, due, loop):
        """Send `raw` → (due, latency s from `due`, status or "timeout" or "error: TYPE",
        answer bytes, answer body or None where longer than KEPT_BODY_BYTES)."""
        try:
            status, body = await asyncio.wait_for(self.send(raw), REQUEST_TIMEOUT_S)
        except asyncio.TimeoutError:
            status, body = "timeout", b""
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            status, body = f"error: {type(error).__name__}", b""
        return due, loop.time() - due, status, len(body), body if len(body) <= KEPT_BODY_BYTES else None


def open_loop(client, requests, rates_and_seconds):
    """Send `requests` (cycled) evenly spaced at each (rate, seconds) in turn, open loop →
    (records, wall seconds, client CPU seconds); a record's due time is from the start."""
    async def run():
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        offsets, begin = [], 0.0
        for rate, seconds in rates_and_seconds:
            offsets.extend(begin + np.arange(int(round(rate * seconds))) / rate)
            begin += seconds
        tasks = []
        for index, offset in enumerate(offsets):
            due = start + offset
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(client.timed(requests[index % len(requests)], due, loop)))
        records = await asyncio.gather(*tasks)
        return [(due - start, *rest) for due, *rest in records], loop.time() - start
    cpu = time.process_time()
    records, wall = client.run(run())
    return records, wall, time.process_time() - cpu


def closed_loop(client, requests, concurrency, seconds=None, count=None):
    """`concurrency` clients sending back to back for `seconds` or until `count` requests →
    (records, wall seconds, client CPU seconds); latency from each request's send."""
    async def run():
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        records = []

        async def worker():
            nonlocal sent
            while (count is None or sent < count) and (seconds is None or loop.time() - start < seconds):
                index = sent
                sent += 1
                due, *rest = await client.timed(requests[index % len(requests)], loop.time(), loop)
                records.append((due - start, *rest))
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return records, loop.time() - start
    cpu = time.process_time()
    records, wall = client.run(run())
    return records, wall, time.process_time() - cpu


def summarize(records, wall, client_cpu, server, server_cpu_before, detect_answers):
    """A phase's figures: latency percentiles of the 200s (ms), rates, codes, CPU, bytes, and
    with `detect_answers`, the mean of each `timing_ms` part the server reported."""
    codes = collections.Counter(str(status) for _, _, status, _, _ in records)
    ok = np.array([latency for _, latency, status, _, _ in records if status == 200]) * 1000
    sizes = [size for _, _, status, size, _ in records if status == 200]
    timings = collections.defaultdict(list)
    for _, _, status, _, body in records:
        if detect_answers and status == 200 and body is not None:
            for part, value in json.loads(body).get("timing_ms", {}).items():
                timings[part].append(value)
    summary = {"sent": len(records), "status_counts": dict(codes),
               "count_503": codes.get("503", 0), "count_504": codes.get("504", 0),
               "achieved_rps": round(len(ok) / wall, 1), "seconds": round(wall, 2)}
    if len(ok):
        summary.update({f"p{q}_ms": round(float(np.percentile(ok, q)), 1) for q in (50, 90, 99)})
        summary.update(max_ms=round(float(ok.max()), 1), mean_answer_bytes=round(float(np.mean(sizes))))
    if timings:
        summary["server_timing_ms"] = {part: round(float(np.mean(values)), 2)
                                       for part, values in timings.items()}
    server_cpu = server.cpu_seconds() - server_cpu_before
    summary.update(client_cpu_s=round(client_cpu, 2), server_cpu_s=round(server_cpu, 2),
                   client_cpu_ms_per_request=round(1000 * client_cpu / max(len(records), 1), 2),
                   server_cpu_ms_per_request=round(1000 * server_cpu / max(len(records), 1), 2))
    return summary


class Session:
    """One server, the client that drives it and the points measured; counts the requests
    the server has been sent."""

    def __init__(self, server, name, images, points):
        self.server, self.name, self.points = server, name, points
        self.client = Client(server.port)
        self.requests_sent = 0
        detect = f"/v1/models/{MODEL_NAME}:detect"
        self.requests = {
            **{fmt: [self.client.raw_request(f"{detect}?mask_format={fmt}", data, content_type)
                     for data, content_type in images] for fmt in ANSWER_FORMATS},
            "predict": [self.client.raw_request(
                f"/v1/models/{MODEL_NAME}:predict", json.dumps(
                    {"signature_name": "serving_default",
                     "instances": [{"b64": base64.b64encode(data).decode("ascii")}]}).encode(),
                "application/json") for data, _ in images],
        }

    def close(self):
        self.client.close()

    def phase(self, kind, label, runner, *args, rate=None, **kwargs):
        """Run `runner(client, requests of kind, ...)`, add its point (`label`, the open-loop
        `rate`) to the points → (point, records)."""
        self.client.drop_idle()
        before = self.server.cpu_seconds()
        records, wall, client_cpu = runner(self.client, self.requests[kind], *args, **kwargs)
        self.requests_sent += len(records)
        point = {"server": self.name, "kind": kind, "phase": label,
                 "rate_rps": None if rate is None else round(rate, 1),
                 **summarize(records, wall, client_cpu, self.server, before, kind != "predict")}
        self.points.append(point)
        print(f"  {self.name} {kind} {label}: "
              f"{ {k: point.get(k) for k in ('rate_rps', 'achieved_rps', 'p50_ms', 'p99_ms', 'max_ms', 'status_counts')} }",
              flush=True)
        return point, records

    def capacity(self, kind, seconds):
        """Closed-loop requests/s of `kind` answered 200."""
        return self.phase(kind, "capacity (closed loop)", closed_loop, CONCURRENCY,
                          seconds=seconds)[0]["achieved_rps"]

    def at_rate(self, kind, label, rate, seconds):
        return self.phase(kind, label, open_loop, [(rate, seconds)], rate=rate)[0]


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
    during = [r for r in records if r[0] < OVERLOAD_SECONDS]
    after = [r for r in records if r[0] >= OVERLOAD_SECONDS]
    bins = []
    for start in np.arange(0, RECOVERY_SECONDS, RECOVERY_BIN_SECONDS):
        chosen = [r for r in after if start <= r[0] - OVERLOAD_SECONDS < start + RECOVERY_BIN_SECONDS]
        latencies = [1000 * r[1] for r in chosen]
        bins.append({"from_s": float(start), "sent": len(chosen),
                     "codes": dict(collections.Counter(str(r[2]) for r in chosen)),
                     "max_ms": round(max(latencies), 1) if latencies else None})
    late = [r for r in after if r[0] - OVERLOAD_SECONDS >= 2.0]
    # Normal after 2 s: every request sent 2 s or more after the overload's end answered 200,
    # none slower than twice the p99 at half the capacity.
    normal = bool(late) and all(r[2] == 200 and 1000 * r[1] <= 2 * baseline_p99_ms for r in late)
    codes = collections.Counter(str(r[2]) for r in during)
    return {"rate_rps": round(OVERLOAD_FACTOR * capacity, 1), "seconds": OVERLOAD_SECONDS,
            "sent": len(during), "status_counts": dict(codes),
            "only_200_and_503": set(codes) <= {"200", "503"},
            "p50_ms_of_200s": round(float(np.median([1000 * r[1] for r in during if r[2] == 200])), 1),
            "recovery_rate_rps": round(RECOVERY_FRACTION * capacity, 1),
            "after_end": bins, "normal_latency_rule": "all 200 and <= 2 x p99 at 50 % of capacity",
            "normal_within_2_s": normal}


def run_default(model_dir, images, seconds, log_dir, points):
    """Everything on the server with its default flags (micro-batching) → its findings."""
    with (Server(model_dir, [], os.path.join(log_dir, "serve_default.log")) as server,
          contextlib.closing(Session(server, "default", images, points)) as session):
        rss = [{"requests": 0, "rss_mb": server.rss_mb()}]
        session.phase("rle", "warm-up (closed loop)", closed_loop, CONCURRENCY, count=WARM_UP_REQUESTS)
        rss.append({"requests": session.requests_sent, "rss_mb": server.rss_mb()})
        sizes = answer_sizes(session)
        for kind in ("rle", "box", "predict"):
            session.at_rate(kind, "low rate", LOW_RATE, 2 * seconds)
        capacity = {kind: session.capacity(kind, seconds) for kind in OPEN_LOOP_FRACTIONS}
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


def run_batch_1(model_dir, images, seconds, log_dir, points):
    """rle's capacity and latency with micro-batching off (BATCH_1_FLAGS) → its capacity."""
    with (Server(model_dir, BATCH_1_FLAGS, os.path.join(log_dir, "serve_batch1.log")) as server,
          contextlib.closing(Session(server, "batch 1", images, points)) as session):
        session.phase("rle", "warm-up (closed loop)", closed_loop, CONCURRENCY, count=len(images) * 4)
        session.at_rate("rle", "low rate", LOW_RATE, 2 * seconds)
        capacity = session.capacity("rle", seconds)
        for fraction in BATCH_1_FRACTIONS:
            session.at_rate("rle", f"{fraction:.0%} of capacity", fraction * capacity, seconds)
    return {"flags": BATCH_1_FLAGS, "capacity_rps": {"rle": capacity}}


def model_alone(model_dir, images):
    """The model alone through the public predictor API on the images `:detect` decodes
    (`data.images.decode_image`, as the server does), in ms (medians of MODEL_ALONE_REPEATS):

    - `predict_ms`: `load_predictor(...).predict([image])`, one call every 1 / LOW_RATE s (as
      the low-rate requests come, so both pay for waking TensorFlow's idle threads), and
      `predict_back_to_back_ms` with no pause;
    - `paste_kept_ms`: `add_full_masks` on the detections :detect keeps (score >=
      DEFAULT_SCORE_THRESHOLD), the pasting `predict` leaves out and :detect does for rle;
    - `rle_encode_ms`: encoding those pasted masks as COCO RLE.
    """
    from keras_maskrcnn.data.images import decode_image
    from keras_maskrcnn.inference import load_predictor
    from keras_maskrcnn.serving.detect import DEFAULT_SCORE_THRESHOLD
    from keras_maskrcnn.serving.masks import encode_rle

    predictor = load_predictor(model_dir)
    arrays = [decode_image(data) for data, _ in images]

    def median_ms(function, pause_s=0.0):
        times = []
        for index in range(MODEL_ALONE_REPEATS):
            time.sleep(pause_s)
            start = time.perf_counter()
            function(index % len(arrays))
            times.append(1000 * (time.perf_counter() - start))
        return round(float(np.median(times)), 2)

    kept = []  # predicting each image once here also warms the predictor up
    for array in arrays:
        found = predictor.predict([array])[0]
        keep = found["scores"] >= DEFAULT_SCORE_THRESHOLD
        kept.append({name: value[keep] for name, value in found.items()})
    pasted = [predictor.add_full_masks(dict(found), array.shape[:2])["full_masks"]
              for found, array in zip(kept, arrays)]
    return {
        "predict_ms": median_ms(lambda i: predictor.predict([arrays[i]]), 1 / LOW_RATE),
        "predict_back_to_back_ms": median_ms(lambda i: predictor.predict([arrays[i]])),
        "paste_kept_ms": median_ms(lambda i: predictor.add_full_masks(dict(kept[i]),
                                                                       arrays[i].shape[:2])),
        "rle_encode_ms": median_ms(lambda i: [encode_rle(mask) for mask in pasted[i]]),
        "mean_kept_detections": round(float(np.mean([len(found["scores"]) for found in kept])), 2),
    }


def read_images(folder, count):
    """(bytes, content type) of the first `count` PNG/JPEG files in `folder`."""
    paths = sorted(p for p in glob.glob(os.path.join(folder, "*"))
                   if p.lower().endswith((".png", ".jpg", ".jpeg")))[:count]
    if not paths:
        raise SystemExit(f"{folder}: no .png/.jpg images")
    return [(open(p, "rb").read(), "image/png" if p.lower().endswith(".png") else "image/jpeg")
            for p in paths]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an exported SavedModel folder")
    parser.add_argument("--model-note", default="", help="where the model comes from, for the report")
    parser.add_argument("--images", required=True, help="a folder of .png/.jpg images to send")
    parser.add_argument("--image-count", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0, help="each capacity or rate point")
    parser.add_argument("--out", default="bench/results/serve_tiny.json")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.model, "saved_model.pb")):
        raise SystemExit(f"{args.model}: not a SavedModel folder (no saved_model.pb)")
    # A `timeout` or Ctrl-C ends the script through its `finally`s, which stop the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    images = read_images(args.images, args.image_count)
    started = time.monotonic()
    points = []
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as log_dir:
        default = run_default(args.model, images, args.seconds, log_dir, points)
        batch_1 = run_batch_1(args.model, images, args.seconds, log_dir, points)
    alone = model_alone(args.model, images)
    low_rate = {(p["server"], p["kind"]): p["p50_ms"] for p in points if p["phase"] == "low rate"}
    overhead = {f"{server} {kind}": round(p50 - alone["predict_ms"], 2)
                for (server, kind), p50 in low_rate.items()}
    # rle pastes and encodes the kept masks, which `predict` leaves out: the server's own
    # share is what remains once those are taken off too.
    host_masks = {"rle": alone["paste_kept_ms"] + alone["rle_encode_ms"], "box": 0.0, "predict": 0.0}
    server_only = {f"{server} {kind}": round(p50 - alone["predict_ms"] - host_masks[kind], 2)
                   for (server, kind), p50 in low_rate.items()}
    import tensorflow as tf
    write_report({
        "machine": machine_info(tensorflow=tf.__version__),
        "model": {"path": args.model, "note": args.model_note},
        "images": {"folder": args.images, "count": len(images),
                   "mean_bytes": round(float(np.mean([len(d) for d, _ in images])))},
        "concurrency_for_capacity": CONCURRENCY, "low_rate_rps": LOW_RATE,
        "seconds_per_point": args.seconds,
        "model_alone_ms": alone,
        "overhead_ms": overhead,
        "overhead_definition": "p50 at low_rate_rps minus model_alone_ms.predict_ms",
        "server_only_overhead_ms": server_only,
        "server_only_overhead_definition": "overhead_ms minus, for rle, model_alone_ms."
                                           "paste_kept_ms and rle_encode_ms (work predict "
                                           "does not do)",
        "default": default, "batch_1": batch_1, "points": points,
        "bench_seconds": round(time.monotonic() - started, 1)}, args.out)


if __name__ == "__main__":
    main()

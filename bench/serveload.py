"""What bench_serve.py's plans share: `keras-maskrcnn serve` in its own process (`Server`), an
asyncio HTTP/1.1 client (`Client`), open- and closed-loop load, and `Session`, which drives one
server through phases and summarizes each (latency percentiles, rates, status codes, CPU time).
"""

import asyncio
import base64
import collections
import ctypes
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np

MODEL_NAME = "bench"
REQUEST_TIMEOUT_S = 30.0
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
KEPT_BODY_BYTES = 100_000  # :detect answers are kept (for their timing_ms); :predict's are not
ANSWER_FORMATS = ("rle", "png", "polygon", "box", "none")
QUANTILES = (50, 90, 99)  # the latency percentiles of a point
PR_SET_PDEATHSIG = 1
# asyncio wakes a sleeper up to 1 ms late (epoll's timeout is whole milliseconds), and more on
# a VM whose idle CPU must wake first: at rates up to PRECISE_SEND_RPS the open loop sleeps
# until SEND_POLL_S before a request is due and polls the event loop from there, so that the
# client's own lateness does not count as the server's latency (2 ms of polling a request:
# under 4 % of one CPU at 20 requests/s).
PRECISE_SEND_RPS = 20.0
SEND_POLL_S = 0.002

Record = collections.namedtuple("Record", "due latency status size body send_late")
Record.__doc__ = """One request of a phase: `due` its scheduled send (s from the phase's start),
`latency` s from `due` to the whole answer, `status` the HTTP code or "timeout" or "error:
TYPE", `size` the answer's bytes, `body` the answer (None where longer than the client keeps),
`send_late` s from `due` to the client starting to write it."""


# --- the server process -------------------------------------------------------------------

def die_with_parent():
    """In a child process (preexec_fn): get SIGTERM when this script ends, however it ends."""
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
                                        preexec_fn=die_with_parent)
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

    def precision_line(self):
        """The server's first `precision: ...` line (which precision the model computes in)."""
        with open(self.log_path) as log:
            return next((line.strip() for line in log if line.startswith("precision:")), None)

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
    """HTTP/1.1 to 127.0.0.1:port over keep-alive connections, one per request in flight;
    answers up to `kept_body_bytes` long are kept."""

    def __init__(self, port, kept_body_bytes=KEPT_BODY_BYTES):
        self.port, self.kept_body_bytes = port, kept_body_bytes
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
        """Send `raw` → its `Record` (`due` as given: loop time)."""
        started = loop.time()
        try:
            status, body = await asyncio.wait_for(self.send(raw), REQUEST_TIMEOUT_S)
        except asyncio.TimeoutError:
            status, body = "timeout", b""
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            status, body = f"error: {type(error).__name__}", b""
        kept = body if len(body) <= self.kept_body_bytes else None
        return Record(due, loop.time() - due, status, len(body), kept, started - due)


async def _until(loop, due, poll):
    """Return at loop time `due`: asleep, then polling the loop for the last SEND_POLL_S when
    `poll`."""
    delay = due - loop.time() - (SEND_POLL_S if poll else 0.0)
    if delay > 0:
        await asyncio.sleep(delay)
    while poll and loop.time() < due:
        await asyncio.sleep(0)


def open_loop(client, requests, rates_and_seconds):
    """Send `requests` (cycled) evenly spaced at each (rate, seconds) in turn, open loop →
    (records, wall seconds, client CPU seconds); a record's due time is from the start."""
    async def run():
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        schedule, begin = [], 0.0
        for rate, seconds in rates_and_seconds:
            offsets = begin + np.arange(int(round(rate * seconds))) / rate
            schedule.extend((offset, rate <= PRECISE_SEND_RPS) for offset in offsets)
            begin += seconds
        tasks = []
        for index, (offset, poll) in enumerate(schedule):
            due = start + offset
            await _until(loop, due, poll)
            tasks.append(asyncio.create_task(client.timed(requests[index % len(requests)], due, loop)))
        records = await asyncio.gather(*tasks)
        return [record._replace(due=record.due - start) for record in records], loop.time() - start
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
                record = await client.timed(requests[index % len(requests)], loop.time(), loop)
                records.append(record._replace(due=record.due - start))
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return records, loop.time() - start
    cpu = time.process_time()
    records, wall = client.run(run())
    return records, wall, time.process_time() - cpu


def rounded_rate(rps):
    """Requests/s to 0.1, or to 3 significant digits below 1."""
    return round(rps, 1) if rps >= 1 else float(f"{rps:.3g}")


def summarize(records, wall, client_cpu, server, server_cpu_before, detect_answers,
              quantiles=QUANTILES):
    """A phase's figures: latency `quantiles` of the 200s (ms), rates, codes, CPU, bytes, and
    with `detect_answers`, the mean of each `timing_ms` part the server reported."""
    codes = collections.Counter(str(record.status) for record in records)
    answered = [record for record in records if record.status == 200]
    ok = np.array([record.latency for record in answered]) * 1000
    sizes = [record.size for record in answered]
    timings = collections.defaultdict(list)
    for record in answered:
        if detect_answers and record.body is not None:
            for part, value in json.loads(record.body).get("timing_ms", {}).items():
                timings[part].append(value)
    summary = {"sent": len(records), "status_counts": dict(codes),
               "count_503": codes.get("503", 0), "count_504": codes.get("504", 0),
               "achieved_rps": rounded_rate(len(ok) / wall), "seconds": round(wall, 2)}
    if len(ok):
        summary.update({f"p{q}_ms": round(float(np.percentile(ok, q)), 1) for q in quantiles})
        summary.update(max_ms=round(float(ok.max()), 1), mean_answer_bytes=round(float(np.mean(sizes))))
    late = np.array([record.send_late for record in records]) * 1000
    summary["client_send_late_ms"] = {"p50": round(float(np.median(late)), 3),
                                      "max": round(float(late.max()), 3)}
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
    the server has been sent. `:detect` requests ask for `score_threshold` when given (else
    the server's default, 0.5); points report the latency `quantiles`."""

    def __init__(self, server, name, images, points, score_threshold=None, quantiles=QUANTILES,
                 kept_body_bytes=KEPT_BODY_BYTES):
        self.server, self.name, self.points, self.quantiles = server, name, points, quantiles
        self.client = Client(server.port, kept_body_bytes)
        self.requests_sent = 0
        detect = f"/v1/models/{MODEL_NAME}:detect"
        threshold = "" if score_threshold is None else f"&score_threshold={score_threshold}"
        self.requests = {
            **{fmt: [self.client.raw_request(f"{detect}?mask_format={fmt}{threshold}", data,
                                             content_type)
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
                 "rate_rps": None if rate is None else rounded_rate(rate),
                 **summarize(records, wall, client_cpu, self.server, before, kind != "predict",
                             self.quantiles)}
        self.points.append(point)
        print(f"  {self.name} {kind} {label}: "
              f"{ {k: point.get(k) for k in ('rate_rps', 'achieved_rps', 'p50_ms', 'p99_ms', 'max_ms', 'status_counts')} }",
              flush=True)
        return point, records

    def capacity(self, kind, seconds, concurrency):
        """Closed-loop requests/s of `kind` answered 200, `concurrency` clients."""
        return self.phase(kind, "capacity (closed loop)", closed_loop, concurrency,
                          seconds=seconds)[0]["achieved_rps"]

    def at_rate(self, kind, label, rate, seconds):
        return self.phase(kind, label, open_loop, [(rate, seconds)], rate=rate)[0]


def read_images(folder, count):
    """(bytes, content type) of the first `count` PNG/JPEG files in `folder`."""
    paths = sorted(p for p in glob.glob(os.path.join(folder, "*"))
                   if p.lower().endswith((".png", ".jpg", ".jpeg")))[:count]
    if not paths:
        raise SystemExit(f"{folder}: no .png/.jpg images")
    return [(open(p, "rb").read(), "image/png" if p.lower().endswith(".png") else "image/jpeg")
            for p in paths]


"""The server's Prometheus metrics, written in Prometheus' text format (version 0.0.4).

Requests by endpoint and code, request latency by endpoint (a histogram), the batcher's queue
depth, and the sizes and run times of the batches it ran.
"""

import threading

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_TIME_BUCKETS_S = LATENCY_BUCKETS_S
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "keras_maskrcnn"


def _escape(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels):
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in labels) + "}"


class _Histogram:
    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, value):
        self.count += 1
        self.sum += value
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1

    def lines(self, name, labels):
        for bound, count in zip(self.buckets, self.counts):
            yield f"{name}_bucket{_labels(labels + (('le', repr(float(bound))),))} {count}"
        yield f"{name}_bucket{_labels(labels + (('le', '+Inf'),))} {self.count}"
        yield f"{name}_sum{_labels(labels)} {self.sum!r}"
        yield f"{name}_count{_labels(labels)} {self.count}"


class Metrics:
    """Counters and histograms, updated from any thread; `queue_depth()` is read when the text
    is written."""

    def __init__(self, queue_depth, max_batch_size):
        self.queue_depth = queue_depth
        self._lock = threading.Lock()
        self._requests = {}  # (endpoint, code) → count
        self._latency = {}  # endpoint → _Histogram
        self._batch_sizes = _Histogram(tuple(range(1, max_batch_size + 1)))
        self._batch_seconds = _Histogram(BATCH_TIME_BUCKETS_S)

    def request(self, endpoint, code, seconds):
        """Count one answered request and its latency."""
        with self._lock:
            self._requests[endpoint, code] = self._requests.get((endpoint, code), 0) + 1
            self._latency.setdefault(endpoint, _Histogram(LATENCY_BUCKETS_S)).observe(seconds)

    def batch(self, size, seconds):
        """Count one batch the model ran."""
        with self._lock:
            self._batch_sizes.observe(size)
            self._batch_seconds.observe(seconds)

    def text(self):
        """All metrics in Prometheus' text format."""
        lines = []

        def family(name, kind, help_text):
            lines.append(f"# HELP {PREFIX}_{name} {help_text}")
            lines.append(f"# TYPE {PREFIX}_{name} {kind}")
            return f"{PREFIX}_{name}"

        with self._lock:
            name = family("requests_total", "counter", "Requests answered, by endpoint and HTTP code.")
            for (endpoint, code), count in sorted(self._requests.items()):
                lines.append(f"{name}{_labels((('endpoint', endpoint), ('code', code)))} {count}")
            name = family("request_seconds", "histogram", "Time from a request's arrival to its answer.")
            for endpoint, histogram in sorted(self._latency.items()):
                lines.extend(histogram.lines(name, (("endpoint", endpoint),)))
            name = family("queue_depth", "gauge", "Requests waiting for the model.")
            lines.append(f"{name} {self.queue_depth()}")
            name = family("batch_size", "histogram", "Requests per model call.")
            lines.extend(self._batch_sizes.lines(name, ()))
            name = family("batch_seconds", "histogram", "Time of one model call.")
            lines.extend(self._batch_seconds.lines(name, ()))
        return "\n".join(lines) + "\n"

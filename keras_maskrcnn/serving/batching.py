"""Micro-batching: requests submitted from any thread are queued (at most `max_queue`) and
`workers` worker threads run them in batches of up to `max_batch_size` items with the same
key, each worker one batch at a time.

A request can hold its place in the queue (`reserved`) before its item exists, so that a
server refuses what it cannot queue before reading and decoding it: under overload, the
refused requests then cost no decoding, and the places held count toward `max_queue`.

A worker takes what is queued when it is free; with `batch_timeout_s` > 0 it also waits
that long for a batch to fill. Items whose future was cancelled while queued (their request
timed out) are dropped. When a batch of several fails, each item is run alone, so one bad
item fails only its own request.
"""

import collections
import concurrent.futures
import contextlib
import threading
import time


class QueueFull(Exception):
    """The queue holds `max_queue` items already."""


class MicroBatcher:
    """Runs `run_batch(key, items) → results` (one result per item, in order) on `workers`
    threads, so up to `workers` batches at once; `on_batch(size, seconds)` is told of each
    batch run."""

    def __init__(self, run_batch, max_batch_size, batch_timeout_s, max_queue, on_batch=None,
                 workers=1):
        if max_batch_size < 1 or max_queue < 1 or batch_timeout_s < 0 or workers < 1:
            raise ValueError("max_batch_size, max_queue and workers must be at least 1 and "
                             "batch_timeout_s not negative")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.batch_timeout_s = batch_timeout_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._pending = collections.deque()  # (key, item, future)
        self._reserved = 0  # places held by `reserved` blocks not yet submitted
        self._condition = threading.Condition()
        self._closed = False
        self._workers = [threading.Thread(target=self._work, name=f"micro-batcher-{index}",
                                          daemon=True) for index in range(workers)]
        for worker in self._workers:
            worker.start()

    @property
    def queue_depth(self):
        """Items waiting for a worker, and places held for items being prepared."""
        return len(self._pending) + self._reserved

    def _check_room(self):
        """Raise RuntimeError once closed, QueueFull when no place is left (lock held)."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        if len(self._pending) + self._reserved >= self.max_queue:
            raise QueueFull(f"{len(self._pending) + self._reserved} requests are queued already")

    def submit(self, key, item):
        """Queue `item` → concurrent.futures.Future of its result (cancel it to drop the item
        while it waits). Raises QueueFull, or RuntimeError once closed."""
        with self._condition:
            self._check_room()
            return self._append(key, item)

    def _append(self, key, item):
        future = concurrent.futures.Future()
        self._pending.append((key, item, future))
        self._condition.notify()
        return future

    @contextlib.contextmanager
    def reserved(self):
        """Hold a place in the queue for the block → `submit(key, item)` that fills it (once;
        a future as `submit` gives); the place is freed when the block ends without it.
        Raises QueueFull or RuntimeError on entering, as `submit` does."""
        with self._condition:
            self._check_room()
            self._reserved += 1
        held = True

        def submit(key, item):
            nonlocal held
            with self._condition:
                if not held:
                    raise RuntimeError("this place in the queue was filled already")
                held = False
                self._reserved -= 1
                if self._closed:
                    raise RuntimeError("the batcher is closed")
                return self._append(key, item)
        try:
            yield submit
        finally:
            if held:
                with self._condition:
                    self._reserved -= 1

    def close(self, timeout=None):
        """Run what is queued, then stop the workers (waiting at most `timeout` seconds)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            worker.join(None if deadline is None else max(deadline - time.monotonic(), 0))

    def _take(self, key, batch):
        """Move queued items of `key` into `batch` (up to max_batch_size), dropping cancelled
        ones; the others keep their order."""
        kept = collections.deque()
        while self._pending:
            entry = self._pending.popleft()
            if len(batch) < self.max_batch_size and (key is None or entry[0] == key):
                if entry[2].set_running_or_notify_cancel():
                    batch.append(entry)
                    key = entry[0]
            else:
                kept.append(entry)
        self._pending = kept
        return key

    def _next_batch(self):
        """Wait for work → a list of (key, item, future), or None once closed and drained."""
        with self._condition:
            batch = []
            key = None
            while not batch:
                while not self._pending and not self._closed:
                    self._condition.wait()
                if not self._pending:
                    return None
                key = self._take(None, batch)
            deadline = time.monotonic() + self.batch_timeout_s
            while len(batch) < self.max_batch_size and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
                self._take(key, batch)
            return batch

    def _work(self):
        while (batch := self._next_batch()) is not None:
            key = batch[0][0]
            start = time.perf_counter()
            try:
                results = self.run_batch(key, [item for _, item, _ in batch])
            except Exception as error:  # noqa: BLE001 - handed to the requests' futures
                if len(batch) == 1:
                    batch[0][2].set_exception(error)
                else:
                    for entry in batch:
                        self._run_alone(key, entry)
            else:
                for (_, _, future), result in zip(batch, results):
                    future.set_result(result)
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - start)

    def _run_alone(self, key, entry):
        _, item, future = entry
        try:
            future.set_result(self.run_batch(key, [item])[0])
        except Exception as error:  # noqa: BLE001 - handed to the request's future
            future.set_exception(error)

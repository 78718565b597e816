"""`keras-maskrcnn serve` in a subprocess for the serving tests, and a small HTTP client.

`running_server(model_dir, *options)` starts the server on 127.0.0.1 on a free port, waits
(bounded) until its status endpoint answers, and always stops it; the server's output goes to
a log file that failures print.
"""

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

MODEL_NAME = "tiny"
START_TIMEOUT_S = 180  # TensorFlow's import, the model's load and warm-up, on a busy 2-core CPU
STOP_TIMEOUT_S = 60
REQUEST_TIMEOUT_S = 120


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A running server: its port, process and log."""

    def __init__(self, process, port, log_path):
        self.process = process
        self.port = port
        self.log_path = log_path

    def log(self):
        with open(self.log_path, errors="replace") as file:
            return file.read()

    def request(self, method, path, body=None, headers=None, timeout=REQUEST_TIMEOUT_S):
        """One request on a new connection → (status, headers dict (lower-case names), body
        parsed as JSON when the answer is JSON, else bytes)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
                headers = {"Content-Type": "application/json", **(headers or {})}
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
            answer_headers = {name.lower(): value for name, value in response.getheaders()}
        finally:
            connection.close()
        if answer_headers.get("content-type", "").startswith("application/json"):
            data = json.loads(data)
        return response.status, answer_headers, data


@contextlib.contextmanager
def running_server(model_dir, *options, start_timeout=START_TIMEOUT_S):
    """Start `keras-maskrcnn serve model_dir --model-name MODEL_NAME *options` → Server."""
    port = free_port()
    log_file = tempfile.NamedTemporaryFile("w", prefix="serve-", suffix=".log", delete=False)
    command = [sys.executable, "-m", "keras_maskrcnn", "serve", str(model_dir), "--model-name",
               MODEL_NAME, "--port", str(port), *map(str, options)]
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = Server(process, port, log_file.name)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}:\n{server.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start in {start_timeout} s:\n{server.log()}")
            try:
                status, _, _ = server.request("GET", f"/v1/models/{MODEL_NAME}", timeout=5)
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log_file.close()

"""Run the app under uvicorn: load and warm up the model, listen, and on SIGTERM or SIGINT
stop accepting, finish the requests in flight (at most `shutdown_timeout` seconds) and
return."""

import signal
import sys

import tensorflow as tf
import uvicorn

from keras_maskrcnn.precision import precision_line
from keras_maskrcnn.serving.app import create_app
from keras_maskrcnn.serving.model import ServedModel
from keras_maskrcnn.serving.options import (DEFAULT_HOST, DEFAULT_PORT,
                                            DEFAULT_SHUTDOWN_TIMEOUT_S)


def serve(model_path, options, host=DEFAULT_HOST, port=DEFAULT_PORT,
          shutdown_timeout=DEFAULT_SHUTDOWN_TIMEOUT_S):
    """Serve the SavedModel at `model_path` (`model.find_version`) under `options`
    (`options.ServeOptions`) until a signal stops it. Raises ValueError naming the path when it
    holds no servable model."""
    if options.intra_op_threads is not None:
        # Before the model loads: TensorFlow fixes its thread pools when it first runs.
        tf.config.threading.set_intra_op_parallelism_threads(options.intra_op_threads)
    model = ServedModel(model_path)
    print(precision_line(model.precision), flush=True)
    warm = model.warm_up()
    threads = options.intra_op_threads or "one per core"
    print(f"serving {model.directory} as model {options.model_name!r} version {model.version} "
          f"(warm-up: {len(warm[0]['scores'])} detections; model workers: "
          f"{options.model_workers}, TensorFlow threads per op: {threads}) on "
          f"http://{host}:{port}"
          + ("" if options.grpc_port is None else f" and gRPC on {host}:{options.grpc_port}"),
          flush=True)
    server = uvicorn.Server(uvicorn.Config(
        create_app(model, options, host, shutdown_timeout), host=host, port=port, lifespan="on",
        timeout_graceful_shutdown=shutdown_timeout, access_log=False, log_level="info"))
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully, which
    # would end the process with -15 (or a KeyboardInterrupt); after a clean shutdown the
    # re-raised signal is ignored, and the process exits 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda signum, frame: None)
    server.run()
    sys.stdout.flush()
    return 0

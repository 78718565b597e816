"""`keras-maskrcnn serve`'s settings and their defaults, importable without Starlette or
TensorFlow (the command line's --help reads them)."""

import dataclasses
from typing import Optional

from keras_maskrcnn.config import DEFAULT_MAX_IMAGE_PIXELS

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501  # TF Serving's REST port
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_BATCH_TIMEOUT_MS = 0.0
DEFAULT_MAX_QUEUE = 64
DEFAULT_MODEL_WORKERS = 1
DEFAULT_MAX_BODY_MB = 16.0
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """What the app takes besides the model (docs/serving.md says what each does)."""
    model_name: str
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS
    max_queue: int = DEFAULT_MAX_QUEUE
    model_workers: int = DEFAULT_MODEL_WORKERS
    # TensorFlow's threads per op (TF Serving's --tensorflow_intra_op_parallelism); None
    # leaves TensorFlow's default, one per core.
    intra_op_threads: Optional[int] = None
    max_body_mb: float = DEFAULT_MAX_BODY_MB
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    timeout_s: float = DEFAULT_TIMEOUT_S
    api_key: Optional[str] = None
    # TF Serving's gRPC API on this port (the REST server's host) when given.
    grpc_port: Optional[int] = None

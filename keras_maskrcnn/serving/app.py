"""The Starlette app: TF Serving's REST endpoints, `:detect`, `/metrics` and the page at `/`.

Routes (NAME the served model, N its version):
- `GET /v1/models/NAME[/versions/N]`: status; needs no API key.
- `GET /v1/models/NAME[/versions/N]/metadata`: signature defs.
- `POST /v1/models/NAME[/versions/N]:predict`: TF Serving's predict.
- `POST /v1/models/NAME[/versions/N]:detect`: the image file as the body → detections with
  pasted masks (`detect`).
- `GET /metrics`: Prometheus text (`metrics`); `GET /`: static/index.html.

Every error is {"error": message} with TF Serving's status codes (`tf_serving_api`); TF
Serving's gRPC API (`grpc_service`) shares the model, queue and checks. Model
calls go through one `batching.MicroBatcher` (`--model-workers` calls at once); decoding, JSON
and mask encoding run on a thread pool, so the event loop only moves bytes (and decodes small
images, INLINE_DECODE_PIXELS, and makes answers with few mask pixels, INLINE_ANSWER_PIXELS,
which costs less than a hand-off to a thread).
"""

import asyncio
import concurrent.futures
import contextlib
import hmac
import html
import importlib.resources
import itertools
import logging
import time

import numpy as np
import tensorflow as tf
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from keras_maskrcnn.data.errors import DataError
from keras_maskrcnn.data.images import decode_image, read_image_size
from keras_maskrcnn.serving import detect, tf_serving_api as api
from keras_maskrcnn.serving.batching import MicroBatcher, QueueFull
from keras_maskrcnn.serving.metrics import TEXT_CONTENT_TYPE, Metrics
from keras_maskrcnn.serving.options import DEFAULT_HOST
from keras_maskrcnn.serving.tf_serving_api import ServingError

LOG = logging.getLogger("keras_maskrcnn.serving")
JSON_CONTENT_TYPE = "application/json"
PAGE = "static/index.html"
MODEL_NAME_MARK = "{{MODEL_NAME}}"  # where the page takes the served model's name
DETECT_KEY = "detect"
HOST_THREADS = 4  # decoding, JSON and mask encoding beside the event loop
# Images of at most this many pixels are decoded on the event loop itself: a hand-off to a
# host thread and back costs more (0.2-0.5 ms on an idle 2-core machine, against 0.15 ms to
# decode a 128 × 128 PNG).
INLINE_DECODE_PIXELS = 256 * 256
# A :detect answer whose masks paste at most this many pixels in all is made on the event
# loop itself, for the same reason.
INLINE_ANSWER_PIXELS = 256 * 256
RETRY_AFTER_S = 1
MEGABYTE = 1 << 20
# absl status codes (tf.errors.OpError.error_code) → HTTP, as TF Serving maps them.
HTTP_OF_TF_CODE = {1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400,
                   10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401}


def _json_response(body, status=200, headers=None):
    return Response(body, status, headers, media_type=JSON_CONTENT_TYPE)


def error_response(error):
    """A ServingError → its {"error": ...} JSON response."""
    return _json_response(api.to_json({"error": error.message}), error.status, error.headers)


def model_error(error):
    """An error of a model call → ServingError with TF Serving's code."""
    if isinstance(error, tf.errors.OpError):
        return ServingError(HTTP_OF_TF_CODE.get(error.error_code, api.INTERNAL), error.message)
    if isinstance(error, (ValueError, TypeError)):
        return ServingError(api.INVALID_ARGUMENT, str(error))
    return ServingError(api.INTERNAL, f"{type(error).__name__}: {error}")


class _App:
    """The state behind the routes: the model, the batcher, the metrics."""

    def __init__(self, model, options):
        self.model = model
        self.options = options
        self.max_body = int(options.max_body_mb * MEGABYTE)
        self.host = concurrent.futures.ThreadPoolExecutor(HOST_THREADS, "serve-host")
        self.batcher = MicroBatcher(self._run_batch, options.max_batch_size,
                                    options.batch_timeout_ms / 1000, options.max_queue,
                                    workers=options.model_workers)
        self.metrics = Metrics(lambda: self.batcher.queue_depth, options.max_batch_size)
        self.batcher.on_batch = self.metrics.batch
        self._unique_keys = itertools.count()

    def close(self, timeout):
        self.batcher.close(timeout)
        self.host.shutdown(wait=False, cancel_futures=True)

    # The model side: runs on the batcher's threads.

    def _run_batch(self, key, items):
        """One model call for `items` → one (result, batch start, batch seconds, batch size)
        per item: detections dicts for DETECT_KEY, output dicts for ("predict", ...) keys."""
        start = time.perf_counter()
        if key == DETECT_KEY:
            results = self.model.detect(items)
        elif len(items) == 1:
            results = [self.model.run(key[1], items[0])]
        else:
            results = self._run_merged(key[1], items)
        seconds = time.perf_counter() - start
        return [(result, start, seconds, len(items)) for result in results]

    def _run_merged(self, signature_name, items):
        """Several predict requests in one call, joined and split along the batch axis."""
        sizes = [len(next(iter(item.values()))) for item in items]
        outputs = self.model.run(signature_name, {
            name: np.concatenate([item[name] for item in items]) for name in items[0]})
        if any(len(value) != sum(sizes) for value in outputs.values()):
            raise ValueError("outputs not batched like the inputs")  # the batcher runs each alone
        bounds = np.cumsum([0] + sizes)
        return [{name: value[start:end] for name, value in outputs.items()}
                for start, end in zip(bounds[:-1], bounds[1:])]

    # The request side: coroutines on the event loop.

    async def _on_host(self, function, *args, inline=False):
        """`function(*args)` on a host thread, or right here when `inline`."""
        if inline:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self.host, function, *args)

    @contextlib.contextmanager
    def queue_place(self):
        """Hold a place in the batcher's queue for the block (refusing with 503 before the
        body is read or decoded when there is none) → `submit(key, item)` for `_answer`."""
        try:
            with self.batcher.reserved() as submit:
                yield submit
        except QueueFull as error:
            raise ServingError(api.UNAVAILABLE, "The batch scheduling queue to which this task "
                               f"was submitted is full ({error}; --max-queue "
                               f"{self.options.max_queue})",
                               {"Retry-After": str(RETRY_AFTER_S)}) from error
        except RuntimeError as error:
            raise ServingError(api.UNAVAILABLE, "the server is shutting down") from error

    @staticmethod
    async def _answer(future):
        """Wait for a queued item's (result, start, seconds, size)."""
        try:
            return await asyncio.wrap_future(future)
        except Exception as error:  # noqa: BLE001 - what the model call raised
            raise model_error(error) from error

    async def _read_body(self, request):
        """The request body, refused with 413 as soon as it is known to pass --max-body-mb."""
        limit = self.max_body

        def too_large():
            return ServingError(api.PAYLOAD_TOO_LARGE, f"the request body is larger than "
                                f"--max-body-mb {self.options.max_body_mb:g} ({limit} bytes)")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_large()
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def check_model(self, name, version, label, for_status=False):
        """Raise TF Serving's error unless name/version/label select the served model."""
        if label is not None:
            raise ServingError(api.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
        version = None if version is None else int(version)
        if name != self.options.model_name or version not in (None, self.model.version):
            if for_status:
                raise api.status_not_found(name, None if name != self.options.model_name
                                           else version)
            raise api.servable_not_found(name, version)

    def input_specs(self, signature_name):
        if signature_name not in self.model.signatures:
            raise ServingError(api.INVALID_ARGUMENT, f'Serving signature name: "{signature_name}" '
                               f'not found in signature def')
        return self.model.input_specs(signature_name)

    def check_encoded_images(self, signature_name, tensors):
        """Every string input is an encoded image whose header can be read and whose pixels are
        within --max-image-pixels; checked before the graph decodes any."""
        for name, spec in self.model.input_specs(signature_name).items():
            if spec.dtype != tf.string:
                continue
            for index, data in enumerate(tensors[name].flat):
                try:
                    read_image_size(data, self.options.max_image_pixels,
                                    f"input {name}, item {index}")
                except DataError as error:
                    raise ServingError(api.INVALID_ARGUMENT, str(error)) from error

    def _parse_predict(self, body):
        """A :predict body → (signature name, {input: array}, row format), its encoded images
        checked (`check_encoded_images`)."""
        signature_name, tensors, row_format = api.parse_predict_request(body, self.input_specs)
        self.check_encoded_images(signature_name, tensors)
        return signature_name, tensors, row_format

    def predict_key(self, signature_name, tensors):
        """The batcher's key of a predict request: requests of one key are run in one call,
        joined along the batch axis, which only mergeable signatures allow."""
        sizes = {len(value) if value.ndim else None for value in tensors.values()}
        if self.model.mergeable(signature_name) and len(sizes) == 1 and None not in sizes:
            return ("predict", signature_name, tuple(
                (name, value.dtype.str, value.shape[1:]) for name, value in sorted(tensors.items())))
        return ("predict", signature_name, next(self._unique_keys))

    async def predict(self, request, name, version, label):
        self.check_model(name, version, label)
        with self.queue_place() as submit:
            body = await self._read_body(request)
            signature_name, tensors, row_format = await self._on_host(self._parse_predict, body)
            future = submit(self.predict_key(signature_name, tensors), tensors)
        outputs = (await self._answer(future))[0]
        answer = await self._on_host(
            lambda: api.to_json(api.predict_response(outputs, row_format)))
        return _json_response(answer)

    def _detect_answer(self, image_hw, detections, query, deadline, timing_ms, arrived,
                       modelled):
        """The JSON bytes of a :detect answer, made on a host thread in one go: masks pasted
        and encoded (`detect.describe`), `timing_ms` completed with postprocess and total
        (`arrived` and `modelled`: the request's arrival and the model's end, perf_counter
        seconds)."""
        found = detect.describe(detections, image_hw, self.model, *query, deadline)
        done = time.perf_counter()
        timing_ms.update(postprocess=round((done - modelled) * 1000, 2),
                         total=round((done - arrived) * 1000, 2))
        return api.to_json({"image": {"height": int(image_hw[0]), "width": int(image_hw[1])},
                            "detections": found, "timing_ms": timing_ms})

    async def detect(self, request, name, version, label, deadline):
        self.check_model(name, version, label)
        arrived = time.perf_counter()
        query = detect.parse_query(request.query_params)
        with self.queue_place() as submit:
            body = await self._read_body(request)
            if not body:
                raise ServingError(api.INVALID_ARGUMENT, "the request body is empty: :detect "
                                   "takes the image file itself as the body")
            try:
                height, width = read_image_size(body, self.options.max_image_pixels,
                                                "the request body")
                image = await self._on_host(decode_image, body, self.options.max_image_pixels,
                                            "the request body",
                                            inline=height * width <= INLINE_DECODE_PIXELS)
            except DataError as error:
                raise ServingError(api.INVALID_ARGUMENT, str(error)) from error
            decoded = time.perf_counter()
            future = submit(DETECT_KEY, image)
        detections, batch_start, batch_seconds, batch_size = await self._answer(future)
        timing_ms = {name: round(seconds * 1000, 2) for name, seconds in (
            ("decode", decoded - arrived), ("queue", batch_start - decoded),
            ("model", batch_seconds))}
        timing_ms["batch_size"] = batch_size
        try:
            answer = await self._on_host(self._detect_answer, image.shape[:2], detections,
                                         query, deadline, timing_ms, arrived,
                                         time.perf_counter(),
                                         inline=detect.pasted_pixels(detections, image.shape[:2], *query)
                                         <= INLINE_ANSWER_PIXELS)
        except detect.DeadlinePassed:
            raise asyncio.TimeoutError from None
        return _json_response(answer)

    def status(self, name, version, label):
        self.check_model(name, version, label, for_status=True)
        return _json_response(api.to_json(api.model_status(self.model.version)))

    def metadata(self, name, version, label):
        self.check_model(name, version, label)
        return _json_response(api.to_json(api.model_metadata(
            self.options.model_name, self.model.version, self.model.signature_defs)))

    def _authorized(self, request):
        if self.options.api_key is None:
            return True
        given = request.headers.get("authorization", "")
        expected = f"Bearer {self.options.api_key}"
        return hmac.compare_digest(given.encode(), expected.encode())

    def _unauthorized(self):
        return ServingError(api.UNAUTHENTICATED, "missing or wrong API key: send the header "
                            "'Authorization: Bearer KEY' with the server's --api-key",
                            {"WWW-Authenticate": "Bearer"})

    async def models(self, request):
        """Every /v1/... request: parse the path as TF Serving does, then dispatch."""
        arrived = time.monotonic()
        path, method = request.url.path, request.method
        endpoint = "other"
        try:
            match = (api.METHOD_PATH.fullmatch(path) if method == "POST" else
                     api.STATUS_PATH.fullmatch(path) if method == "GET" else None)
            if match is None:
                raise ServingError(api.INVALID_ARGUMENT, f"Malformed request: {method} {path}")
            name, version, label, verb = match.groups()
            verb = (verb or "status").lower()
            endpoint = verb
            if not name:
                raise ServingError(api.INVALID_ARGUMENT, "Missing model name in request.")
            if verb != "status" and not self._authorized(request):
                raise self._unauthorized()
            if verb == "status":
                response = self.status(name, version, label)
            elif verb == "metadata":
                response = self.metadata(name, version, label)
            elif verb in ("predict", "detect"):
                deadline = arrived + self.options.timeout_s
                work = (self.predict(request, name, version, label) if verb == "predict" else
                        self.detect(request, name, version, label, deadline))
                try:
                    response = await asyncio.wait_for(work, self.options.timeout_s)
                except asyncio.TimeoutError:
                    raise ServingError(api.DEADLINE_EXCEEDED, f"Deadline Exceeded: the request "
                                       f"took more than --timeout-s {self.options.timeout_s:g} s")
            else:
                raise ServingError(api.UNIMPLEMENTED, f"{verb} is not served: the model's "
                                   f"signatures are predict signatures (use :predict)")
        except ServingError as error:
            response = error_response(error)
        except Exception as error:  # noqa: BLE001 - answered, and logged with its stack
            LOG.exception("request %s %s failed", method, path)
            response = error_response(ServingError(api.INTERNAL, f"{type(error).__name__}: {error}"))
        self.metrics.request(endpoint, response.status_code, time.monotonic() - arrived)
        return response

    async def metrics_text(self, request):
        arrived = time.monotonic()
        if self._authorized(request):
            response = Response(self.metrics.text(), media_type=TEXT_CONTENT_TYPE)
        else:
            response = error_response(self._unauthorized())
        self.metrics.request("metrics", response.status_code, time.monotonic() - arrived)
        return response

    async def page(self, request):
        """The browser page, from the package, with the model's name in place of
        MODEL_NAME_MARK; it needs no API key (it holds no data: the requests it makes carry
        the key its user types)."""
        resource = importlib.resources.files("keras_maskrcnn.serving").joinpath(PAGE)
        if not resource.is_file():
            return error_response(ServingError(api.NOT_FOUND, f"no page: {PAGE} is not installed"))
        page = resource.read_text(encoding="utf-8").replace(
            MODEL_NAME_MARK, html.escape(self.options.model_name))
        return Response(page, media_type="text/html; charset=utf-8")


def create_app(model, options, host=DEFAULT_HOST, shutdown_timeout=1.0):
    """The ASGI app serving `model` (a `model.ServedModel`, warmed up) under `options`
    (`options.ServeOptions`). With `options.grpc_port`, TF Serving's gRPC API
    (`grpc_service`) listens on host:port while the app's lifespan runs; when it ends, the gRPC
    server stops (its requests in flight get `shutdown_timeout` seconds), then the batcher."""
    state = _App(model, options)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        grpc_server = None
        if options.grpc_port is not None:
            from keras_maskrcnn.serving.grpc_service import start_grpc_server
            grpc_server = start_grpc_server(state, host, options.grpc_port)
        yield
        # uvicorn has finished the HTTP requests in flight by now.
        if grpc_server is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: grpc_server.stop(shutdown_timeout).wait())
        state.close(timeout=1.0)

    app = Starlette(routes=[
        Route("/", state.page, methods=["GET"]),
        Route("/metrics", state.metrics_text, methods=["GET"]),
        Route("/v1/{rest:path}", state.models, methods=["GET", "POST"]),
    ], lifespan=lifespan)
    app.state.serving = state
    return app

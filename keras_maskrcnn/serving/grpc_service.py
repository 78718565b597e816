"""TF Serving's gRPC API (`tensorflow_serving.apis.PredictionService`): `Predict` and
`GetModelMetadata`, on the same model, queue and errors as the REST API (`app`).

A request runs on one of the gRPC server's threads: it checks the model spec, converts the
input TensorProtos (`tf.make_ndarray`), holds a place in the batcher's queue, waits for its
batch and answers TensorProtos (`tf.make_tensor_proto`). Errors are TF Serving's messages with
the gRPC code of the REST status (`GRPC_CODE_OF_HTTP`); the API key, when the server has one,
is the `authorization: Bearer KEY` metadata.
"""

import concurrent.futures
import hmac
import logging
import time

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, predict_pb2,
                                     prediction_service_pb2_grpc)

from keras_maskrcnn.serving import tf_serving_api as api
from keras_maskrcnn.serving.tf_serving_api import ServingError

LOG = logging.getLogger("keras_maskrcnn.serving")
GRPC_THREADS = 8  # requests in the server at once (each mostly waits for its batch)
SIGNATURE_DEF_FIELD = "signature_def"
GRPC_CODE_OF_HTTP = {
    api.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    api.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    api.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    api.PAYLOAD_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    api.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    api.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    api.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
}


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`Predict` and `GetModelMetadata` over `state`, the app's `_App` (model, batcher,
    options, metrics); the other methods answer UNIMPLEMENTED (the base class)."""

    def __init__(self, state):
        self.state = state

    def Predict(self, request, context):  # noqa: N802 - the proto's name
        return self._answer("grpc_predict", self._predict, request, context)

    def GetModelMetadata(self, request, context):  # noqa: N802 - the proto's name
        return self._answer("grpc_metadata", self._metadata, request, context)

    def _answer(self, endpoint, method, request, context):
        """`method(request, context)`, its ServingError turned into the gRPC status, counted
        in the metrics under `endpoint` (with the REST status it stands for)."""
        arrived = time.monotonic()
        status = 200
        try:
            self._check_key(context)
            return method(request, context)
        except ServingError as error:
            status = error.status
            context.abort(GRPC_CODE_OF_HTTP.get(error.status, grpc.StatusCode.INTERNAL), error.message)
        except Exception as error:  # noqa: BLE001 - answered, and logged with its stack
            LOG.exception("gRPC %s failed", endpoint)
            status = api.INTERNAL
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
        finally:
            self.state.metrics.request(endpoint, status, time.monotonic() - arrived)

    def _check_key(self, context):
        key = self.state.options.api_key
        if key is None:
            return
        given = dict(context.invocation_metadata()).get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            raise ServingError(api.UNAUTHENTICATED, "missing or wrong API key: send the "
                               "metadata 'authorization: Bearer KEY' with the server's --api-key")

    def _check_spec(self, model_spec):
        """The request's ModelSpec → the signature name it selects (raises ServingError)."""
        version = model_spec.version.value if model_spec.HasField("version") else None
        self.state.check_model(model_spec.name, version, model_spec.version_label or None)
        return model_spec.signature_name or api.DEFAULT_SIGNATURE

    def _spec_answer(self, answer_spec, signature_name):
        answer_spec.name = self.state.options.model_name
        answer_spec.version.value = self.state.model.version
        answer_spec.signature_name = signature_name

    def _predict(self, request, context):
        signature_name = self._check_spec(request.model_spec)
        specs = self.state.input_specs(signature_name)
        if set(request.inputs) != set(specs):
            raise ServingError(api.INVALID_ARGUMENT, f"the signature {signature_name!r} takes "
                               f"the inputs {sorted(specs)}, got {sorted(request.inputs)}")
        tensors = {}
        for name, proto in request.inputs.items():
            try:
                value = tf.make_ndarray(proto)
            except (ValueError, TypeError) as error:
                raise ServingError(api.INVALID_ARGUMENT, f"input {name} is not a valid "
                                   f"TensorProto: {error}") from error
            if proto.dtype != specs[name].dtype.as_datatype_enum:
                raise ServingError(api.INVALID_ARGUMENT, f"input {name} is "
                                   f"{tf.dtypes.as_dtype(proto.dtype).name}, the signature "
                                   f"takes {specs[name].dtype.name}")
            tensors[name] = value
        self.state.check_encoded_images(signature_name, tensors)
        with self.state.queue_place() as submit:
            future = submit(self.state.predict_key(signature_name, tensors), tensors)
        remaining = context.time_remaining()
        timeout = self.state.options.timeout_s if remaining is None else min(
            remaining, self.state.options.timeout_s)
        try:
            outputs = future.result(timeout)[0]
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ServingError(api.DEADLINE_EXCEEDED, f"Deadline Exceeded: the request took "
                               f"more than {timeout:g} s") from None
        except Exception as error:  # noqa: BLE001 - what the model call raised
            raise self.state.model_error(error) from error
        answer = predict_pb2.PredictResponse()
        self._spec_answer(answer.model_spec, signature_name)
        wanted = set(request.output_filter) or set(outputs)
        unknown = wanted - set(outputs)
        if unknown:
            raise ServingError(api.INVALID_ARGUMENT, f"output_filter names no output of the "
                               f"signature: {sorted(unknown)}")
        for name in sorted(wanted):
            answer.outputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(outputs[name])))
        return answer

    def _metadata(self, request, context):
        del context
        self._check_spec(request.model_spec)
        fields = set(request.metadata_field)
        if fields != {SIGNATURE_DEF_FIELD}:
            raise ServingError(api.INVALID_ARGUMENT, f"Metadata field(s) {sorted(fields)}: "
                               f"only {SIGNATURE_DEF_FIELD!r} is served")
        answer = get_model_metadata_pb2.GetModelMetadataResponse()
        self._spec_answer(answer.model_spec, "")  # proto3: "" is the field left unset
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in self.state.model.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        answer.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return answer


def start_grpc_server(state, host, port):
    """A started gRPC server of `PredictionService(state)` on host:port, receiving messages up
    to --max-body-mb; stop it with `.stop(grace)`."""
    max_bytes = int(state.options.max_body_mb * (1 << 20))
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(GRPC_THREADS, "serve-grpc"),
                         options=[("grpc.max_receive_message_length", max_bytes)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(state), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise ValueError(f"cannot listen for gRPC on {host}:{port}")
    server.start()
    return server

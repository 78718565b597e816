"""`keras-maskrcnn serve --grpc-port`: TF Serving's gRPC API, driven by tensorflow-serving-api's
own stub (one server for the module)."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, predict_pb2,
                                     prediction_service_pb2_grpc)

import serve_images
from serve_process import MODEL_NAME, free_port, running_server

pytestmark = pytest.mark.slow  # starts a server process: see pytest.ini

API_KEY = "grpc-key"
AUTH = (("authorization", f"Bearer {API_KEY}"),)
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def stub(tiny_saved_model):
    port = free_port()
    with running_server(tiny_saved_model, "--api-key", API_KEY, "--grpc-port", port) as server:
        assert f"gRPC on 127.0.0.1:{port}" in server.log()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _predict_request(signature_name="", model_name=MODEL_NAME, **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def _code(call, *args, **kwargs):
    """The gRPC status code and details `call` fails with."""
    with pytest.raises(grpc.RpcError) as failure:
        call(*args, timeout=TIMEOUT_S, **kwargs)
    return failure.value.code(), failure.value.details()


def test_predict_equals_the_signature_called_directly(stub, tiny_saved_model):
    loaded = tf.saved_model.load(str(tiny_saved_model / "1"))
    encoded = [serve_images.encode(serve_images.picture(48, 64, seed), "PNG") for seed in (1, 2)]
    answer = stub.Predict(_predict_request(images=np.array(encoded, object)), timeout=TIMEOUT_S,
                          metadata=AUTH)
    direct = loaded.signatures["serving_default"](images=tf.constant(encoded))
    assert answer.model_spec.name == MODEL_NAME and answer.model_spec.version.value == 1
    assert answer.model_spec.signature_name == "serving_default"
    assert set(answer.outputs) == set(direct)
    for name, value in direct.items():
        np.testing.assert_array_equal(tf.make_ndarray(answer.outputs[name]), value.numpy())
    # uint8 pixels on serve_images, the outputs filtered.
    image = serve_images.picture(40, 56, 4)[None]
    request = _predict_request("serve_images", images=image)
    request.output_filter.append("detection_scores")
    answer = stub.Predict(request, timeout=TIMEOUT_S, metadata=AUTH)
    assert set(answer.outputs) == {"detection_scores"}
    np.testing.assert_array_equal(
        tf.make_ndarray(answer.outputs["detection_scores"]),
        loaded.signatures["serve_images"](images=tf.constant(image))["detection_scores"].numpy())


def test_metadata_lists_the_signatures(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL_NAME
    request.metadata_field.append("signature_def")
    answer = stub.GetModelMetadata(request, timeout=TIMEOUT_S, metadata=AUTH)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(signatures)
    assert {"serving_default", "serve_images", "serve_padded"} <= set(signatures.signature_def)
    images = signatures.signature_def["serving_default"].inputs["images"]
    assert images.dtype == tf.string.as_datatype_enum
    assert answer.model_spec.version.value == 1


def test_bad_requests_get_tf_servings_codes_and_the_next_is_answered(stub):
    good = _predict_request("serve_images", images=serve_images.picture(32, 32, 5)[None])
    assert _code(stub.Predict, good)[0] == grpc.StatusCode.UNAUTHENTICATED  # no key
    assert _code(stub.Predict, good, metadata=(("authorization", "Bearer wrong"),))[0] == \
        grpc.StatusCode.UNAUTHENTICATED
    code, details = _code(stub.Predict, _predict_request(model_name="other", images=np.array(
        [b"x"], object)), metadata=AUTH)
    assert code == grpc.StatusCode.NOT_FOUND and "Servable not found" in details
    code, details = _code(stub.Predict, _predict_request("nope", images=np.array([b"x"], object)),
                          metadata=AUTH)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "nope" in details
    code, details = _code(stub.Predict, _predict_request(images=np.array([b"not an image"], object)),
                          metadata=AUTH)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "cannot read image" in details
    code, _ = _code(stub.Predict, _predict_request("serve_images", images=np.zeros(
        (1, 8, 8, 3), np.float32)), metadata=AUTH)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = _code(stub.Predict, _predict_request(pixels=np.array([b"x"], object)), metadata=AUTH)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    broken = _predict_request("serve_images", images=np.zeros((1, 8, 8, 3), np.uint8))
    broken.inputs["images"].tensor_content = b"\0" * 5  # 5 bytes for 192 pixels
    code, details = _code(stub.Predict, broken, metadata=AUTH)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "TensorProto" in details
    answer = stub.Predict(good, timeout=TIMEOUT_S, metadata=AUTH)
    assert "detection_boxes" in answer.outputs

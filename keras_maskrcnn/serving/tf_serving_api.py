"""TF Serving's REST API (tensorflow/serving g3doc/api_rest.md): its paths, the JSON of predict
requests and answers, of model status and metadata, and its errors with their HTTP codes and
messages (http_rest_api_handler.cc, json_tensor.cc, get_model_status_impl.cc).

Shapes: B the batch of a predict request (the first axis of every input and output).
"""

import base64
import binascii
import json
import re

import numpy as np
from google.protobuf import json_format

# TF Serving's path patterns (http_rest_api_util.cc), with `detect` beside its methods.
METHOD_PATH = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                         r":(classify|regress|predict|detect)")
STATUS_PATH = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                         r"(?:\/(metadata))?")
DEFAULT_SIGNATURE = "serving_default"
BYTES_SUFFIX = "_bytes"  # string outputs so named are binary: answered as {"b64": ...}

# absl status codes → HTTP, as TF Serving's http_server.cc maps them.
INVALID_ARGUMENT = 400
FAILED_PRECONDITION = 400
UNAUTHENTICATED = 401
NOT_FOUND = 404
PAYLOAD_TOO_LARGE = 413  # the HTTP layer's own: TF Serving has no body limit of its own
INTERNAL = 500
UNIMPLEMENTED = 501
UNAVAILABLE = 503
DEADLINE_EXCEEDED = 504


class ServingError(Exception):
    """An error answered as {"error": message} with HTTP `status` (and `headers`)."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def to_json(value):
    """JSON text as TF Serving writes it: NaN and ±Infinity as bare tokens."""
    return json.dumps(value, allow_nan=True, separators=(",", ":"))


def servable_not_found(name, version):
    """TF Serving's 404 for a model or version it does not serve (basic_manager.cc)."""
    request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
    return ServingError(NOT_FOUND, f"Servable not found for request: {request}")


def status_not_found(name, version):
    """TF Serving's 404 of the status endpoint (get_model_status_impl.cc)."""
    if version is None:
        return ServingError(NOT_FOUND, f"Could not find any versions of model {name}")
    return ServingError(NOT_FOUND, f"Could not find version {version} of model {name}")


def model_status(version, state="AVAILABLE"):
    """A GetModelStatusResponse as JSON: the one version served."""
    return {"model_version_status": [{"version": str(version), "state": state,
                                      "status": {"error_code": "OK", "error_message": ""}}]}


def model_metadata(name, version, signature_defs):
    """A GetModelMetadataResponse as TF Serving writes it: `signature_defs` maps names to
    SignatureDef protos (every one of the MetaGraphDef, as TF Serving lists them)."""
    signatures = {key: json_format.MessageToDict(
        value, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        for key, value in signature_defs.items()}
    return {"model_spec": {"name": name, "signature_name": "", "version": str(version)},
            "metadata": {"signature_def": {"signature_def": signatures}}}


def _format_error(document, problem):
    return ServingError(INVALID_ARGUMENT, f"JSON Value: {to_json(document)} {problem}")


def parse_predict_request(body, input_specs_of):
    """A predict request's body → (signature name, {input name: numpy array}, row format?).

    `input_specs_of(signature_name)` gives the signature's {name: tf.TensorSpec} or raises
    ServingError. Strings come back as numpy object arrays of bytes ({"b64": ...} decoded).
    Raises ServingError (400) with TF Serving's messages for malformed requests.
    """
    if not body:
        raise ServingError(INVALID_ARGUMENT, "JSON Parse error: The document is empty")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ServingError(INVALID_ARGUMENT, f"JSON Parse error: {error}") from error
    if not isinstance(document, dict):
        raise _format_error(document, "Is not object")
    signature_name = document.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise _format_error(document, "not formatted correctly. 'signature_name' key must be "
                            "a string value.")
    signature_name = signature_name or DEFAULT_SIGNATURE
    specs = input_specs_of(signature_name)
    if "instances" in document and "inputs" in document:
        raise _format_error(document, "Not formatted correctly expecting only one of 'inputs' "
                            "or 'instances' keys to exist ")
    if "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise _format_error(document, "Expecting 'instances' to be an list/array")
        if not instances:
            raise _format_error(document, "No values in 'instances' array")
        return signature_name, _tensors_from_instances(instances, specs), True
    if "inputs" in document:
        return signature_name, _tensors_from_inputs(document["inputs"], specs), False
    raise ServingError(INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key")


def _is_b64(value):
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _is_named_object(value):
    return isinstance(value, dict) and not _is_b64(value)


def _tensors_from_instances(instances, specs):
    """The row format: one element per batch item, objects keyed by input name when the
    signature has several inputs."""
    if not _is_named_object(instances[0]) and len(specs) > 1:
        raise ServingError(INVALID_ARGUMENT, "instances is a plain list, but expecting list of "
                           "objects as multiple input tensors required as per tensorinfo_map")
    named = _is_named_object(instances[0])
    columns = {name: [] for name in specs}
    for index, item in enumerate(instances):
        if named != _is_named_object(item):
            raise ServingError(INVALID_ARGUMENT, f"Expecting {'object' if named else 'value/list'} "
                               f"but got {'list' if named else 'object'} at item {index} of input list")
        values = item if named else {next(iter(specs)): item}
        if set(values) != set(specs):
            raise ServingError(INVALID_ARGUMENT, f"Failed to process element: {index} of "
                               f"'instances' list. JSON object: {to_json(item)} keys must be "
                               f"equal to: {','.join(sorted(specs))}")
        for name, value in values.items():
            columns[name].append(value)
    return {name: _to_array(name, column, specs[name]) for name, column in columns.items()}


def _tensors_from_inputs(inputs, specs):
    """The columnar format: the tensor itself for one input, an object of them for several."""
    if not _is_named_object(inputs):
        if len(specs) > 1:
            raise ServingError(INVALID_ARGUMENT, "inputs is a plain value/list, but expecting an "
                               "object as multiple input tensors required as per tensorinfo_map")
        inputs = {next(iter(specs)): inputs}
    extra, missing = set(inputs) - set(specs), set(specs) - set(inputs)
    if missing:
        raise ServingError(INVALID_ARGUMENT, f"Missing named input: {sorted(missing)[0]} in "
                           f"'inputs' object.")
    if extra:
        raise ServingError(INVALID_ARGUMENT, f"input size does not match signature: "
                           f"{len(inputs)}!={len(specs)} len({{{','.join(sorted(inputs))}}}) != "
                           f"len({{{','.join(sorted(specs))}}}). Sent extra: "
                           f"{{{','.join(sorted(extra))}}}. Missing but required: {{}}.")
    return {name: _to_array(name, inputs[name], spec) for name, spec in specs.items()}


def _decode_strings(value):
    """Nested lists of str or {"b64": str} → the same nesting of bytes."""
    if isinstance(value, list):
        return [_decode_strings(item) for item in value]
    if _is_b64(value):
        if not isinstance(value["b64"], str):
            raise _format_error(value, "not formatted correctly for base64 data")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as error:
            raise ServingError(INVALID_ARGUMENT, "Unable to base64 decode") from error
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ServingError(INVALID_ARGUMENT, f"JSON Value: {to_json(value)} Type: "
                       f"{type(value).__name__} is not of expected type: string")


def _to_array(name, value, spec):
    """JSON value → numpy array of `spec`'s dtype, checked against its shape."""
    try:
        if spec.dtype.name == "string":
            array = np.array(_decode_strings(value), dtype=object)
            if array.dtype != object or any(not isinstance(item, bytes) for item in array.flat):
                raise ValueError("strings nested to different depths")
        else:
            if _contains_object(value):
                raise ServingError(INVALID_ARGUMENT, f"input {name}: JSON objects are only for "
                                   f"binary strings, but it takes {spec.dtype.name}")
            array = np.array(value, dtype=spec.dtype.as_numpy_dtype)
    except (ValueError, OverflowError, TypeError) as error:
        raise ServingError(INVALID_ARGUMENT, f"input {name}: cannot be read as a "
                           f"{spec.dtype.name} tensor ({error})") from error
    if not spec.shape.is_compatible_with(array.shape):
        raise ServingError(INVALID_ARGUMENT, f"input {name} has shape {list(array.shape)}, but "
                           f"the signature takes {spec.shape}")
    return array


def _contains_object(value):
    if isinstance(value, list):
        return any(_contains_object(item) for item in value)
    return isinstance(value, dict)


def _jsonable(name, array):
    """A numpy output → nested lists; strings as text, or {"b64": ...} for *_bytes outputs."""
    array = np.asarray(array)
    if array.dtype != object:
        return array.tolist()
    binary = name.endswith(BYTES_SUFFIX)
    encode = ((lambda item: {"b64": base64.b64encode(item).decode("ascii")}) if binary
              else (lambda item: item.decode("utf-8", "replace")))
    return np.vectorize(encode, otypes=[object])(array).tolist()


def predict_response(outputs, row_format):
    """{name: numpy array [B, ...]} → {"predictions": ...} (row) or {"outputs": ...}
    (columnar); a single output is given without its name, as TF Serving does."""
    names = sorted(outputs)
    if not row_format:
        if len(names) == 1:
            return {"outputs": _jsonable(names[0], outputs[names[0]])}
        return {"outputs": {name: _jsonable(name, outputs[name]) for name in names}}
    sizes = {name: np.shape(outputs[name])[0] if np.ndim(outputs[name]) else None for name in names}
    for name in names:
        if sizes[name] is None:
            raise ServingError(INVALID_ARGUMENT, f"Tensor name: {name} has no shape information ")
        if sizes[name] != sizes[names[0]]:
            raise ServingError(INVALID_ARGUMENT, f"Tensor name: {name} has inconsistent batch "
                               f"size: {sizes[name]} expecting: {sizes[names[0]]}")
    columns = {name: _jsonable(name, outputs[name]) for name in names}
    if len(names) == 1:
        return {"predictions": columns[names[0]]}
    return {"predictions": [{name: columns[name][index] for name in names}
                            for index in range(sizes[names[0]])]}

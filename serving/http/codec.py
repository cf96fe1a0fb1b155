"""The Open Inference Protocol's HTTP/REST bodies <-> its gRPC messages.

The REST binding answers through the same servicer as gRPC (:mod:`serving.http.app`), so
a JSON request becomes the ``ModelInferRequest`` a gRPC client would have sent, and the
``ModelInferResponse`` becomes JSON. What the two protocols do not share is handled here:

* tensor ``data`` as JSON, flat or nested (row-major), coerced into the typed
  ``contents`` field of the datatype (protobuf checks every element's type and range);
  JSON has no NaN, so a ``null`` in an FP32/FP64 tensor is a missing value (NaN), and a
  NaN in an output (an explanation of a FALLBACK row) is answered ``null``;
* the binary tensor data extension (Triton's, which tritonclient's HTTP client uses by
  default): a body of ``Inference-Header-Content-Length`` bytes of JSON followed by the
  inputs whose ``parameters.binary_data_size`` says how many bytes each takes, in
  ``raw_input_contents``' encoding (little-endian; ``BYTES`` elements length-prefixed);
  outputs come back binary when the request asks (``binary_data_output``, or an output's
  ``binary_data``);
* ``parameters`` as JSON scalars (bool, integer, number, string).

Every mistake is an :class:`InvalidInput` naming the field (``inputs[0].data``, ...).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from serving.dataplane.errors import InvalidInput
from serving.grpc import converters
from serving.stubs.inference import grpc_predict_v2_pb2 as v2

#: The binary tensor data extension's header and parameters.
HEADER_LENGTH = "inference-header-content-length"
_BINARY_SIZE = "binary_data_size"
_BINARY_OUTPUT = "binary_data_output"
_BINARY = "binary_data"
#: Request parameters the codec consumes (never passed on to the model's call).
_TRANSPORT = {_BINARY_SIZE, _BINARY_OUTPUT, _BINARY}


def _where(field: str, exc: Exception) -> InvalidInput:
    return InvalidInput(f"{field}: {exc}")


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{field}: must be a JSON object, got {_kind(value)}.")
    return value


def _kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number", type(None): "null"}  # fmt: skip
    return kinds.get(type(value), type(value).__name__)


def parse_json(body: bytes, field: str = "request body") -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{field}: not valid JSON ({exc}).") from None
    except RecursionError:
        raise InvalidInput(f"{field}: JSON nested too deeply.") from None


def _parameters(value: Any, field: str, into: Any) -> dict[str, Any]:
    """Copy JSON ``parameters`` into a protobuf ``map<string, InferParameter>`` (transport
    parameters left out); returns them as given."""
    params = _object(value, field) if value is not None else {}
    for key, item in params.items():
        if key in _TRANSPORT:
            continue
        param = into[key]
        if isinstance(item, bool):
            param.bool_param = item
        elif isinstance(item, int) and -(2**63) <= item < 2**63:
            param.int64_param = item
        elif isinstance(item, float):
            param.double_param = item
        elif isinstance(item, str):
            param.string_param = item
        else:
            raise InvalidInput(
                f"{field}[{key!r}]: a parameter is a string, number or boolean, got {_kind(item)}."
            )
    return params


def _flat(data: Any, field: str) -> list[Any]:
    """Row-major elements of ``data``, given flat or nested."""
    if not isinstance(data, list):
        raise InvalidInput(f"{field}: must be an array, got {_kind(data)}.")
    if not any(isinstance(x, list) for x in data):
        return data
    out: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:  # iterative: a deeply nested array is not a recursion error
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _typed(tensor: Any, datatype: str, values: list[Any], field: str) -> None:
    """Put JSON ``values`` in ``tensor.contents``: protobuf refuses a wrong type or range."""
    if datatype not in converters.CONTENTS:
        return  # an unknown datatype is named by the servicer's own check
    target = getattr(tensor.contents, converters.CONTENTS[datatype])
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in values):
            bad = next(v for v in values if not isinstance(v, str))
            raise InvalidInput(f"{field}: BYTES elements are strings, got {_kind(bad)}.")
        target.extend(v.encode() for v in values)
        return
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in values):
            bad = next(v for v in values if not isinstance(v, bool))
            raise InvalidInput(f"{field}: BOOL elements are true or false, got {_kind(bad)}.")
    elif datatype.startswith("FP") and None in values:
        # JSON has no NaN: a missing number is null (what a client sends for a feature
        # without a value in plain model serving).
        values = [math.nan if v is None else v for v in values]
        return _typed(tensor, datatype, values, field)
    elif any(isinstance(v, bool | str) or v is None for v in values):
        bad = next(v for v in values if isinstance(v, bool | str) or v is None)
        raise InvalidInput(f"{field}: {datatype} elements are numbers, got {_kind(bad)}.")
    elif not datatype.startswith("FP") and any(isinstance(v, float) for v in values):
        bad = next(v for v in values if isinstance(v, float))
        raise InvalidInput(f"{field}: {datatype} elements are integers, got {bad!r}.")
    try:
        target.extend(values)
    except (TypeError, ValueError) as exc:
        raise _where(field, exc) from None


def _raw(tensor: Any, datatype: str, values: list[Any], field: str) -> bytes:
    """JSON ``values`` in ``raw_input_contents``' encoding (a request mixing binary and
    JSON inputs sends them all raw, as the protocol's messages require)."""
    scratch = v2.ModelInferRequest.InferInputTensor()
    _typed(scratch, datatype, values, field)
    if datatype not in converters.CONTENTS:
        return b""
    typed = list(getattr(scratch.contents, converters.CONTENTS[datatype]))
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in typed)
    try:
        return np.asarray(typed, dtype=converters.NUMPY[datatype]).tobytes()
    except OverflowError as exc:
        raise _where(field, exc) from None


def infer_request(
    body: bytes, header_length: str | None, name: str, version: str
) -> tuple[v2.ModelInferRequest, set[str] | None]:
    """The ``ModelInferRequest`` of a REST body (JSON, or JSON and binary tensors), and
    the outputs to answer in binary (``None``: every output)."""
    blob = b""
    if header_length is not None:
        try:
            json_size = int(header_length)
        except ValueError:
            json_size = -1
        if not 0 <= json_size <= len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length: {header_length!r} is not a length within "
                f"the body's {len(body)} bytes."
            )
        body, blob = body[:json_size], body[json_size:]
    doc = _object(parse_json(body), "request body")
    request = v2.ModelInferRequest(model_name=name, model_version=version)
    if "id" in doc:
        if not isinstance(doc["id"], str):
            raise InvalidInput(f"id: must be a string, got {_kind(doc['id'])}.")
        request.id = doc["id"]
    params = _parameters(doc.get("parameters"), "parameters", request.parameters)
    inputs = doc.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidInput(f"inputs: must be an array of tensors, got {_kind(inputs)}.")
    specs = [_object(t, f"inputs[{i}]") for i, t in enumerate(inputs)]
    sizes = [_binary_size(t, f"inputs[{i}]") for i, t in enumerate(specs)]
    if sum(s or 0 for s in sizes) != len(blob):
        raise InvalidInput(
            f"binary data: the inputs' binary_data_size add up to {sum(s or 0 for s in sizes)} "
            f"bytes, the body holds {len(blob)} after the JSON."
        )
    raw = any(s is not None for s in sizes)
    pos = 0
    for i, (spec, size) in enumerate(zip(specs, sizes, strict=True)):
        field = f"inputs[{i}]"
        tensor = request.inputs.add()
        for key, kind in (("name", str), ("datatype", str)):
            if not isinstance(spec.get(key), kind):
                raise InvalidInput(f"{field}.{key}: required, a string.")
        tensor.name, tensor.datatype = spec["name"], spec["datatype"]
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**63 for d in shape
        ):
            raise InvalidInput(f"{field}.shape: required, an array of non-negative integers.")
        tensor.shape.extend(shape)
        _parameters(spec.get("parameters"), f"{field}.parameters", tensor.parameters)
        if size is not None:
            if "data" in spec:
                raise InvalidInput(f"{field}: both data and binary_data_size; send one.")
            request.raw_input_contents.append(blob[pos : pos + size])
            pos += size
            continue
        if "data" not in spec:
            raise InvalidInput(f"{field}.data: required (or binary_data_size).")
        values = _flat(spec["data"], f"{field}.data")
        if raw:
            request.raw_input_contents.append(_raw(tensor, tensor.datatype, values, field))
        else:
            _typed(tensor, tensor.datatype, values, f"{field}.data")
    binary = _binary_outputs(doc, params)
    for spec in doc.get("outputs") or []:
        request.outputs.add(name=spec["name"])
    return request, binary


def _binary_size(spec: dict[str, Any], field: str) -> int | None:
    params = spec.get("parameters")
    if not isinstance(params, dict) or _BINARY_SIZE not in params:
        return None
    size = params[_BINARY_SIZE]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(f"{field}.parameters.binary_data_size: a non-negative integer.")
    return size


def _binary_outputs(doc: dict[str, Any], params: dict[str, Any]) -> set[str] | None:
    """The requested outputs (checked) that go back binary (``None``: all of them)."""
    everything = params.get(_BINARY_OUTPUT) is True
    wanted = doc.get("outputs")
    if wanted is None:
        return None if everything else set()
    if not isinstance(wanted, list):
        raise InvalidInput(f"outputs: must be an array, got {_kind(wanted)}.")
    binary: set[str] = set()
    for i, spec in enumerate(wanted):
        spec = _object(spec, f"outputs[{i}]")
        if not isinstance(spec.get("name"), str):
            raise InvalidInput(f"outputs[{i}].name: required, a string.")
        out_params = spec.get("parameters") or {}
        _object(out_params, f"outputs[{i}].parameters")
        if everything or out_params.get(_BINARY) is True:
            binary.add(spec["name"])
    return binary


def infer_response(
    response: v2.ModelInferResponse, binary: set[str] | None
) -> tuple[bytes, int | None]:
    """The REST body of a ``ModelInferResponse``, and the JSON part's length when binary
    outputs follow it (for the ``Inference-Header-Content-Length`` header)."""
    raw = list(response.raw_output_contents)
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for i, tensor in enumerate(response.outputs):
        out: dict[str, Any] = {
            "name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)
        }  # fmt: skip
        as_binary = binary is None or tensor.name in binary
        if as_binary:
            blob = raw[i] if raw else _encode(tensor)
            out["parameters"] = {_BINARY_SIZE: len(blob)}
            blobs.append(blob)
        else:
            out["data"] = _decode(raw[i], tensor.datatype) if raw else _values(tensor)
        outputs.append(out)
    doc: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version:
        doc["model_version"] = response.model_version
    doc["id"] = response.id
    doc["outputs"] = outputs
    head = json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def _values(tensor: Any) -> list[Any]:
    values = list(getattr(tensor.contents, converters.CONTENTS[tensor.datatype]))
    if tensor.datatype == "BYTES":
        return [v.decode() for v in values]
    return _strict(values, tensor.datatype)


def _decode(blob: bytes, datatype: str) -> list[Any]:
    if datatype == "BYTES":
        return [b.decode() for b in converters.split_bytes(blob, "output")]
    return _strict(np.frombuffer(blob, dtype=converters.NUMPY[datatype]).tolist(), datatype)


def _strict(values: list[Any], datatype: str) -> list[Any]:
    """Numbers as strict JSON holds them: NaN (an explanation of a FALLBACK row) is null."""
    if datatype.startswith("FP"):
        return [v if math.isfinite(v) else None for v in values]
    return values


def _encode(tensor: Any) -> bytes:
    values = list(getattr(tensor.contents, converters.CONTENTS[tensor.datatype]))
    if tensor.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in values)
    return np.asarray(values, dtype=converters.NUMPY[tensor.datatype]).tobytes()


def message_json(message: Any) -> bytes:
    """A metadata or health response as the REST binding's JSON (field names as the
    protocol writes them, int64 shapes as numbers)."""
    from google.protobuf.json_format import MessageToDict

    doc = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    for key in ("inputs", "outputs"):
        for tensor in doc.get(key, []):
            tensor["shape"] = [int(d) for d in tensor.get("shape", [])]
    return json.dumps(doc, separators=(",", ":")).encode()

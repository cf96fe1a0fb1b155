"""Protobuf <-> predictor types, for parity's API and the Open Inference Protocol.

parity.v1: ``Value`` oneofs to Python scalars and back.

KServe V2 (``inference``): input tensors, typed (``contents``) or raw
(``raw_input_contents``: little-endian fixed-width values; ``BYTES`` elements
each prefixed by a 4-byte little-endian length), become columns; output
tensors go back in the encoding the request used. numpy does the byte work.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from serving.dataplane.errors import InvalidInput
from serving.stubs.inference import grpc_predict_v2_pb2 as v2
from serving.stubs.parity.v1 import prediction_pb2 as pb

# --------------------------------------------------------------- parity.v1


def from_value(value: pb.Value) -> Any:
    kind = value.WhichOneof("kind")
    return None if kind is None else getattr(value, kind)


def to_value(value: Any) -> pb.Value:
    if value is None:
        return pb.Value()
    if isinstance(value, bool | np.bool_):
        return pb.Value(bool_value=bool(value))
    if isinstance(value, int | np.integer):
        return pb.Value(int64_value=int(value))
    if isinstance(value, float | np.floating):
        return pb.Value(double_value=float(value)) if not np.isnan(value) else pb.Value()
    if isinstance(value, bytes):
        return pb.Value(bytes_value=value)
    return pb.Value(string_value=str(value))


# --------------------------------------------------------------- KServe V2

NUMPY = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

#: Datatypes whose typed contents field is wider than they are: (min, max).
_NARROW = {"INT8": (-(2**7), 2**7 - 1), "INT16": (-(2**15), 2**15 - 1), "UINT8": (0, 2**8 - 1),
           "UINT16": (0, 2**16 - 1)}  # fmt: skip


def _rows(tensor: Any) -> int:
    shape = list(tensor.shape)
    if not shape or any(d < 0 for d in shape):
        raise InvalidInput(f"inputs[{tensor.name!r}].shape: must be [N] or [N, 1], got {shape}.")
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise InvalidInput(
            f"inputs[{tensor.name!r}].shape: one value per row, so [N] or [N, 1]; got {shape}."
        )
    return int(shape[0])


def split_bytes(raw: bytes, name: str) -> list[bytes]:
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise InvalidInput(f"raw_input_contents[{name!r}]: truncated BYTES length prefix.")
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + size > len(raw):
            raise InvalidInput(f"raw_input_contents[{name!r}]: BYTES element past the end.")
        out.append(raw[pos : pos + size])
        pos += size
    return out


def decode_inputs(request: v2.ModelInferRequest) -> tuple[dict[str, list[Any]], int, bool]:
    """Columns by tensor name, the row count, and whether the request used raw contents."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs."
        )
    if not request.inputs:
        raise InvalidInput("inputs: at least one input tensor is required.")
    columns: dict[str, list[Any]] = {}
    rows: int | None = None
    for i, tensor in enumerate(request.inputs):
        name, datatype = tensor.name, tensor.datatype
        if not name:
            raise InvalidInput(f"inputs[{i}].name: required.")
        if name in columns:
            raise InvalidInput(f"inputs[{name!r}]: given twice.")
        if datatype not in CONTENTS:
            raise InvalidInput(
                f"inputs[{name!r}].datatype: {datatype!r} is not a V2 datatype "
                f"({', '.join(CONTENTS)})."
            )
        n = _rows(tensor)
        values: list[Any]
        if raw:
            if tensor.contents.ListFields():
                raise InvalidInput(
                    f"inputs[{name!r}].contents: set, and raw_input_contents too; "
                    "send each input one way."
                )
            if datatype == "BYTES":
                values = split_bytes(raw[i], name)
            else:
                dtype = NUMPY[datatype]
                if len(raw[i]) % dtype.itemsize:
                    raise InvalidInput(
                        f"raw_input_contents[{name!r}]: {len(raw[i])} bytes is not a whole "
                        f"number of {datatype} values."
                    )
                array = np.frombuffer(raw[i], dtype=dtype)
                if datatype == "BOOL" and array.view(np.uint8).max(initial=0) > 1:
                    raise InvalidInput(f"raw_input_contents[{name!r}]: BOOL bytes are 0 or 1.")
                values = array.tolist()
        else:
            values = list(getattr(tensor.contents, CONTENTS[datatype]))
        if len(values) != n:
            raise InvalidInput(
                f"inputs[{name!r}]: shape says {n} values, the contents hold {len(values)}."
            )
        if datatype == "BYTES":
            try:
                values = [v.decode() for v in values]
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"inputs[{name!r}]: BYTES must be UTF-8 text: {exc}.") from exc
        elif datatype.startswith("FP"):
            values = [float(v) for v in values]
        elif datatype != "BOOL":
            values = [int(v) for v in values]
            if datatype in _NARROW:
                low, high = _NARROW[datatype]
                bad = next((v for v in values if not low <= v <= high), None)
                if bad is not None:
                    raise InvalidInput(
                        f"inputs[{name!r}]: {bad} is outside the range of {datatype} "
                        f"[{low}, {high}]."
                    )
        if rows is not None and n != rows:
            raise InvalidInput(f"inputs[{name!r}]: {n} rows, other inputs have {rows}.")
        rows = n
        columns[name] = values
    return columns, rows or 0, bool(raw)


#: An output tensor: (name, datatype, values) of shape [len(values)], or with its shape.
Output = tuple[str, str, list[Any]] | tuple[str, str, list[Any], list[int]]


def encode_outputs(response: v2.ModelInferResponse, outputs: list[Output], raw: bool) -> None:
    """Append output tensors (name, datatype, row-major values[, shape]), raw or typed like
    the request."""
    for output in outputs:
        name, datatype, values = output[0], output[1], output[2]
        shape = output[3] if len(output) == 4 else [len(values)]
        tensor = response.outputs.add(name=name, datatype=datatype, shape=shape)
        if raw:
            if datatype == "BYTES":
                blob = b"".join(
                    struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in values)
                )
            else:
                blob = np.asarray(values, dtype=NUMPY[datatype]).tobytes()
            response.raw_output_contents.append(blob)
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(str(v).encode() for v in values)
        else:
            getattr(tensor.contents, CONTENTS[datatype]).extend(values)


#: Feast type -> V2 datatype of a model input.
V2_DATATYPE = {
    "Int64": "INT64",
    "Int32": "INT32",
    "Float64": "FP64",
    "Float32": "FP32",
    "String": "BYTES",
    "Bool": "BOOL",
    "Bytes": "BYTES",
    "INT64": "INT64",
    "INT32": "INT32",
    "DOUBLE": "FP64",
    "FLOAT": "FP32",
    "STRING": "BYTES",
    "BYTES": "BYTES",
    "BOOL": "BOOL",
}


def bool_parameter(parameters: Any, name: str) -> bool:
    """A boolean request parameter (``bool_param``, or the string "true"/"false"); absent: False."""
    if name not in parameters:
        return False
    param = parameters[name]
    which = param.WhichOneof("parameter_choice")
    if which == "bool_param":
        return bool(param.bool_param)
    if which == "string_param" and param.string_param.lower() in ("true", "false"):
        return bool(param.string_param.lower() == "true")
    raise InvalidInput(f"parameters[{name!r}]: must be a boolean (bool_param), got {which}.")

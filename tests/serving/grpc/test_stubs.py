"""The committed gRPC stubs in serving/stubs/ match proto/ and the published specs."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message

from serving.stubs.inference import grpc_predict_v2_pb2 as v2
from serving.stubs.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from serving.stubs.parity.v1 import prediction_pb2 as pb
from serving.stubs.parity.v1 import prediction_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "generate-stubs"


def test_committed_stubs_match_regenerated() -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        [str(SCRIPT), "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, (
        f"scripts/generate-stubs --check exited {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )


@pytest.mark.parametrize(
    ("descriptor", "full_name", "methods"),
    [
        (
            pb.DESCRIPTOR,
            "parity.v1.PredictionService",
            ["Predict", "GetModelInfo", "ReportOutcome"],
        ),
        (
            v2.DESCRIPTOR,
            "inference.GRPCInferenceService",
            [
                "ServerLive",
                "ServerReady",
                "ModelReady",
                "ServerMetadata",
                "ModelMetadata",
                "ModelInfer",
            ],
        ),
    ],
)
def test_service_methods(descriptor: FileDescriptor, full_name: str, methods: list[str]) -> None:
    service = descriptor.services_by_name[full_name.rsplit(".", 1)[1]]
    assert service.full_name == full_name
    assert [m.name for m in service.methods] == methods


def test_grpc_modules_expose_stub_and_servicer() -> None:
    assert hasattr(pb_grpc, "PredictionServiceStub")
    assert hasattr(pb_grpc, "add_PredictionServiceServicer_to_server")
    assert hasattr(v2_grpc, "GRPCInferenceServiceStub")
    assert hasattr(v2_grpc, "add_GRPCInferenceServiceServicer_to_server")


def test_model_infer_request_roundtrip_typed_contents() -> None:
    req = v2.ModelInferRequest(model_name="fraud", model_version="3", id="req-1")
    req.parameters["priority"].int64_param = 2
    req.parameters["ratio"].double_param = 0.5
    tensor = req.inputs.add(name="input__0", datatype="FP32", shape=[2, 2])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.5, -4.0])
    ids = req.inputs.add(name="ids", datatype="INT64", shape=[2])
    ids.contents.int64_contents.extend([7, 2**40])
    names = req.inputs.add(name="names", datatype="BYTES", shape=[1])
    names.contents.bytes_contents.append(b"abc")
    req.outputs.add(name="output__0")

    back = v2.ModelInferRequest.FromString(req.SerializeToString())
    assert back == req
    assert back.parameters["priority"].WhichOneof("parameter_choice") == "int64_param"
    assert back.parameters["ratio"].double_param == 0.5
    assert list(back.inputs[0].contents.fp32_contents) == [1.0, 2.0, 3.5, -4.0]
    assert list(back.inputs[1].contents.int64_contents) == [7, 2**40]
    assert list(back.inputs[2].contents.bytes_contents) == [b"abc"]
    assert back.outputs[0].name == "output__0"
    assert not back.raw_input_contents


def test_model_infer_request_roundtrip_raw_contents() -> None:
    raw = struct.pack("<2f", 1.5, -2.0)  # little-endian FP32, row-major
    req = v2.ModelInferRequest(
        model_name="fraud",
        inputs=[v2.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 2])],
        raw_input_contents=[raw],
    )
    back = v2.ModelInferRequest.FromString(req.SerializeToString())
    assert back == req
    assert list(back.raw_input_contents) == [raw]
    assert not back.inputs[0].HasField("contents")


def _numbers(message: type[Message]) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}


def test_open_inference_protocol_field_numbers() -> None:
    assert _numbers(v2.ModelInferRequest) == {
        "model_name": 1,
        "model_version": 2,
        "id": 3,
        "parameters": 4,
        "inputs": 5,
        "outputs": 6,
        "raw_input_contents": 7,
    }
    assert _numbers(v2.ModelInferRequest.InferInputTensor) == {
        "name": 1,
        "datatype": 2,
        "shape": 3,
        "parameters": 4,
        "contents": 5,
    }
    assert _numbers(v2.ModelInferResponse) == {
        "model_name": 1,
        "model_version": 2,
        "id": 3,
        "parameters": 4,
        "outputs": 5,
        "raw_output_contents": 6,
    }
    assert _numbers(v2.InferParameter) == {
        "bool_param": 1,
        "int64_param": 2,
        "string_param": 3,
        "double_param": 4,
        "uint64_param": 5,
    }
    assert _numbers(v2.InferTensorContents) == {
        "bool_contents": 1,
        "int_contents": 2,
        "int64_contents": 3,
        "uint_contents": 4,
        "uint64_contents": 5,
        "fp32_contents": 6,
        "fp64_contents": 7,
        "bytes_contents": 8,
    }


def test_prediction_decision_enum() -> None:
    assert dict(pb.Decision.items()) == {
        "DECISION_UNSPECIFIED": 0,
        "ACCEPT": 1,
        "VALIDATE": 2,
        "REVIEW": 3,
        "FALLBACK": 4,
    }

"""Drives parity's Open Inference Protocol REST binding with tritonclient's HTTP client,
in the test clients' own environment: ``python triton_http_client.py URL REQUEST_JSON``
prints JSON.

Inputs go as JSON and as the binary tensor extension (tritonclient's default), outputs
come back both ways too; an unknown model's error is caught as tritonclient reports it.
"""

import json
import sys

import numpy as np
import tritonclient.http as tc
from tritonclient.utils import InferenceServerException

url, spec = sys.argv[1], json.loads(sys.argv[2])
client = tc.InferenceServerClient(url)
out = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready(spec["model"]),
    "version_ready": client.is_model_ready(spec["model"], "1"),
    "unknown_ready": client.is_model_ready("no_such_model"),
    "metadata": client.get_model_metadata(spec["model"]),
    "server": client.get_server_metadata(),
}


def infer(columns, version="", binary=True):
    inputs = []
    for name, (datatype, values) in columns.items():
        if datatype == "BYTES":
            array = np.array([v.encode() for v in values], dtype=np.object_)
        else:
            array = np.array(values, dtype={"INT64": np.int64, "FP64": np.float64}[datatype])
        tensor = tc.InferInput(name, [len(values)], datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    outputs = None
    if not binary:
        names = ("score", "label", "confidence", "decision")
        outputs = [tc.InferRequestedOutput(n, binary_data=False) for n in names]
    result = client.infer(
        spec["model"], inputs, model_version=version, outputs=outputs, request_id=spec["id"]
    )
    return {
        "id": result.get_response()["id"],
        "score": result.as_numpy("score").tolist(),
        "label": result.as_numpy("label").tolist(),
        "confidence": result.as_numpy("confidence").tolist(),
        "decision": [
            d.decode() if isinstance(d, bytes) else d for d in result.as_numpy("decision").tolist()
        ],
    }


out["by_keys"] = infer(spec["keys"])
out["by_keys_json"] = infer(spec["keys"], binary=False)
out["by_features"] = infer(spec["features"], version="1")
unknown = tc.InferInput("user_id", [1], "INT64")
unknown.set_data_from_numpy(np.array([1], dtype=np.int64))
try:
    client.infer("no_such_model", [unknown])
except InferenceServerException as exc:
    out["unknown_model"] = {"status": exc.status(), "message": exc.message()}
client.close()
print(json.dumps(out))

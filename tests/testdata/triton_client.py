"""Drives parity's KServe V2 service with tritonclient, in its own process.

tritonclient registers its own ``inference.*`` protobuf messages, which clash
with parity's stubs of the same package in one process, so the test runs this
script as a child: ``python triton_client.py TARGET REQUEST_JSON`` prints JSON.
"""

import json
import sys

import numpy as np
import tritonclient.grpc as tc

target, spec = sys.argv[1], json.loads(sys.argv[2])
client = tc.InferenceServerClient(target)
out = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready(spec["model"]),
    "version_ready": client.is_model_ready(spec["model"], "1"),
    "metadata": client.get_model_metadata(spec["model"], as_json=True),
    "server": client.get_server_metadata(as_json=True),
}


def infer(columns, version=""):
    inputs = []
    for name, (datatype, values) in columns.items():
        if datatype == "BYTES":
            array = np.array([v.encode() for v in values], dtype=np.object_)
        else:
            array = np.array(values, dtype={"INT64": np.int64, "FP64": np.float64}[datatype])
        tensor = tc.InferInput(name, [len(values)], datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(spec["model"], inputs, model_version=version)
    return {
        "score": result.as_numpy("score").tolist(),
        "label": result.as_numpy("label").tolist(),
        "confidence": result.as_numpy("confidence").tolist(),
        "decision": [d.decode() for d in result.as_numpy("decision").tolist()],
    }


out["by_keys"] = infer(spec["keys"])
out["by_features"] = infer(spec["features"], version="1")
client.close()
print(json.dumps(out))

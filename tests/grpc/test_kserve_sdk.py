"""The KServe SDK's REST and gRPC inference clients (PyPI `kserve`, installed by setup.sh)
against the server, in a process of their own (see kserve_sdk_client.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("kserve_sdk_client.py")
IRIS_PREDICT = [1, 0]


@pytest.fixture(scope="module")
def results(iris_server, models_server) -> dict:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), iris_server.url, iris_server.grpc_target,
         models_server.url, models_server.grpc_target],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_sdk_version_is_the_one_targeted():
    version = subprocess.run([sys.executable, "-c", "import kserve, importlib.metadata as m; "
                              "print(m.version('kserve'))"], capture_output=True, text=True)
    assert version.returncode == 0, version.stderr[-2000:]
    assert version.stdout.strip().startswith("0.21"), version.stdout


def test_rest_health(results):
    assert results["rest_live"] is True
    assert results["rest_ready"] is True
    assert results["rest_model_ready"] is True


def test_rest_json_and_binary_inference(results):
    for key in ("rest_json", "rest_binary"):
        assert results[key]["predict"] == {"datatype": "INT64", "shape": [2],
                                           "data": IRIS_PREDICT}, key


def test_rest_binary_outputs_are_read_by_the_sdk(results):
    proba = results["rest_binary_out"]["predict_proba"]
    assert proba["datatype"] == "FP64" and proba["shape"] == [2, 3]
    assert proba["data"][1] > 0.5 and proba["data"][3] > 0.5
    assert list(results["rest_binary_out"]) == ["predict_proba"]
    headers = results["rest_binary_out_headers"]
    assert headers["content-type"] == "application/octet-stream"
    assert 0 < int(headers["inference-header-content-length"]) < int(headers["content-length"])


def test_rest_bytes_and_fp16(results):
    assert results["rest_identity"]["t"] == {"datatype": "BYTES", "shape": [2],
                                             "data": ["alpha", "é"]}
    assert results["rest_identity"]["h"] == {"datatype": "FP16", "shape": [2],
                                             "data": [1.5, -2.0]}


def test_rest_unknown_model_is_404(results):
    assert results["rest_unknown"]["status"] == 404
    assert "model 'nope' not found" in results["rest_unknown"]["message"]


def test_grpc_health(results):
    assert results["grpc_live"] is True
    assert results["grpc_ready"] is True
    assert results["grpc_model_ready"] is True


def test_grpc_raw_and_typed_inference(results):
    for key in ("grpc", "grpc_typed"):
        assert results[key]["predict"] == {"datatype": "INT64", "shape": [2],
                                           "data": IRIS_PREDICT}, key


def test_kserve_output_names(results):
    # The model's first default output (predict), answered under the name KServe's runtimes use.
    predict = {"datatype": "INT64", "shape": [2], "data": IRIS_PREDICT}
    assert results["rest_output_0"] == {"output-0": predict}
    assert list(results["grpc_output_0"]) == ["output-0", "output-1"]
    assert results["grpc_output_0"]["output-0"] == predict
    assert results["grpc_output_0"]["output-1"]["shape"] == [2, 3]


def test_grpc_bytes_and_fp16(results):
    assert results["grpc_identity"] == results["rest_identity"]


def test_grpc_unknown_model_is_not_found(results):
    assert results["grpc_unknown"]["status"] == "StatusCode.NOT_FOUND"
    assert "model 'nope' not found" in results["grpc_unknown"]["message"]

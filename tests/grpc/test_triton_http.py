"""NVIDIA's tritonclient over HTTP, which speaks the binary tensor data extension by default,
and hand-made binary requests: the extension's framing, errors, compression, and the Triton
endpoints clients call (config, stats)."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

IRIS_ROWS = np.array([[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


def client(server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url.removeprefix("http://"))


def tensor(name, array, datatype=None, binary=True) -> httpclient.InferInput:
    datatype = datatype or ("BYTES" if array.dtype == object else np_to_triton_dtype(array.dtype))
    item = httpclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array, binary_data=binary)
    return item


def binary_body(header: dict, *chunks: bytes) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + b"".join(chunks), {"Inference-Header-Content-Length": str(len(head))}


def split(reply: requests.Response) -> tuple[dict, bytes]:
    size = int(reply.headers["Inference-Header-Content-Length"])
    return json.loads(reply.content[:size]), reply.content[size:]


# -- tritonclient --------------------------------------------------------------------------------
def test_health_and_metadata(iris_server):
    c = client(iris_server)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("iris")
    assert "binary_tensor_data" in c.get_server_metadata()["extensions"]
    assert c.get_model_metadata("iris")["inputs"][0]["name"] == "input-0"


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_iris_with_and_without_binary_data(iris_server, binary_in, binary_out):
    outputs = [httpclient.InferRequestedOutput("predict", binary_data=binary_out),
               httpclient.InferRequestedOutput("predict_proba", binary_data=binary_out)]
    result = client(iris_server).infer("iris", [tensor("input-0", IRIS_ROWS, binary=binary_in)],
                                       outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("predict"), [1, 0])
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (2, 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1)
    for output in result.get_response()["outputs"]:
        assert ("binary_data_size" in (output.get("parameters") or {})) is binary_out
        assert ("data" in output) is not binary_out


def test_default_request_gets_every_output_in_binary(iris_server):
    # tritonclient's default: binary inputs, no outputs named, binary_data_output=true.
    result = client(iris_server).infer("iris", [tensor("input-0", IRIS_ROWS)])
    outputs = result.get_response()["outputs"]
    assert [o["name"] for o in outputs] == ["predict"]
    assert outputs[0]["parameters"] == {"binary_data_size": 16}
    np.testing.assert_array_equal(result.as_numpy("predict"), [1, 0])


@pytest.mark.parametrize("datatype,array", [
    ("BOOL", np.array([[True, False], [False, True]])),
    ("UINT8", np.array([0, 255], dtype=np.uint8)),
    ("UINT64", np.array([2**64 - 1], dtype=np.uint64)),
    ("INT16", np.array([-32768, 7], dtype=np.int16)),
    ("INT64", np.array([[-(2**63)], [2**63 - 1]], dtype=np.int64)),
    ("FP16", np.array([0.5, -65504, 3.25], dtype=np.float16)),
    ("FP32", np.arange(12, dtype=np.float32).reshape(3, 4) / 7),
    ("FP64", np.array([1e-310, -np.inf, 2.5])),
    ("BYTES", np.array([b"", b"\xff\xfe bytes", "text".encode()], dtype=object)),
])
def test_every_datatype_round_trips_in_binary(models_server, datatype, array):
    result = client(models_server).infer("identity", [tensor("t", array, datatype)])
    out = result.as_numpy("t")
    assert result.get_output("t")["datatype"] == datatype
    assert result.get_output("t")["parameters"]["binary_data_size"] > 0
    assert out.shape == array.shape
    if datatype == "BYTES":
        assert list(out.ravel()) == list(array.ravel())
    else:
        assert out.dtype == array.dtype
        np.testing.assert_array_equal(out, array)


def test_one_input_binary_and_one_json(models_server):
    features = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    text = np.array([b"a", b"b"], dtype=object)
    result = client(models_server).infer(
        "rows", [tensor("features", features), tensor("text", text, binary=False)])
    np.testing.assert_array_equal(result.as_numpy("total"), [6, 15])


def test_requested_outputs_mix_binary_and_json(models_server):
    x = np.array([[1, 5, 3], [-2, 0, 2]], dtype=np.float32)
    outputs = [httpclient.InferRequestedOutput("min", binary_data=True),
               httpclient.InferRequestedOutput("max", binary_data=False)]
    result = client(models_server).infer("summary", [tensor("x", x)], outputs=outputs)
    body = result.get_response()["outputs"]
    assert [o["name"] for o in body] == ["min", "max"]
    assert body[0]["parameters"] == {"binary_data_size": 16} and "data" not in body[0]
    assert body[1]["data"] == [5, 2] and "parameters" not in body[1]
    np.testing.assert_array_equal(result.as_numpy("min"), [1, -2])


def test_steering_parameters_do_not_reach_the_model(models_server):
    result = client(models_server).infer(
        "identity", [tensor("t", np.ones(2, np.float32))], parameters={"mine": 1},
        outputs=[httpclient.InferRequestedOutput("t", binary_data=True)])
    # identity answers with the request's parameters as it got them.
    assert result.get_response()["parameters"] == {"mine": 1}


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(iris_server, algorithm):
    result = client(iris_server).infer("iris", [tensor("input-0", IRIS_ROWS)],
                                       request_compression_algorithm=algorithm,
                                       response_compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("predict"), [1, 0])


def test_binary_inputs_are_views_of_the_body_not_copies(models_server):
    x = np.ones((2, 3), np.float32)
    binary = client(models_server).infer("views", [tensor("x", x)])
    assert list(binary.as_numpy("backing")) == [b"memoryview writeable=False"]
    json_ = client(models_server).infer("views", [tensor("x", x, binary=False)])
    assert list(json_.as_numpy("backing")) == [b"ndarray writeable=True"]
    raw = grpcclient.InferenceServerClient(models_server.grpc_target).infer(
        "views", [_grpc_tensor("x", x)])
    assert list(raw.as_numpy("backing")) == [b"bytes writeable=False"]


def _grpc_tensor(name, array):
    item = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    item.set_data_from_numpy(array)
    return item


def test_errors_carry_the_same_message_over_both_transports(models_server):
    x = np.ones(2, np.float32)
    with pytest.raises(InferenceServerException) as http_err:
        client(models_server).infer("broken", [tensor("x", x)])
    with pytest.raises(InferenceServerException) as grpc_err:
        grpcclient.InferenceServerClient(models_server.grpc_target).infer(
            "broken", [_grpc_tensor("x", x)])
    assert http_err.value.message() == grpc_err.value.message()
    assert http_err.value.status() == "500"


# -- the extension by hand -----------------------------------------------------------------------
def test_binary_request_without_content_type(models_server):
    data = np.array([1.5, 2.5], dtype=np.float32)
    body, headers = binary_body({"inputs": [{"name": "t", "datatype": "FP32", "shape": [2],
                                             "parameters": {"binary_data_size": 8}}]},
                                data.tobytes())
    reply = requests.post(models_server.url + "/v2/models/identity/infer", data=body,
                          headers=headers, timeout=10)
    assert "content-type" not in reply.request.headers
    assert reply.status_code == 200, reply.text
    # No binary output asked for: plain JSON back.
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["outputs"][0]["data"] == [1.5, 2.5]


def test_binary_response_framing(models_server):
    data = np.array([[1, 2], [3, 4]], dtype=np.int32)
    words = [b"hi", b"", b"\xe2\x82\xac"]
    raw_words = b"".join(struct.pack("<I", len(w)) + w for w in words)
    body, headers = binary_body({
        "id": "abc",
        "inputs": [{"name": "a", "datatype": "INT32", "shape": [2, 2],
                    "parameters": {"binary_data_size": 16}},
                   {"name": "w", "datatype": "BYTES", "shape": [3],
                    "parameters": {"binary_data_size": len(raw_words)}}],
        "parameters": {"binary_data_output": True}}, data.tobytes(), raw_words)
    reply = requests.post(models_server.url + "/v2/models/identity/infer", data=body,
                          headers={**headers, "Content-Type": "application/octet-stream"},
                          timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/octet-stream"
    header, rest = split(reply)
    assert header["id"] == "abc"
    assert [(o["name"], o["datatype"], o["shape"], o["parameters"]) for o in header["outputs"]] \
        == [("a", "INT32", [2, 2], {"binary_data_size": 16}),
            ("w", "BYTES", [3], {"binary_data_size": len(raw_words)})]
    assert rest == data.tobytes() + raw_words
    assert int(reply.headers["content-length"]) == len(reply.content)


@pytest.mark.parametrize("header,tail,extra,fragment", [
    ({"inputs": [{"name": "t", "datatype": "FP32", "shape": [2],
                  "parameters": {"binary_data_size": 8}}]}, b"\0" * 4, {}, "only 4 bytes"),
    ({"inputs": [{"name": "t", "datatype": "FP32", "shape": [2],
                  "parameters": {"binary_data_size": 4}}]}, b"\0" * 4, {}, "needs 8"),
    ({"inputs": [{"name": "t", "datatype": "FP32", "shape": [1],
                  "parameters": {"binary_data_size": 4}}]}, b"\0" * 6, {}, "2 bytes after"),
    ({"inputs": [{"name": "t", "datatype": "FP32", "shape": [1],
                  "parameters": {"binary_data_size": -4}}]}, b"", {}, "non-negative"),
    ({"inputs": [{"name": "t", "datatype": "FP32", "shape": [1], "data": [1],
                  "parameters": {"binary_data_size": 4}}]}, b"\0" * 4, {}, "both"),
    ({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1],
                  "parameters": {"binary_data_size": 3}}]}, b"\x01\0\0", {},
     "ends inside"),
    ({"inputs": []}, b"", {"Inference-Header-Content-Length": "99999"}, "body has"),
    ({"inputs": []}, b"", {"Inference-Header-Content-Length": "x"}, "integer"),
])
def test_malformed_binary_requests_are_400(models_server, header, tail, extra, fragment):
    body, headers = binary_body(header, tail)
    reply = requests.post(models_server.url + "/v2/models/identity/infer", data=body,
                          headers={**headers, **extra}, timeout=10)
    assert reply.status_code == 400, reply.text
    assert fragment in reply.json()["error"]


def test_unknown_content_encoding_is_415(models_server):
    reply = requests.post(models_server.url + "/v2/models/identity/infer", timeout=10,
                          data=b"{}", headers={"Content-Encoding": "br"})
    assert reply.status_code == 415
    assert "gzip" in reply.json()["error"]


def test_gzip_json_request_by_hand(models_server):
    body = gzip.compress(json.dumps({"inputs": [{"name": "t", "datatype": "INT8", "shape": [1],
                                                 "data": [7]}]}).encode())
    reply = requests.post(models_server.url + "/v2/models/identity/infer", data=body,
                          headers={"Content-Encoding": "gzip"}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"][0]["data"] == [7]


# -- Triton's other endpoints --------------------------------------------------------------------
def test_config_by_version_and_http_client(iris_server):
    c = client(iris_server)
    config = c.get_model_config("iris")
    assert config == requests.get(iris_server.url + "/v2/models/iris/versions/1/config",
                                  timeout=5).json()
    assert config["max_batch_size"] > 0
    assert requests.get(iris_server.url + "/v2/models/iris/versions/2/config",
                        timeout=5).status_code == 404
    assert requests.post(iris_server.url + "/v2/models/iris/config", timeout=5).status_code == 405


def test_statistics_over_http_client(models_server):
    c = client(models_server)
    c.infer("summary", [tensor("x", np.ones((3, 2), np.float32))])
    stats = c.get_inference_statistics("summary")["model_stats"][0]
    assert stats["name"] == "summary" and stats["version"] == "1"
    assert stats["inference_stats"]["success"]["count"] >= 1
    assert stats["inference_count"] >= 3
    assert stats["batch_stats"][0]["batch_size"] >= 1
    every = c.get_inference_statistics()["model_stats"]
    assert {"identity", "summary", "rows"} <= {m["name"] for m in every}


def test_repository_calls_accept_an_empty_body(iris_server):
    for kwargs in ({}, {"data": b""}, {"json": {}}):
        reply = requests.post(iris_server.url + "/v2/repository/index", timeout=5, **kwargs)
        assert reply.status_code == 200
        assert reply.json()[0]["name"] == "iris" and reply.json()[0]["state"] == "READY"
    index = client(iris_server).get_model_repository_index()
    assert [(m["name"], m["state"]) for m in index] == [("iris", "READY")]

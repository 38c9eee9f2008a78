"""The v2 REST API against custom Model subclasses."""

from pathlib import Path

import numpy as np
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "tests" / "core" / "custom_models.py")


@pytest.fixture(scope="module")
def server(launch):
    return launch(SCRIPT)


def infer(server, model, body, path=None):
    url = f"{server.url}/v2/models/{model}{path or ''}/infer"
    return requests.post(url, json=body, timeout=10)


def tensor(name, datatype, shape, data):
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def test_health_and_server_metadata(server):
    assert requests.get(server.url + "/v2/health/live").json() == {"live": True}
    assert requests.get(server.url + "/v2/health/ready").json() == {"ready": True}
    meta = requests.get(server.url + "/v2").json()
    assert meta["name"] == "modelserver"
    assert meta["version"] == (REPO / "VERSION").read_text().strip()
    assert isinstance(meta["extensions"], list)


def test_model_metadata_and_readiness_with_and_without_version(server):
    for suffix in ("", "/versions/1"):
        meta = requests.get(f"{server.url}/v2/models/echo{suffix}").json()
        assert meta["name"] == "echo" and meta["versions"] == ["1"]
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
        ready = requests.get(f"{server.url}/v2/models/echo{suffix}/ready")
        assert ready.status_code == 200 and ready.json() == {"name": "echo", "ready": True}


@pytest.mark.parametrize(
    "datatype,data,dtype",
    [
        ("BOOL", [True, False, True, True], np.bool_),
        ("UINT8", [0, 1, 254, 255], np.uint8),
        ("UINT16", [0, 1, 2, 65535], np.uint16),
        ("UINT32", [0, 1, 2, 4294967295], np.uint32),
        ("UINT64", [0, 1, 2, 18446744073709551615], np.uint64),
        ("INT8", [-128, -1, 0, 127], np.int8),
        ("INT16", [-32768, -1, 0, 32767], np.int16),
        ("INT32", [-2147483648, -1, 0, 2147483647], np.int32),
        ("INT64", [-9223372036854775808, -1, 0, 9223372036854775807], np.int64),
        ("FP16", [0.5, -1.25, 2.0, 65504.0], np.float16),
        ("FP32", [0.1, -1.5, 3.25, 1e30], np.float32),
        ("FP64", [0.1, -1.5, 3.25, 1e300], np.float64),
        ("BYTES", ["a", "héllo", "", "xyz"], object),
    ],
)
def test_every_datatype_round_trips(server, datatype, data, dtype):
    response = infer(server, "echo", {"inputs": [tensor("x", datatype, [2, 2], data)]})
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    assert out["datatype"] == datatype and out["shape"] == [2, 2]
    if dtype is object:
        assert out["data"] == data
    else:
        expected = np.asarray(data, dtype=dtype)
        np.testing.assert_array_equal(np.asarray(out["data"], dtype=dtype), expected)


def test_nested_data_is_accepted(server):
    body = {"inputs": [tensor("x", "INT32", [2, 3], [[1, 2, 3], [4, 5, 6]])]}
    out = infer(server, "echo", body).json()["outputs"][0]
    assert out["shape"] == [2, 3] and out["data"] == [1, 2, 3, 4, 5, 6]


def test_id_is_echoed_exactly_and_parameters_pass_through(server):
    body = {
        "id": "req-ü/42 \"quoted\"",
        "parameters": {"temperature": 0.5, "tags": ["a", "b"], "nested": {"k": True}},
        "inputs": [tensor("x", "FP32", [1, 2], [1.0, 2.0])],
    }
    reply = infer(server, "echo", body).json()
    assert reply["id"] == body["id"]
    assert reply["parameters"] == body["parameters"]
    assert reply["model_name"] == "echo" and reply["model_version"] == "1"


def test_no_id_no_id_key(server):
    reply = infer(server, "echo", {"inputs": [tensor("x", "FP32", [1, 2], [1.0, 2.0])]}).json()
    assert "id" not in reply


def test_versioned_infer_path(server):
    body = {"inputs": [tensor("x", "FP32", [1, 2], [1.0, 2.0])]}
    assert infer(server, "echo", body, "/versions/1").status_code == 200
    missing = infer(server, "echo", body, "/versions/7")
    assert missing.status_code == 404
    assert missing.json() == {"error": "model 'echo' version '7' not found"}


def test_requested_outputs_are_selected_in_order(server):
    body = {
        "inputs": [tensor("x", "FP64", [2, 3], [1, 2, 3, 4, 5, 6])],
        "outputs": [{"name": "min"}, {"name": "sum"}],
    }
    outputs = infer(server, "stats", body).json()["outputs"]
    assert [o["name"] for o in outputs] == ["min", "sum"]
    assert outputs[0]["data"] == [1, 4] and outputs[1]["data"] == [6, 15]
    assert outputs[1]["datatype"] == "FP64" and outputs[1]["shape"] == [2]


def test_all_outputs_without_request(server):
    body = {"inputs": [tensor("x", "FP64", [1, 2], [1, 2])]}
    outputs = infer(server, "stats", body).json()["outputs"]
    assert sorted(o["name"] for o in outputs) == ["max", "min", "sum"]


@pytest.mark.parametrize(
    "body,message",
    [
        ({"inputs": [tensor("x", "FP32", [2, 2], [1, 2, 3])]},
         "input 'x' has 3 elements but shape [2, 2] needs 4"),
        ({"inputs": [tensor("x", "FLOAT", [1], [1])]}, "unknown datatype 'FLOAT'"),
        ({"inputs": [tensor("x", "FP32", [1, -2], [1, 2])]}, "'shape' must be a list"),
        ({"inputs": [tensor("x", "INT8", [1], [300])]}, "does not fit INT8"),
        ({"inputs": [tensor("x", "FP32", [2], ["a", "b"])]}, "must be numbers"),
        ({"inputs": [tensor("x", "BYTES", [2], [1, 2])]}, "BYTES data must be strings"),
        ({"inputs": [tensor("x", "FP32", [2], [[1], [2, 3]])]}, "input 'x'"),
        ({"inputs": []}, "'inputs' must be a non-empty list"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}, "has no 'data'"),
        ({"inputs": [tensor("x", "FP32", [1], [1])] * 2}, "input names must be unique"),
        ({"id": 5, "inputs": [tensor("x", "FP32", [1], [1])]}, "'id' must be a string"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_requests_are_400_with_a_message(server, body, message):
    response = infer(server, "echo", body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_unknown_output_is_400(server):
    body = {"inputs": [tensor("x", "FP64", [1, 1], [1])], "outputs": [{"name": "median"}]}
    response = infer(server, "stats", body)
    assert response.status_code == 400
    assert response.json()["error"] == "model 'stats' has no output 'median'; it has sum, max, min"


def test_bad_json_is_400(server):
    response = requests.post(f"{server.url}/v2/models/echo/infer", data=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"].startswith("the request body is not valid JSON")
    empty = requests.post(f"{server.url}/v2/models/echo/infer", data=b"")
    assert empty.status_code == 400 and empty.json() == {"error": "the request has no body"}


def test_unknown_model_route_and_method(server):
    body = {"inputs": [tensor("x", "FP32", [1], [1])]}
    unknown = infer(server, "nope", body)
    assert unknown.status_code == 404 and unknown.json() == {"error": "model 'nope' not found"}
    assert requests.get(f"{server.url}/v2/models/nope").status_code == 404
    route = requests.get(f"{server.url}/v3/anything")
    assert route.status_code == 404 and route.json() == {"error": "no route for /v3/anything"}
    method = requests.get(f"{server.url}/v2/models/echo/infer")
    assert method.status_code == 405 and "use POST" in method.json()["error"]
    assert requests.delete(f"{server.url}/v2/health/live").status_code == 405


def test_model_failure_is_500_and_server_keeps_serving(server):
    body = {"inputs": [tensor("x", "FP32", [1], [1])]}
    for _ in range(3):
        failed = infer(server, "broken", body)
        assert failed.status_code == 500
        assert failed.json() == {"error": "model 'broken' failed: RuntimeError: boom"}
        assert "Traceback" not in failed.text
    assert infer(server, "echo", {"inputs": [tensor("x", "FP32", [1, 2], [1, 2])]}).ok


def test_large_fp32_request(server):
    data = np.random.default_rng(0).random((1000, 100), dtype=np.float32)
    body = {"inputs": [tensor("x", "FP32", [1000, 100], data.ravel().tolist())]}
    out = infer(server, "echo", body).json()["outputs"][0]
    assert out["shape"] == [1000, 100]
    np.testing.assert_array_equal(np.asarray(out["data"], dtype=np.float32), data.ravel())


LARGE = 20_000  # elements: the body is over the size past which numbers are read as a buffer


@pytest.mark.parametrize("datatype,data,dtype", [
    ("FP32", np.random.default_rng(1).random(LARGE).tolist(), np.float32),
    ("FP64", np.random.default_rng(2).random(LARGE).tolist(), np.float64),
    ("INT8", [-128, 127] * (LARGE // 2), np.int8),
    ("INT64", [-(2**63), 2**63 - 1] * (LARGE // 2), np.int64),
    ("UINT64", [0, 2**64 - 1] * (LARGE // 2), np.uint64),
    ("FP16", [0.5, -2.0] * (LARGE // 2), np.float16),
])
def test_large_bodies_decode_as_small_ones(server, datatype, data, dtype):
    nested = np.asarray(data, dtype=dtype).reshape(2, -1).tolist()
    for sent in (data, nested):
        body = {"id": "big", "inputs": [tensor("x", datatype, [2, LARGE // 2], sent),
                                        tensor("label", "BYTES", [1], ["one"])]}
        reply = infer(server, "echo", body)
        assert reply.status_code == 200, reply.text[:300]
        x, label = reply.json()["outputs"]
        assert x["datatype"] == datatype and x["shape"] == [2, LARGE // 2]
        np.testing.assert_array_equal(np.asarray(x["data"], dtype=dtype),
                                      np.asarray(data, dtype=dtype))
        assert label["data"] == ["one"] and reply.json()["id"] == "big"


@pytest.mark.parametrize("datatype,data,message", [
    ("INT8", [300] * LARGE, "does not fit INT8"),
    ("UINT8", [-1] * LARGE, "does not fit UINT8"),
    ("FP32", ["1.5"] * LARGE, "must be numbers"),
    ("FP32", [1.0] * (LARGE - 1), "needs 20000"),
])
def test_large_bodies_get_the_same_errors(server, datatype, data, message):
    body = {"inputs": [tensor("x", datatype, [LARGE], data)]}
    reply = infer(server, "echo", body)
    assert reply.status_code == 400 and message in reply.json()["error"], reply.text[:300]

"""NVIDIA's tritonclient over gRPC against the server: health, metadata, config, inference in
every datatype, requested outputs, parameters, statistics and errors."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

import grpc

IRIS_ROWS = np.array([[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


def client(server) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_target)


def tensor(name: str, array: np.ndarray, datatype: str | None = None) -> grpcclient.InferInput:
    datatype = datatype or ("BYTES" if array.dtype == object else None)
    if datatype is None:
        from tritonclient.utils import np_to_triton_dtype

        datatype = np_to_triton_dtype(array.dtype)
    item = grpcclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


def error_of(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


def rest_error(server, path: str, body) -> str:
    reply = requests.post(server.url + path, json=body, timeout=10)
    assert reply.status_code >= 400
    return reply.json()["error"]


# -- health and metadata -------------------------------------------------------------------------
def test_liveness_and_readiness(iris_server):
    c = client(iris_server)
    assert c.is_server_live()
    assert c.is_server_ready()
    assert c.is_model_ready("iris")
    assert c.is_model_ready("iris", "1")


def test_model_ready_of_an_unknown_model_is_not_found(iris_server):
    err = error_of(lambda: client(iris_server).is_model_ready("nope"))
    assert err.status() == "StatusCode.NOT_FOUND"
    assert "model 'nope' not found" in err.message()


def test_server_metadata_lists_the_extensions_served(iris_server):
    meta = client(iris_server).get_server_metadata(as_json=True)
    assert meta["name"] == "modelserver"
    assert set(meta["extensions"]) == {"binary_tensor_data", "model_repository",
                                       "model_configuration", "statistics"}
    rest = requests.get(iris_server.url + "/v2", timeout=5).json()
    assert rest["extensions"] == meta["extensions"]


def test_model_metadata_matches_rest(iris_server):
    meta = client(iris_server).get_model_metadata("iris", as_json=True)
    rest = requests.get(iris_server.url + "/v2/models/iris", timeout=5).json()
    assert meta["name"] == "iris" and meta["versions"] == ["1"]
    assert meta["platform"] == rest["platform"]
    for kind in ("inputs", "outputs"):
        assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta[kind]] == \
            [(t["name"], t["datatype"], t["shape"]) for t in rest[kind]]
    assert meta["inputs"][0]["name"] == "input-0"


def test_model_config_follows_triton_batching_convention(iris_server):
    config = client(iris_server).get_model_config("iris", as_json=True)["config"]
    rest = requests.get(iris_server.url + "/v2/models/iris/config", timeout=5).json()
    meta = requests.get(iris_server.url + "/v2/models/iris", timeout=5).json()
    assert config["name"] == rest["name"] == "iris"
    assert config["max_batch_size"] == rest["max_batch_size"] > 0
    # Batching: the metadata shape leads with -1 and config dims leave it out.
    assert meta["inputs"][0]["shape"] == [-1, 4]
    assert [int(d) for d in config["input"][0]["dims"]] == rest["input"][0]["dims"] == [4]
    assert [i["name"] for i in config["input"]] == [i["name"] for i in meta["inputs"]]
    assert [o["name"] for o in config["output"]] == [o["name"] for o in meta["outputs"]]
    assert config["input"][0]["data_type"] == rest["input"][0]["data_type"] == "TYPE_FP64"


def test_config_of_a_model_that_does_not_batch_keeps_whole_shapes(models_server):
    config = client(models_server).get_model_config("summary", as_json=True)["config"]
    assert config.get("max_batch_size", 0) == 0
    assert [int(d) for d in config["input"][0]["dims"]] == [-1, -1]
    batching = client(models_server).get_model_config("rows", as_json=True)["config"]
    assert batching["max_batch_size"] == 8
    assert [(i["name"], i["data_type"], [int(d) for d in i.get("dims", [])])
            for i in batching["input"]] == [("features", "TYPE_FP32", [3]),
                                            ("text", "TYPE_STRING", [])]


def test_config_of_an_unknown_model_is_not_found(iris_server):
    err = error_of(lambda: client(iris_server).get_model_config("nope"))
    assert err.status() == "StatusCode.NOT_FOUND"


# -- inference -----------------------------------------------------------------------------------
def test_infer_iris_matches_rest(iris_server):
    result = client(iris_server).infer("iris", [tensor("input-0", IRIS_ROWS)])
    rest = requests.post(iris_server.url + "/v2/models/iris/infer", timeout=5, json={
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [2, 4],
                    "data": IRIS_ROWS.ravel().tolist()}]}).json()
    for output in rest["outputs"]:
        np.testing.assert_array_equal(result.as_numpy(output["name"]).ravel(), output["data"])
    np.testing.assert_array_equal(result.as_numpy("predict"), [1, 0])
    response = result.get_response()
    assert response.model_name == "iris" and response.model_version == "1"
    # Always raw: perf_analyzer cannot read typed contents in a reply.
    assert len(response.raw_output_contents) == len(response.outputs)
    assert not any(o.HasField("contents") for o in response.outputs)


@pytest.mark.parametrize("datatype,array", [
    ("BOOL", np.array([[True, False, True]])),
    ("UINT8", np.array([0, 7, 255], dtype=np.uint8)),
    ("UINT16", np.array([0, 65535], dtype=np.uint16)),
    ("UINT32", np.array([[1, 2], [3, 4294967295]], dtype=np.uint32)),
    ("UINT64", np.array([2**64 - 1, 0], dtype=np.uint64)),
    ("INT8", np.array([-128, 127], dtype=np.int8)),
    ("INT16", np.array([-32768, 32767], dtype=np.int16)),
    ("INT32", np.array([[-5], [6]], dtype=np.int32)),
    ("INT64", np.array([-(2**63), 2**63 - 1], dtype=np.int64)),
    ("FP16", np.array([0.5, -1.25, 65504], dtype=np.float16)),
    ("FP32", np.array([[1.5, -2.25], [3.0, 1e-30]], dtype=np.float32)),
    ("FP64", np.array([np.pi, -0.0, 1e300])),
    ("BYTES", np.array([b"", b"caf\xc3\xa9", b"\x00\xff raw"], dtype=object)),
    ("BYTES", np.array([["a", "bb"], ["ccc", ""]], dtype=object)),
])
def test_every_datatype_round_trips_raw(models_server, datatype, array):
    result = client(models_server).infer("identity", [tensor("t", array, datatype)])
    out = result.as_numpy("t")
    assert result.get_output("t").datatype == datatype
    assert out.shape == array.shape
    if datatype == "BYTES":
        expected = [x.encode() if isinstance(x, str) else x for x in array.ravel()]
        assert list(out.ravel()) == expected
    else:
        assert out.dtype == array.dtype
        np.testing.assert_array_equal(out, array)


def _typed_request(model: str, name: str, datatype: str, shape: list[int], field: str, values):
    request = service_pb2.ModelInferRequest(model_name=model)
    item = request.inputs.add(name=name, datatype=datatype, shape=shape)
    getattr(item.contents, field).extend(values)
    return request


@pytest.mark.parametrize("datatype,field,values,dtype", [
    ("BOOL", "bool_contents", [True, False], np.bool_),
    ("INT8", "int_contents", [-3, 4], np.int8),
    ("INT32", "int_contents", [-(2**31), 2**31 - 1], np.int32),
    ("INT64", "int64_contents", [-(2**63), 5], np.int64),
    ("UINT16", "uint_contents", [0, 65535], np.uint16),
    ("UINT64", "uint64_contents", [2**64 - 1, 1], np.uint64),
    ("FP32", "fp32_contents", [1.5, -2.0], np.float32),
    ("FP64", "fp64_contents", [1e-300, 2.5], np.float64),
    ("BYTES", "bytes_contents", [b"x", b"\xff\x00"], object),
])
def test_typed_contents_are_accepted_and_answered_raw(models_server, datatype, field, values,
                                                      dtype):
    with grpc.insecure_channel(models_server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        reply = stub.ModelInfer(_typed_request("identity", "t", datatype, [2], field, values))
    assert [(o.name, o.datatype, list(o.shape)) for o in reply.outputs] == [("t", datatype, [2])]
    assert not reply.outputs[0].HasField("contents")
    result = grpcclient.InferResult(reply)
    if datatype == "BYTES":
        assert list(result.as_numpy("t")) == values
    else:
        np.testing.assert_array_equal(result.as_numpy("t"), np.array(values, dtype=dtype))


def test_requested_outputs_only_and_in_order(models_server):
    x = np.array([[1, 5, 3], [-2, 0, 2]], dtype=np.float32)
    outputs = [grpcclient.InferRequestedOutput("min"), grpcclient.InferRequestedOutput("max")]
    result = client(models_server).infer("summary", [tensor("x", x)], outputs=outputs)
    response = result.get_response()
    assert [o.name for o in response.outputs] == ["min", "max"]
    np.testing.assert_array_equal(result.as_numpy("min"), [1, -2])
    np.testing.assert_array_equal(result.as_numpy("max"), [5, 2])
    assert result.as_numpy("sum") is None


def test_request_id_and_parameters_round_trip(models_server):
    params = {"flag": True, "count": 3, "name": "abc", "ratio": 0.25}
    result = client(models_server).infer("identity", [tensor("t", np.ones(2, np.float32))],
                                         request_id="req-7", parameters=params)
    response = result.get_response()
    assert response.id == "req-7"
    got = {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in
           response.parameters.items()}
    assert got == params


def test_bytes_output_with_output_parameters(models_server):
    x = np.array([[1, 2], [30, 40]], dtype=np.float32)
    result = client(models_server).infer("labels", [tensor("x", x)])
    assert list(result.as_numpy("label")) == [b"small", b"big"]
    output = result.get_output("label")
    assert output.parameters["unit"].string_param == "label"


# -- errors, with REST's messages ----------------------------------------------------------------
def test_unknown_model_is_not_found(iris_server):
    err = error_of(lambda: client(iris_server).infer("nope", [tensor("x", IRIS_ROWS)]))
    assert err.status() == "StatusCode.NOT_FOUND"
    assert err.message() == rest_error(iris_server, "/v2/models/nope/infer", {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]})


def test_unknown_version_is_not_found(iris_server):
    err = error_of(lambda: client(iris_server).infer("iris", [tensor("input-0", IRIS_ROWS)],
                                                     model_version="9"))
    assert err.status() == "StatusCode.NOT_FOUND"
    assert "version '9'" in err.message()


def test_model_failure_is_internal_with_the_rest_message(models_server):
    x = np.ones(2, np.float32)
    err = error_of(lambda: client(models_server).infer("broken", [tensor("x", x)]))
    assert err.status() == "StatusCode.INTERNAL"
    assert err.message() == rest_error(models_server, "/v2/models/broken/infer", {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 1]}]})
    assert "boom" in err.message()


def test_unknown_output_is_invalid_argument_with_the_rest_message(models_server):
    x = np.ones((1, 2), np.float32)
    err = error_of(lambda: client(models_server).infer(
        "summary", [tensor("x", x)], outputs=[grpcclient.InferRequestedOutput("median")]))
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    assert err.message() == rest_error(models_server, "/v2/models/summary/infer", {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 1]}],
        "outputs": [{"name": "median"}]})


def _raw_request(model, name, datatype, shape, raw):
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request


@pytest.mark.parametrize("request_,fragment", [
    (_raw_request("identity", "t", "FP32", [3], b"\0" * 8), "needs 12"),
    (_raw_request("identity", "t", "FP99", [1], b"\0" * 4), "unknown datatype"),
    (_raw_request("identity", "t", "FP32", [-1], b""), "non-negative"),
    (_raw_request("identity", "t", "BYTES", [1], b"\x09\0\0\0abc"), "runs past the end"),
    (_raw_request("identity", "t", "BYTES", [2], b"\x01\0\0\0a"), "has 1 elements"),
    (_typed_request("identity", "t", "INT8", [1], "int_contents", [300]), "does not fit"),
    (_typed_request("identity", "t", "FP32", [3], "fp32_contents", [1.0]), "has 1 elements"),
    (service_pb2.ModelInferRequest(model_name="identity"), "non-empty"),
])
def test_malformed_requests_are_invalid_argument(models_server, request_, fragment):
    with grpc.insecure_channel(models_server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in info.value.details()


def test_raw_and_typed_contents_together_are_refused(models_server):
    request = _raw_request("identity", "t", "FP32", [1], b"\0" * 4)
    request.inputs[0].contents.fp32_contents.append(1.0)
    with grpc.insecure_channel(models_server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unserved_rpcs_are_unimplemented(iris_server):
    err = error_of(lambda: client(iris_server).get_system_shared_memory_status())
    assert err.status() == "StatusCode.UNIMPLEMENTED"


# -- statistics ----------------------------------------------------------------------------------
def _iris_stats(c):
    return c.get_inference_statistics("iris", as_json=True)["model_stats"][0]


def test_statistics_count_grpc_and_rest_requests(iris_server):
    c = client(iris_server)
    before = _iris_stats(c)
    for _ in range(3):
        c.infer("iris", [tensor("input-0", IRIS_ROWS)])
    requests.post(iris_server.url + "/v2/models/iris/infer", timeout=5, json={
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4],
                    "data": [6.8, 2.8, 4.8, 1.4]}]}).raise_for_status()
    requests.post(iris_server.url + "/v2/models/iris/infer", timeout=5, json={
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 3],
                    "data": [6.8, 2.8, 4.8]}]})  # the model refuses 3 features
    after = _iris_stats(c)

    def count(stats, key):
        return int(stats["inference_stats"][key].get("count", 0))

    assert count(after, "success") - count(before, "success") == 4
    assert count(after, "fail") - count(before, "fail") == 1
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) >= 7
    assert int(after["execution_count"]) > int(before.get("execution_count", 0))
    assert count(after, "compute_input") - count(before, "compute_input") == 4
    assert int(after["inference_stats"]["success"]["ns"]) > 0
    assert int(after["last_inference"]) > 0
    rest = requests.get(iris_server.url + "/v2/models/iris/stats", timeout=5).json()
    assert rest["model_stats"][0]["inference_stats"]["success"]["count"] == count(after, "success")
    every = requests.get(iris_server.url + "/v2/models/stats", timeout=5).json()
    assert [m["name"] for m in every["model_stats"]] == ["iris"]


def test_statistics_of_an_unknown_model_are_not_found(iris_server):
    err = error_of(lambda: client(iris_server).get_inference_statistics("nope"))
    assert err.status() == "StatusCode.NOT_FOUND"
    assert requests.get(iris_server.url + "/v2/models/nope/stats", timeout=5).status_code == 404

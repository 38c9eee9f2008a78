"""The gRPC server itself: health checking, reflection, the repository rpcs, flags (off, message
size, port sharing between workers), metrics and shutdown."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

import grpc

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples"
MODELS = str(HERE / "protocol_models.py")
SERVICE = "inference.GRPCInferenceService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
IRIS_ROW = np.array([[6.8, 2.8, 4.8, 1.4]], dtype=np.float32)


def health_check(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def iris_input() -> grpcclient.InferInput:
    item = grpcclient.InferInput("input-0", [1, 4], "FP32")
    item.set_data_from_numpy(IRIS_ROW)
    return item


def fp32_input(name: str, array: np.ndarray) -> grpcclient.InferInput:
    item = grpcclient.InferInput(name, list(array.shape), "FP32")
    item.set_data_from_numpy(array)
    return item


# -- health checking -----------------------------------------------------------------------------
def test_health_is_serving_when_ready(iris_server):
    assert health_check(iris_server.grpc_target) == SERVING
    assert health_check(iris_server.grpc_target, SERVICE) == SERVING


def test_health_of_an_unknown_service_is_not_found(iris_server):
    with pytest.raises(grpc.RpcError) as info:
        health_check(iris_server.grpc_target, "no.such.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_turns_serving_once_models_load(launch):
    server = launch(MODELS, env={"SLOW_LOAD_SECONDS": "4"}, wait=False)
    server.wait_listening()
    target = server.grpc_target
    assert health_check(target) == NOT_SERVING
    c = grpcclient.InferenceServerClient(target)
    assert c.is_server_live() and not c.is_server_ready()
    assert not c.is_model_ready("slowload")
    seen = []
    with grpc.insecure_channel(target) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=60)
        for reply in watch:
            seen.append(reply.status)
            if reply.status == SERVING:
                watch.cancel()
                break
    assert seen[0] == NOT_SERVING and seen[-1] == SERVING
    assert health_check(target) == SERVING
    assert c.is_server_ready() and c.is_model_ready("slowload")


# -- reflection ----------------------------------------------------------------------------------
def test_reflection_lists_the_services(iris_server):
    with grpc.insecure_channel(iris_server.grpc_target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(stub.ServerReflectionInfo(iter([request]), timeout=5))
    names = {s.name for s in reply.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_reflection_describes_the_messages(iris_server):
    # As grpcurl does: fetch the descriptors and build messages from them alone.
    with grpc.insecure_channel(iris_server.grpc_target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName(SERVICE)
        methods = {m.name: (m.input_type.full_name, m.output_type.full_name)
                   for m in service.methods}
        request = pool.FindMessageTypeByName("inference.ModelInferRequest")
        health = pool.FindServiceByName("grpc.health.v1.Health")
    assert methods["ModelInfer"] == ("inference.ModelInferRequest",
                                     "inference.ModelInferResponse")
    assert {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
            "ModelConfig", "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad",
            "RepositoryModelUnload"} <= set(methods)
    assert request.fields_by_name["raw_input_contents"].number == 7
    assert [m.name for m in health.methods] == ["Check", "Watch"]


@pytest.fixture(scope="module")
def reflection_v1(tmp_path_factory):
    """A v1 reflection client's messages and stub, compiled from reflection_v1.proto."""
    out = tmp_path_factory.mktemp("reflection_v1")
    shutil.copy(HERE / "reflection_v1.proto", out)
    # In a process of its own: protoc's C++ runtime in this one may already hold other .protos.
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{out}", f"--python_out={out}",
                    f"--grpc_python_out={out}", str(out / "reflection_v1.proto")], check=True)
    sys.path.insert(0, str(out))
    try:
        import reflection_v1_pb2
        import reflection_v1_pb2_grpc
    finally:
        sys.path.remove(str(out))
    return reflection_v1_pb2, reflection_v1_pb2_grpc


def ask_v1(target: str, reflection_v1, **request) -> list:
    """One v1 reflection request per keyword, answered in order on one stream."""
    messages, stubs = reflection_v1
    with grpc.insecure_channel(target) as channel:
        stub = stubs.ServerReflectionStub(channel)
        requests_ = [messages.ServerReflectionRequest(**{k: v}) for k, v in request.items()]
        return list(stub.ServerReflectionInfo(iter(requests_), timeout=5))


def test_reflection_v1_lists_the_services(iris_server, reflection_v1):
    (reply,) = ask_v1(iris_server.grpc_target, reflection_v1, list_services="")
    names = {s.name for s in reply.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_reflection_v1_describes_the_messages(iris_server, reflection_v1):
    # As grpcurl does: the file holding a symbol, then messages built from its descriptors.
    replies = ask_v1(iris_server.grpc_target, reflection_v1,
                     file_containing_symbol="inference.GRPCInferenceService")
    pool = descriptor_pool.DescriptorPool()
    for raw in replies[0].file_descriptor_response.file_descriptor_proto:
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(raw))
    infer = pool.FindServiceByName(SERVICE).methods_by_name["ModelInfer"]
    assert infer.input_type.full_name == "inference.ModelInferRequest"
    assert infer.input_type.fields_by_name["raw_input_contents"].number == 7


def test_reflection_v1_describes_itself_and_reports_unknown_symbols(iris_server, reflection_v1):
    itself, unknown = (
        ask_v1(iris_server.grpc_target, reflection_v1,
               file_containing_symbol="grpc.reflection.v1.ServerReflection")[0],
        ask_v1(iris_server.grpc_target, reflection_v1,
               file_containing_symbol="inference.NoSuchService")[0])
    (raw,) = itself.file_descriptor_response.file_descriptor_proto
    proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
    method = proto.service[0].method[0]
    assert (proto.package, proto.service[0].name, method.name, method.input_type) == (
        "grpc.reflection.v1", "ServerReflection", "ServerReflectionInfo",
        ".grpc.reflection.v1.ServerReflectionRequest")
    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


# -- the repository rpcs -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repository_server(launch, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    for name in ("iris", "flower"):
        shutil.copytree(EXAMPLES / "sklearn-iris", root / name)
    return launch("-m", "sklearnserver", "--model_dir", str(root))


def _index(c) -> dict:
    return {m.name: (m.state, m.reason) for m in c.get_model_repository_index().models}


def test_repository_index_unload_and_load(repository_server):
    c = grpcclient.InferenceServerClient(repository_server.grpc_target)
    assert _index(c) == {"iris": ("READY", ""), "flower": ("READY", "")}
    c.unload_model("flower")
    assert _index(c)["flower"] == ("UNAVAILABLE", "unloaded")
    assert _index(c)["iris"] == ("READY", "")
    assert [m.name for m in c.get_model_repository_index().models if m.state == "READY"] == \
        ["iris"]
    assert not c.is_model_ready("flower")
    with pytest.raises(InferenceServerException) as info:
        c.infer("flower", [iris_input()])
    assert info.value.status() == "StatusCode.UNAVAILABLE"
    assert info.value.message() == requests.post(
        repository_server.url + "/v2/models/flower/infer", timeout=5,
        json={"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4],
                          "data": [6.8, 2.8, 4.8, 1.4]}]}).json()["error"]
    c.load_model("flower")
    assert _index(c)["flower"] == ("READY", "")
    np.testing.assert_array_equal(c.infer("flower", [iris_input()]).as_numpy("predict"), [1])


def test_repository_ready_filter(repository_server):
    with grpc.insecure_channel(repository_server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        reply = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True))
    assert {m.name for m in reply.models} <= {"iris", "flower"}
    assert all(m.state == "READY" for m in reply.models)


def test_loading_a_missing_folder_is_not_found(repository_server):
    c = grpcclient.InferenceServerClient(repository_server.grpc_target)
    with pytest.raises(InferenceServerException) as info:
        c.load_model("ghost")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as info:
        c.load_model("../etc")
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_single_model_server_refuses_load_and_unload(iris_server):
    c = grpcclient.InferenceServerClient(iris_server.grpc_target)
    for call in (lambda: c.load_model("iris"), lambda: c.unload_model("iris")):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "no model repository" in info.value.message()
    assert c.is_model_ready("iris")


# -- flags ---------------------------------------------------------------------------------------
def _refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_enable_grpc_false_serves_rest_only(launch):
    server = launch("-m", "sklearnserver", "--model_name", "iris", "--model_dir",
                    str(EXAMPLES / "sklearn-iris"), "--enable_grpc=false")
    assert requests.get(server.url + "/v2/health/ready", timeout=5).status_code == 200
    assert _refused(server.grpc_port)


def _server_process_class():
    """The suite's ServerProcess (tests/conftest.py), to set up a port before the start."""
    spec = importlib.util.spec_from_file_location("suite_conftest", HERE.parent / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ServerProcess


def test_a_taken_grpc_port_fails_the_start(tmp_path):
    server = _server_process_class()([sys.executable, "-m", "sklearnserver", "--model_name", "iris",
                            "--model_dir", str(EXAMPLES / "sklearn-iris")], tmp_path / "log")
    # Even a socket that allows port sharing: one worker must not share its port silently.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", server.grpc_port))
        taken.listen()
        server.start()
        try:
            assert server.wait_exit(60) != 0
        finally:
            server.stop()
    assert "cannot listen" in server.output()


def test_message_size_limit_flag(launch):
    server = launch(MODELS, "--grpc_max_message_bytes", str(1 << 20))
    c = grpcclient.InferenceServerClient(server.grpc_target)
    small = np.zeros(100_000, np.float32)  # 400 kB
    assert c.infer("identity", [fp32_input("t", small)]).as_numpy("t").shape == (100_000,)
    with pytest.raises(InferenceServerException) as info:
        c.infer("identity", [fp32_input("t", np.zeros(500_000, np.float32))])  # 2 MB
    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_default_message_size_passes_65_mib_both_ways(models_server):
    big = np.arange(65 * (1 << 20) // 4, dtype=np.float32)
    request = service_pb2.ModelInferRequest(model_name="identity")
    request.inputs.add(name="t", datatype="FP32", shape=[big.size])
    request.raw_input_contents.append(big.tobytes())
    options = [("grpc.max_send_message_length", 1 << 28),
               ("grpc.max_receive_message_length", 1 << 28)]
    with grpc.insecure_channel(models_server.grpc_target, options=options) as channel:
        reply = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request,
                                                                              timeout=60)
    assert len(reply.raw_output_contents[0]) == big.nbytes
    assert np.array_equal(np.frombuffer(reply.raw_output_contents[0], np.float32), big)


def test_workers_share_the_grpc_port(launch):
    server = launch(MODELS, "--workers", "2")
    pids = set()
    x = np.ones(1, np.float32)
    for _ in range(40):
        # A channel of its own for each call: a new connection, which the kernel may give to
        # either worker.
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(server.grpc_target, options=options) as channel:
            request = service_pb2.ModelInferRequest(model_name="pid")
            request.inputs.add(name="x", datatype="FP32", shape=[1])
            request.raw_input_contents.append(x.tobytes())
            reply = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request,
                                                                                  timeout=10)
        pids.add(int(np.frombuffer(reply.raw_output_contents[0], np.int64)[0]))
        if len(pids) == 2:
            break
    assert len(pids) == 2
    assert server.proc.pid not in pids


def test_grpc_requests_are_in_the_metrics(models_server):
    c = grpcclient.InferenceServerClient(models_server.grpc_target)
    c.infer("summary", [fp32_input("x", np.ones((1, 2), np.float32))])
    with pytest.raises(InferenceServerException):
        c.infer("broken", [fp32_input("x", np.ones(1, np.float32))])
    with pytest.raises(InferenceServerException):
        c.infer("client-chosen-name", [fp32_input("x", np.ones(1, np.float32))])
    text = requests.get(models_server.url + "/metrics", timeout=5).text
    assert 'modelserver_requests_total{model="summary",protocol="grpc",status="200"}' in text
    assert 'modelserver_requests_total{model="broken",protocol="grpc",status="500"}' in text
    assert 'model="",protocol="grpc",status="404"' in text
    assert "client-chosen-name" not in text


# -- shutdown ------------------------------------------------------------------------------------
def test_sigterm_lets_inflight_grpc_calls_finish(launch):
    server = launch(MODELS, "--graceful_shutdown_seconds", "10")
    c = grpcclient.InferenceServerClient(server.grpc_target)
    outcome = {}

    def call():
        try:
            result = c.infer("sleepy", [fp32_input("x", np.array([4.0], np.float32))],
                             parameters={"sleep": 1.5})
            outcome["data"] = result.as_numpy("output-0").tolist()
        except Exception as exc:  # recorded for the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    thread.join(30)
    assert outcome.get("data") == [4.0], outcome
    assert server.wait_exit(30) == 0


def test_a_health_watcher_sees_the_shutdown_and_does_not_hold_it_up(launch):
    server = launch(MODELS, "--graceful_shutdown_seconds", "20")
    seen = []

    def watch():
        with grpc.insecure_channel(server.grpc_target) as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=60)
            try:
                for reply in stream:
                    seen.append(reply.status)
            except grpc.RpcError as exc:
                seen.append(exc.code())

    thread = threading.Thread(target=watch)
    thread.start()
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    assert time.monotonic() - started < 10  # not the 20 s grace period
    thread.join(10)
    assert seen[0] == SERVING
    assert NOT_SERVING in seen[1:]

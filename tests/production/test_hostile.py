"""Hostile traffic and bad days: every bound holds, nothing leaks, nothing starves."""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
IRIS = REPO / "examples" / "sklearn-iris"
SCRIPT = str(REPO / "tests" / "core" / "custom_models.py")
ROW = [[6.8, 2.8, 4.8, 1.4]]
V1_BODY = json.dumps({"instances": ROW}).encode()


def rss_mb(server) -> float:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def v1_request(host: str) -> bytes:
    return (f"POST /v1/models/iris:predict HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(V1_BODY)}\r\n\r\n"
            ).encode() + V1_BODY


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as load balancers and killed clients do."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def live(server) -> float:
    started = time.monotonic()
    assert requests.get(server.url + "/v2/health/live", timeout=10).status_code == 200
    return time.monotonic() - started


@pytest.fixture(scope="module")
def iris(launch):
    return launch("-m", "sklearnserver", "--model_name", "iris", "--model_dir", str(IRIS),
                  "--access_log", "false", "--request_read_timeout_seconds", "2",
                  "--max_connections", "40")


def test_reset_connections_leave_nothing_behind(iris):
    def one_connection(_):
        with socket.create_connection(("127.0.0.1", iris.http_port)) as sock:
            sock.sendall(v1_request("127.0.0.1"))
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            reset(sock)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one_connection, range(300)))  # warm up: allocator pools, caches
        before = rss_mb(iris)
        list(pool.map(one_connection, range(4000)))
    # Each connection's state used to stay for the keep-alive timeout: ~11 KB each, 44 MB here.
    assert rss_mb(iris) - before < 12


def test_huge_heads_are_refused_and_bounded(iris):
    before = rss_mb(iris)
    with socket.create_connection(("127.0.0.1", iris.http_port)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:  # 64 MB of one header, unless the server hangs up
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:
            pass
        sock.settimeout(10)
        try:
            reply = sock.recv(4096)
        except ConnectionResetError:
            reply = b""
    assert sent < 16 * 1024 * 1024  # the server stopped reading long before
    assert reply == b"" or reply.startswith(b"HTTP/1.1 431")
    assert rss_mb(iris) - before < 20
    assert live(iris) < 1
    # Many headers of the same total get the same answer, in one piece.
    headers = {f"X-H{i}": "v" * 100 for i in range(1000)}
    reply = requests.get(iris.url + "/v2/health/live", headers=headers, timeout=10)
    assert reply.status_code == 431 and "over the limit" in reply.json()["error"]


def test_a_request_must_arrive_in_time(iris):
    with socket.create_connection(("127.0.0.1", iris.http_port)) as sock:
        sock.sendall(b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100")
        sock.settimeout(10)
        started = time.monotonic()
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive in time" in reply
        assert sock.recv(4096) == b""  # and closed
        assert 1.5 < time.monotonic() - started < 5


LIMITED = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); "
           "sys.argv[0] = 'sklearnserver'; runpy.run_module('sklearnserver', run_name='__main__')")


def test_slow_and_idle_connections_cannot_crowd_out_probes(launch):
    """With 256 open files allowed (a container's limit), 400 connections that never finish
    a request must not keep probes out."""
    server = launch("-c", LIMITED, "--model_name", "iris", "--model_dir", str(IRIS),
                    "--access_log", "false", "--max_connections", "100")
    slow = []
    try:
        for _ in range(400):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", server.http_port))
            slow.append(sock)
        time.sleep(0.5)
        for sock in slow:
            try:
                sock.send(b"G")  # one byte of a request that never ends
            except OSError:
                pass
        for _ in range(5):
            assert live(server) < 1
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.parametrize("dims", [65, 200])
def test_too_many_dimensions_is_a_clean_400(iris, dims):
    shape = [1] * dims
    body = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": shape, "data": [1.0]}]}
    reply = requests.post(iris.url + "/v2/models/iris/infer", json=body, timeout=10)
    assert reply.status_code == 400 and "dimensions" in reply.json()["error"]
    header = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP32", "shape": shape,
                                     "parameters": {"binary_data_size": 4}}]}).encode()
    reply = requests.post(iris.url + "/v2/models/iris/infer", data=header + b"\0\0\0\0",
                          headers={"Inference-Header-Content-Length": str(len(header))},
                          timeout=10)
    assert reply.status_code == 400 and "dimensions" in reply.json()["error"]
    from modelserver.protocol.proto import grpc_service_pb2 as pb

    with grpc.insecure_channel(iris.grpc_target) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                    request_serializer=pb.ModelInferRequest.SerializeToString,
                                    response_deserializer=pb.ModelInferResponse.FromString)
        for raw in (True, False):
            request = pb.ModelInferRequest(model_name="iris")
            tensor = request.inputs.add(name="input-0", datatype="FP32", shape=shape)
            if raw:
                request.raw_input_contents.append(np.ones(1, np.float32).tobytes())
            else:
                tensor.contents.fp32_contents.append(1.0)
            with pytest.raises(grpc.RpcError) as caught:
                infer(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "dimensions" in caught.value.details()


@pytest.mark.parametrize("instances", [
    [{f"k{i}": 1.0} for i in range(5000)],  # every record with a key of its own
    [{f"c{i}": {str(i): 1.0} for i in range(5000)}],  # {index: value} columns, each its own index
], ids=["records", "indexed"])
def test_records_that_would_make_a_huge_table_are_refused_at_once(iris, instances):
    """A 100 KB body of records whose keys all differ would be a 5000 x 5000 table, nearly all
    missing values: refused before it is built."""
    started = time.monotonic()
    reply = requests.post(iris.url + "/v1/models/iris:predict", json={"instances": instances},
                          timeout=30)
    assert reply.status_code == 400 and "too few rows have the same keys" in reply.json()["error"]
    assert time.monotonic() - started < 2
    assert live(iris) < 1  # the server was not held up


def test_an_h2c_upgrade_is_declined_with_an_answer(iris):
    """`curl --http2` asks to upgrade with its request, which is answered over HTTP/1.1 (the
    parser stops at the upgrade, so a body that would follow is not read: a 400). Either way
    the client gets an answer, then the connection closes."""
    upgrade = (b"Host: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
               b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n")
    with_body = b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(V1_BODY), V1_BODY)
    for request, status, body in [
        (b"GET /v2/models/iris HTTP/1.1\r\n" + upgrade + b"\r\n", b"200", b'"name":"iris"'),
        (b"POST /v1/models/iris:predict HTTP/1.1\r\n" + upgrade + with_body, b"400",
         b"the request has no body"),
    ]:
        with socket.create_connection(("127.0.0.1", iris.http_port), timeout=10) as sock:
            sock.sendall(request)
            reply = b""
            while chunk := sock.recv(65536):  # until the server closes
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 " + status) and body in reply, reply


def test_gzip_encoded_v1_requests_are_read(iris):
    reply = requests.post(iris.url + "/v1/models/iris:predict", data=gzip.compress(V1_BODY),
                          headers={"Content-Encoding": "gzip",
                                   "Content-Type": "application/json"}, timeout=10)
    assert reply.status_code == 200 and reply.json() == {"predictions": [1]}


def test_sigterm_during_a_long_load_exits_within_the_grace_period(launch):
    server = launch(SCRIPT, "--graceful_shutdown_seconds", "2", wait=False,
                    env={"SLOW_LOAD_SECONDS": "60"})
    server.wait_listening()
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 6


def test_version_folders_are_versions_of_the_single_model(launch, tmp_path):
    for version in ("1", "3"):
        (tmp_path / version).mkdir()
        shutil.copy(IRIS / "model.joblib", tmp_path / version / "model.joblib")
    server = launch("-m", "sklearnserver", "--model_name", "iris", "--model_dir", str(tmp_path))
    reply = requests.post(server.url + "/v1/models/iris:predict", json={"instances": ROW},
                          timeout=10)
    assert reply.json() == {"predictions": [1]}
    assert requests.get(server.url + "/v2/models/iris", timeout=10).json()["versions"] == ["3"]
    assert requests.get(server.url + "/v1/models", timeout=10).json() == {"models": ["iris"]}


def test_two_loads_of_one_model_at_once_both_succeed(launch, tmp_path):
    """The second waits for the first instead of deleting its download."""
    model = (IRIS / "model.joblib").read_bytes()

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(model)))
            self.end_headers()
            for i in range(0, len(model), 256):
                self.wfile.write(model[i:i + 256])
                time.sleep(0.01)

        def log_message(self, *args):
            pass

    source = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=source.serve_forever, daemon=True).start()
    try:
        (tmp_path / "repo").mkdir()
        uri = f"http://127.0.0.1:{source.server_port}/model.joblib"
        server = launch("-m", "sklearnserver", "--model_dir", str(tmp_path / "repo"),
                        "--multi_model", "--allowed_storage_uris", uri)

        def load(_):
            return requests.post(server.url + "/v2/repository/models/fetched/load",
                                 json={"parameters": {"storage_uri": uri}}, timeout=120)

        with ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(load, range(2)))
        assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
        reply = requests.post(server.url + "/v1/models/fetched:predict",
                              json={"instances": ROW}, timeout=10)
        assert reply.json() == {"predictions": [1]}
    finally:
        source.shutdown()

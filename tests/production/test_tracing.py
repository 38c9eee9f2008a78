"""OpenTelemetry tracing end to end: the server exports over OTLP (HTTP and gRPC) to a receiver
on loopback; each inference request is one span with a child per stage, under the caller's
W3C trace context (REST header or gRPC metadata)."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

SCRIPT = str(Path(__file__).resolve().parents[1] / "core" / "custom_models.py")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
STAGES = {"preprocess", "queue", "inference", "postprocess"}


class Received:
    """Spans a receiver got, by trace id (hex)."""

    def __init__(self):
        self.spans: list = []
        self.lock = threading.Lock()

    def add(self, body: bytes) -> None:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        with self.lock:
            for resource_spans in request.resource_spans:
                service = {a.key: a.value.string_value
                           for a in resource_spans.resource.attributes}.get("service.name")
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((service, span) for span in scope_spans.spans)

    def trace(self, trace_id: str, count: int, timeout: float = 15) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [(s, span) for s, span in self.spans if span.trace_id.hex() == trace_id]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{len(found)} spans of trace {trace_id} arrived, not {count}")


@pytest.fixture
def http_receiver():
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                received.add(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()
            self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield received, {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
    server.shutdown()


@pytest.fixture
def grpc_receiver():
    received = Received()

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            received.add(request.SerializeToString())
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield received, {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                     "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    server.stop(0)


def start(launch, environment: dict):
    env = {**environment, "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_SERVICE_NAME": "traced"}
    return launch(SCRIPT, "--access_log", "false", env=env)


def check_request_trace(spans: list, name: str, model: str) -> None:
    by_id = {span.span_id: span for _, span in spans}
    (root,) = [span for span in by_id.values() if span.parent_span_id.hex() == PARENT_ID]
    assert root.name == name
    assert root.kind == root.SPAN_KIND_SERVER
    attributes = {a.key: a.value for a in root.attributes}
    assert attributes["model.name"].string_value == model
    assert attributes["model.version"].string_value == "1"
    children = [span for span in by_id.values() if span.parent_span_id == root.span_id]
    assert {span.name for span in children} == STAGES
    for child in children:  # each stage within the request, in order
        assert root.start_time_unix_nano <= child.start_time_unix_nano <= \
            child.end_time_unix_nano <= root.end_time_unix_nano
    assert {service for service, _ in spans} == {"traced"}


@pytest.mark.parametrize("receiver", ["http_receiver", "grpc_receiver"])
def test_rest_request_is_a_span_under_the_callers_trace(launch, request, receiver):
    received, environment = request.getfixturevalue(receiver)
    server = start(launch, environment)
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    reply = requests.post(server.url + "/v2/models/echo/infer", headers={
        "traceparent": traceparent}, json={"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}, timeout=10)
    assert reply.status_code == 200
    check_request_trace(received.trace(TRACE_ID, 5), "POST /v2/models/{model}/infer", "echo")


def test_grpc_request_carries_its_metadata_trace(launch, http_receiver):
    received, environment = http_receiver
    server = start(launch, environment)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    client = grpcclient.InferenceServerClient(server.grpc_target)
    x = grpcclient.InferInput("x", [1, 2], "FP32")
    x.set_data_from_numpy(np.ones((1, 2), np.float32))
    client.infer("echo", [x], headers={"traceparent": f"00-{trace_id}-{PARENT_ID}-01"})
    spans = received.trace(trace_id, 5)
    check_request_trace(spans, "inference.GRPCInferenceService/ModelInfer", "echo")


def test_probes_are_not_traced_and_failures_are_errors(launch, http_receiver):
    received, environment = http_receiver
    server = start(launch, environment)
    trace_id = "1" * 32
    requests.get(server.url + "/v2/health/ready", timeout=10,
                 headers={"traceparent": f"00-{'2' * 32}-{PARENT_ID}-01"})
    reply = requests.post(server.url + "/v2/models/broken/infer", headers={
        "traceparent": f"00-{trace_id}-{PARENT_ID}-01"}, json={"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}, timeout=10)
    assert reply.status_code == 500
    (_, span), *_ = [s for s in received.trace(trace_id, 1)
                     if s[1].parent_span_id.hex() == PARENT_ID]
    assert span.status.code == span.status.STATUS_CODE_ERROR
    assert not [s for _, s in received.spans if s.trace_id.hex() == "2" * 32]

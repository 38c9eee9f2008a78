"""OpenTelemetry tracing of inference requests, off unless asked for.

Each inference request becomes one server span, with a child span per stage (preprocess, queue,
inference, postprocess), built when the request has been answered, from the timestamps the data
plane stamped on its call: nothing runs on the request's path but reading the caller's W3C
`traceparent` (REST header or gRPC metadata). Spans leave through the SDK's batch processor, in a
thread of its own, to the exporter OpenTelemetry's standard variables choose
(`OTEL_TRACES_EXPORTER`: `otlp` or `console`; `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`: `grpc` or
`http/protobuf`; `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`; `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`...). Off, the recorder holds no tracer and the
OpenTelemetry packages are never imported."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

# Propagated trace context: W3C trace context headers (gRPC metadata keys are the same).
CONTEXT_HEADERS = ("traceparent", "tracestate")
STAGES = (("preprocess", "decoding", "queued"), ("queue", "queued", "running"),
          ("inference", "running", "ran"), ("postprocess", "ran", "encoded"))
# Span names by protocol: routes, not paths, so that names stay few.
NAMES = {"v1": "POST /v1/models/{model}:predict", "v2": "POST /v2/models/{model}/infer"}


def wanted(flag: bool | None, environ: Mapping[str, str] = os.environ) -> bool:
    """`--enable_tracing`, or else OpenTelemetry's variables naming an exporter or endpoint."""
    if flag is not None:
        return flag
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


class Tracer:
    def __init__(self, service: str):
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service)})
        self.provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
        self.provider.add_span_processor(BatchSpanProcessor(_exporter()))
        self.tracer = self.provider.get_tracer("modelserver")
        self.propagator = TraceContextTextMapPropagator()
        self.kind, self.in_context = SpanKind.SERVER, set_span_in_context
        self.error = Status(StatusCode.ERROR)
        # perf_counter seconds to nanoseconds since the epoch, as spans take them.
        self.offset = time.time_ns() - int(time.perf_counter() * 1e9)

    def record(self, call: Any, ended: float) -> None:
        if not call.inference:
            return
        context = self.propagator.extract(call.trace) if call.trace else None
        if call.method == "GRPC":  # OpenTelemetry's convention: package.Service/Method
            name = call.path.lstrip("/")
        else:
            name = NAMES.get(call.protocol) or f"{call.method} {call.path}"
        attributes = {"model.name": call.model or ""}
        if call.runner is not None:
            attributes["model.version"] = call.runner.version
        if call.method == "GRPC":
            service, _, method = name.partition("/")
            attributes.update({"rpc.system": "grpc", "rpc.service": service,
                               "rpc.method": method})
        else:
            attributes.update({"http.request.method": call.method, "url.path": call.path,
                               "http.response.status_code": call.status})
        span = self.tracer.start_span(name, context=context, kind=self.kind,
                                      attributes=attributes, start_time=self._ns(call.started))
        parent = self.in_context(span)
        for stage, begin, end in STAGES:
            first, last = getattr(call, begin), getattr(call, end)
            if first and last:
                child = self.tracer.start_span(stage, context=parent,
                                               start_time=self._ns(first))
                child.end(end_time=self._ns(last))
        if call.status >= 500:
            span.set_status(self.error)
        span.end(end_time=self._ns(ended))

    def _ns(self, seconds: float) -> int:
        return int(seconds * 1e9) + self.offset

    def shutdown(self) -> None:
        """Sends what is still waiting."""
        self.provider.shutdown()


def _exporter():
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")[0].strip().lower()
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").lower()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def carrier(headers) -> dict[str, str] | None:
    """The trace context among (name, value) pairs, bytes (ASGI headers) or text (gRPC
    metadata), names in lower case; None when the caller sent none."""
    found = {}
    for key, value in headers:
        if isinstance(key, bytes):
            key, value = key.decode("latin-1"), value.decode("latin-1")
        if key in CONTEXT_HEADERS:
            found[key] = value
    return found or None

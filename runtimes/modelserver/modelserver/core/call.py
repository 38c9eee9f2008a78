"""One request's life as the data plane records it: what it was, when each stage began and
ended, and how it ended. Transports make one per request and hand it back when the answer is
sent; the recorder turns it into statistics, metrics, an access-log line and a trace."""

from __future__ import annotations

from time import perf_counter
from typing import Any

# Protocol labels, as metrics name them.
GRPC = "grpc"  # REST requests are labelled by their path: v1, v2, or a custom route's


class Call:
    """Timestamps are `perf_counter()` seconds; an inference request sets them in order:

    started   the request arrived (its first byte was read)
    decoding  the data plane took it, body in hand: decoding and preprocessing begin
    queued    the request is ready to run: it waits for its batch or a thread
    running   the framework call that serves it began
    ran       that call returned: postprocessing and encoding begin
    encoded   the answer is ready to send

    A request that never reached the model keeps `runner` None; its timestamps stay 0."""

    __slots__ = ("protocol", "method", "path", "model", "label", "runner", "status", "inference",
                 "started", "decoding", "queued", "running", "ran", "encoded", "trace")

    def __init__(self, protocol: str, method: str, path: str, started: float | None = None):
        self.protocol = protocol
        self.method = method
        self.path = path
        self.model: str | None = None  # the model name the request asked for
        self.label = ""  # that name if a model has it (a metrics label), else ""
        self.runner: Any = None  # the Runner that took it, once admitted
        self.status = 200
        self.inference = False  # an inference request: counted per model
        self.started = perf_counter() if started is None else started
        self.decoding = self.queued = self.running = self.ran = self.encoded = 0.0
        self.trace: Any = None  # the caller's trace context (W3C traceparent), when tracing

"""One place that turns a finished call into everything that is known about it: the model's
Triton statistics, the Prometheus metrics, the access-log line and, when tracing is on, the
trace. All of them read the same timestamps."""

from __future__ import annotations

from time import perf_counter
from typing import Any

from ..ops.logs import AccessLog
from ..ops.metrics import Metrics
from .call import Call


class Recorder:
    def __init__(self, metrics: Metrics, access_log: AccessLog, tracer: Any = None):
        self.metrics = metrics
        self.access_log = access_log
        self.tracer = tracer  # ops.tracing.Tracer, or None when tracing is off

    def record(self, call: Call) -> None:
        ended = perf_counter()
        seconds = ended - call.started
        if call.inference:
            self._inference(call, ended, seconds)
        self.access_log(call.method, call.path, call.model, call.status, seconds)
        if self.tracer is not None:
            self.tracer.record(call, ended)

    def _inference(self, call: Call, ended: float, seconds: float) -> None:
        runner = call.runner
        if runner is None:  # never reached a model: counted under its name if it is a model's
            self.metrics.model(call.label).request(call.protocol, call.status, seconds)
        else:
            runner.stats.request(call, ended)
            metrics = runner.metrics
            metrics.request(call.protocol, call.status, seconds)
            if call.status == 200:
                metrics.preprocess.observe(call.queued - call.decoding)
                metrics.queue.observe(call.running - call.queued)
                metrics.inference.observe(call.ran - call.running)
                metrics.postprocess.observe(call.encoded - call.ran)
        self.metrics.changed()

"""Prometheus metrics, served at GET /metrics on the HTTP port.

The data plane's recorder counts into plain integers and bucket lists on the event loop, with no
lock. prometheus_client's Histogram.observe costs 2.4 µs here (a lock, and a Python loop over
the buckets); a request observes five histograms, which through it cost a sixth of an iris
request, against 0.3 µs each for a bisect and two adds. prometheus_client still writes the
exposition, through a Collector of ours.

With several workers, each writes a snapshot of its metrics to a folder they share, at most
SNAPSHOT_SECONDS after a change; /metrics in any worker adds its own live values to the others'
snapshots (gauges: only of workers still alive)."""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                   10, 30)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SNAPSHOT_SECONDS = 0.1

# Per model: name in ModelMetrics -> (metric name, help, buckets).
STAGES = {
    "queue": ("modelserver_queue_duration_seconds",
              "Time a request waited for its batch or a thread, once ready to run",
              LATENCY_BUCKETS),
    "preprocess": ("modelserver_preprocess_duration_seconds",
                   "Time to decode and preprocess a request", LATENCY_BUCKETS),
    "inference": ("modelserver_inference_duration_seconds",
                  "Time of the framework call that served a request (a merged batch's call)",
                  LATENCY_BUCKETS),
    "postprocess": ("modelserver_postprocess_duration_seconds",
                    "Time to postprocess and encode a response", LATENCY_BUCKETS),
    "batch_rows": ("modelserver_batch_rows", "Rows in one framework call", ROW_BUCKETS),
}
REQUESTS = ("modelserver_requests", "Requests answered, by model, protocol and status")
REQUEST_SECONDS = ("modelserver_request_duration_seconds",
                   "Time from request received to response sent")
INFLIGHT = ("modelserver_inflight_requests", "Inference requests being handled now")
MODELS_LOADED = ("modelserver_models_loaded", "Models ready to serve")


class Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # `le`: a value on a bound is in it
        self.sum += value

    def state(self) -> list:
        return [*self.counts, self.sum]

    def add_state(self, state: list) -> None:
        for i, count in enumerate(state[:-1]):
            self.counts[i] += count
        self.sum += state[-1]


class ModelMetrics:
    """One model's metrics (by name: they outlive its versions)."""

    __slots__ = ("requests", "request_seconds", *STAGES)

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}  # (protocol, status) -> count
        self.request_seconds: dict[str, Histogram] = {}  # protocol ->
        for stage, (_, _, bounds) in STAGES.items():
            setattr(self, stage, Histogram(bounds))

    def request(self, protocol: str, status: int, seconds: float) -> None:
        key = (protocol, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.request_seconds.get(protocol)
        if histogram is None:
            histogram = self.request_seconds[protocol] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def state(self) -> dict[str, Any]:
        return {
            "requests": [[protocol, status, count]
                         for (protocol, status), count in self.requests.items()],
            "request_seconds": {p: h.state() for p, h in self.request_seconds.items()},
            **{stage: getattr(self, stage).state() for stage in STAGES},
        }

    def add_state(self, state: dict[str, Any]) -> None:
        for protocol, status, count in state["requests"]:
            key = (protocol, status)
            self.requests[key] = self.requests.get(key, 0) + count
        for protocol, histogram in state["request_seconds"].items():
            if protocol not in self.request_seconds:
                self.request_seconds[protocol] = Histogram(LATENCY_BUCKETS)
            self.request_seconds[protocol].add_state(histogram)
        for stage in STAGES:
            getattr(self, stage).add_state(state[stage])


class Metrics:
    """This process's metrics. `gauges` is called at exposition for the live values
    (in-flight requests, models loaded)."""

    def __init__(self, gauges: Callable[[], tuple[int, int]] = lambda: (0, 0),
                 shared: Path | None = None):
        self.models: dict[str, ModelMetrics] = {}
        self.gauges = gauges
        self.shared = shared  # the folder the workers' snapshots meet in, with several workers
        self._pending: asyncio.TimerHandle | None = None

    def model(self, name: str) -> ModelMetrics:
        metrics = self.models.get(name)
        if metrics is None:
            metrics = self.models[name] = ModelMetrics()
        return metrics

    def changed(self) -> None:
        """Called after recording: with several workers, a snapshot is due."""
        if self.shared is not None and self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(SNAPSHOT_SECONDS,
                                                                 self.write_snapshot)

    # -- several workers ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        inflight, loaded = self.gauges()
        return {"pid": os.getpid(), "inflight": inflight, "models_loaded": loaded,
                "models": {name: m.state() for name, m in self.models.items()}}

    def write_snapshot(self) -> None:
        self._pending = None
        path = self.shared / f"metrics-{os.getpid()}.json"
        temporary = path.with_suffix(".tmp")
        try:
            temporary.write_bytes(orjson.dumps(self.state()))
            temporary.replace(path)  # readers see a whole snapshot or the previous one
        except OSError:
            pass  # the folder is gone: the server is stopping

    def _peers(self) -> list[dict[str, Any]]:
        peers = []
        for path in self.shared.glob("metrics-*.json") if self.shared else ():
            if path.name == f"metrics-{os.getpid()}.json":
                continue
            try:
                peers.append(orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError):
                continue
        return peers

    # -- exposition -----------------------------------------------------------------------------
    def exposition(self) -> tuple[bytes, str]:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        if self.shared is None:  # one process: its own process metrics too
            from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                registry.register(collector)
        return generate_latest(registry), CONTENT_TYPE_LATEST


class _Collector:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        metrics = self.metrics
        inflight, loaded = metrics.gauges()
        models = metrics.models
        peers = metrics._peers()
        if peers:
            merged = {}
            for name, own in models.items():
                merged[name] = ModelMetrics()
                merged[name].add_state(own.state())
            for peer in peers:
                for name, state in peer["models"].items():
                    merged.setdefault(name, ModelMetrics()).add_state(state)
                if _alive(peer["pid"]):
                    inflight += peer["inflight"]
                    loaded = max(loaded, peer["models_loaded"])
            models = merged
        yield from _families(models)
        yield GaugeMetricFamily(*INFLIGHT, value=inflight)
        yield GaugeMetricFamily(*MODELS_LOADED, value=loaded)


def _families(models: dict[str, ModelMetrics]):
    requests = CounterMetricFamily(*REQUESTS, labels=["model", "protocol", "status"])
    seconds = HistogramMetricFamily(*REQUEST_SECONDS, labels=["model", "protocol"])
    stages = {stage: HistogramMetricFamily(name, help_text, labels=["model"])
              for stage, (name, help_text, _) in STAGES.items()}
    for name, metrics in sorted(models.items()):
        for (protocol, status), count in metrics.requests.items():
            requests.add_metric([name, protocol, str(status)], count)
        for protocol, histogram in metrics.request_seconds.items():
            seconds.add_metric([name, protocol], *_buckets(histogram))
        if name:  # "" counts requests for names no model has: they have no stages
            for stage, family in stages.items():
                histogram = getattr(metrics, stage)
                if any(histogram.counts):
                    family.add_metric([name], *_buckets(histogram))
    return [requests, seconds, *stages.values()]


def _buckets(histogram: Histogram) -> tuple[list[tuple[str, float]], float]:
    cumulative, total = [], 0
    for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts):
        total += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
    return cumulative, histogram.sum


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

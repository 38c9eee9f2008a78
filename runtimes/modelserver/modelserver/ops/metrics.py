"""Prometheus metrics, served at GET /metrics on the HTTP port.

Labelled children are cached so that recording a request costs a dict lookup and an add. With
several workers, prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by the
server before the workers start) sums what every worker recorded."""

from __future__ import annotations

import os
from functools import cache

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                   10, 30)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter("modelserver_requests", "Requests answered, by model, protocol and status",
                   ["model", "protocol", "status"])
REQUEST_SECONDS = Histogram("modelserver_request_duration_seconds",
                            "Time from request received to response sent",
                            ["model", "protocol"], buckets=LATENCY_BUCKETS)
INFLIGHT = Gauge("modelserver_inflight_requests", "Requests being handled now",
                 multiprocess_mode="livesum")
QUEUE_SECONDS = Histogram("modelserver_queue_duration_seconds",
                          "Time a request waited for its batch to start", ["model"],
                          buckets=LATENCY_BUCKETS)
INFERENCE_SECONDS = Histogram("modelserver_inference_duration_seconds",
                              "Time of one framework call (one batch)", ["model"],
                              buckets=LATENCY_BUCKETS)
BATCH_ROWS = Histogram("modelserver_batch_rows", "Rows in one framework call", ["model"],
                       buckets=ROW_BUCKETS)
MODELS_LOADED = Gauge("modelserver_models_loaded", "Models ready to serve",
                      multiprocess_mode="livemax")


@cache
def _request_children(model: str, protocol: str, status: int):
    return REQUESTS.labels(model, protocol, str(status)), REQUEST_SECONDS.labels(model, protocol)


def record_request(model: str, protocol: str, status: int, seconds: float) -> None:
    counter, histogram = _request_children(model, protocol, status)
    counter.inc()
    histogram.observe(seconds)


@cache
def _model_children(model: str):
    return QUEUE_SECONDS.labels(model), INFERENCE_SECONDS.labels(model), BATCH_ROWS.labels(model)


def record_inference(model: str, rows: int, seconds: float) -> None:
    _, inference, batch = _model_children(model)
    inference.observe(seconds)
    batch.observe(rows)


def record_queue(model: str, seconds: float) -> None:
    _model_children(model)[0].observe(seconds)


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = DEFAULT_REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST

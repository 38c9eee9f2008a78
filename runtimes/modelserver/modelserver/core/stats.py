"""Per-model inference statistics in Triton's shape, for `GET /v2/models[/{name}]/stats` and
the ModelStatistics rpc (perf_analyzer reads them to split latency into its parts).

Recording is a dict lookup and a few integer adds, with no lock: every update runs on the
worker's event loop. Each worker process counts its own requests.

- `success`/`fail`: inference requests answered, and the time each spent in the server.
- `compute_input`/`compute_output`: turning the request into tensors, and the response into
  bytes (v2 requests only).
- `compute_infer`: model executions (predict); a batch of merged requests is one execution.
- `queue`: time requests waited for a batch, for models that batch.
- `inference_count` counts rows (a batch of n is n inferences), `execution_count` model calls,
  and `batch_stats` the executions of each batch size.
"""

from __future__ import annotations

import time
from typing import Any


class Duration:
    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


class ModelStats:
    __slots__ = ("last_inference", "inference_count", "execution_count", "success", "fail",
                 "queue", "compute_input", "compute_infer", "compute_output", "batches")

    def __init__(self) -> None:
        self.last_inference = 0  # milliseconds since the epoch
        self.inference_count = 0
        self.execution_count = 0
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.batches: dict[int, Duration] = {}  # batch size -> its executions

    def as_dict(self, name: str, version: str) -> dict[str, Any]:
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
                "cache_hit": {"count": 0, "ns": 0},
                "cache_miss": {"count": 0, "ns": 0},
            },
            "batch_stats": [
                {"batch_size": size,
                 "compute_input": {"count": 0, "ns": 0},
                 "compute_infer": duration.as_dict(),
                 "compute_output": {"count": 0, "ns": 0}}
                for size, duration in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }


_MODELS: dict[str, ModelStats] = {}


def of(name: str) -> ModelStats:
    stats = _MODELS.get(name)
    if stats is None:
        stats = _MODELS[name] = ModelStats()
    return stats


def record_success(name: str, total_ns: int, input_ns: int = -1, output_ns: int = -1) -> None:
    """A request answered; `input_ns`/`output_ns` when the transport timed its codec."""
    stats = _MODELS.get(name) or of(name)
    duration = stats.success
    duration.count += 1  # inlined Duration.add: this runs for every request
    duration.ns += total_ns
    if input_ns >= 0:
        duration = stats.compute_input
        duration.count += 1
        duration.ns += input_ns
    if output_ns >= 0:
        duration = stats.compute_output
        duration.count += 1
        duration.ns += output_ns


def record_failure(name: str, total_ns: int) -> None:
    of(name).fail.add(total_ns)


def record_execution(name: str, rows: int, seconds: float) -> None:
    """One model execution of `rows` rows: called by the data plane."""
    stats = of(name)
    ns = int(seconds * 1e9)
    stats.compute_infer.add(ns)
    stats.execution_count += 1
    stats.inference_count += rows
    stats.last_inference = time.time_ns() // 1_000_000
    batch = stats.batches.get(rows)
    if batch is None:
        batch = stats.batches[rows] = Duration()
    batch.add(ns)


def record_queue(name: str, seconds: float) -> None:
    of(name).queue.add(int(seconds * 1e9))


def statistics(dataplane, name: str | None = None, version: str | None = None) -> dict:
    """`{"model_stats": [...]}` for one model (404 if unknown) or every model served."""
    repository = dataplane.repository
    if name:
        models = [repository.get(name, version)]
    else:
        models = repository.models()
    return {"model_stats": [of(m.name).as_dict(m.name, m.version) for m in models]}


def forget(name: str) -> None:
    _MODELS.pop(name, None)

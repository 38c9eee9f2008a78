"""Triton's per-model statistics (the statistics extension), with Triton's meaning, for
`GET /v2/models[/{name}]/stats` and the ModelStatistics rpc. perf_analyzer reads them to split
latency into its parts, and refuses counts that disagree.

Per request (for successful ones, the same count in each):
- `success`/`fail`: requests answered, and their whole time in the server;
- `queue`: waiting for a batch or a thread, once ready to run;
- `compute_input`: decoding and preprocessing;
- `compute_infer`: the framework call that served the request (a merged batch's whole call);
- `compute_output`: postprocessing and encoding.
Per framework call: `execution_count`, `inference_count` (rows) and `batch_stats` by batch size,
whose compute_input and compute_output are merging requests into the batch and splitting its
outputs.

Recording is a few integer adds, with no lock: every update runs on the event loop. State lives
in the data plane, one `ModelStats` per served model version; each worker counts its own."""

from __future__ import annotations

import time
from typing import Any

NS = 1_000_000_000


class Duration:
    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += int(seconds * NS)

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


class BatchStats:
    __slots__ = ("compute_input", "compute_infer", "compute_output")

    def __init__(self) -> None:
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()


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
        self.batches: dict[int, BatchStats] = {}

    def request(self, call, ended: float) -> None:
        """One inference request answered (its stages from the call's timestamps), or failed."""
        if call.status != 200:
            self.fail.add(ended - call.started)
            return
        self.success.add(ended - call.started)
        self.compute_input.add(call.queued - call.decoding)
        self.queue.add(call.running - call.queued)
        self.compute_infer.add(call.ran - call.running)
        self.compute_output.add(call.encoded - call.ran)

    def execution(self, rows: int, merge: float, infer: float, split: float) -> None:
        """One framework call of `rows` rows, and the seconds spent merging its requests,
        running it, and splitting its outputs."""
        self.execution_count += 1
        self.inference_count += rows
        self.last_inference = time.time_ns() // 1_000_000
        batch = self.batches.get(rows)
        if batch is None:
            batch = self.batches[rows] = BatchStats()
        batch.compute_input.add(merge)
        batch.compute_infer.add(infer)
        batch.compute_output.add(split)

    def as_dict(self, name: str, version: str) -> dict[str, Any]:
        zero = {"count": 0, "ns": 0}
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
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [
                {"batch_size": size,
                 "compute_input": batch.compute_input.as_dict(),
                 "compute_infer": batch.compute_infer.as_dict(),
                 "compute_output": batch.compute_output.as_dict()}
                for size, batch in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }

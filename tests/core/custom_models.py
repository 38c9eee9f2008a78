"""Custom models served by one process, as a user would write them (run as a script)."""

import json
import os
import time

import numpy as np

from modelserver import (
    InferRequest,
    InferResponse,
    InvalidInput,
    Model,
    ModelServer,
    RouteRequest,
    Tensor,
    TensorSpec,
    route,
)
from modelserver.args import build_parser, parse_args


class Echo(Model):
    """Returns every input unchanged, and the request's parameters; async predict."""

    def inputs(self):
        return [TensorSpec("x", "FP32", [-1, 2])]

    def outputs(self):
        return [TensorSpec("x", "FP32", [-1, 2])]

    async def predict(self, request: InferRequest) -> InferResponse:
        return InferResponse(
            [Tensor(t.name, t.datatype, t.shape, t.data) for t in request.inputs],
            parameters=request.parameters,
        )


class Stats(Model):
    """Several outputs from one input: lets tests select outputs."""

    def predict(self, request: InferRequest):
        x = request.inputs[0].data.astype(np.float64)
        return {"sum": x.sum(axis=-1), "max": x.max(axis=-1), "min": x.min(axis=-1)}


class Broken(Model):
    def predict(self, request: InferRequest):
        raise RuntimeError("boom")


class Pid(Model):
    def predict(self, request: InferRequest):
        return np.array([os.getpid()], dtype=np.int64)


class Batched(Model):
    """Row-wise, slow enough for concurrent requests to pile up; reports each call's rows."""

    defaults = {"max_batch_size": 32}
    predict_in_thread = True

    def predict(self, request: InferRequest):
        x = request.inputs[0].data
        if (x < 0).any():
            raise ValueError("negative input")
        time.sleep(0.02)
        return {"double": x * 2, "batch_rows": np.full(len(x), len(x), dtype=np.int64)}


class Sleepy(Model):
    """Sleeps as long as the request's `sleep` parameter says, in a worker thread."""

    predict_in_thread = True

    def predict(self, request: InferRequest):
        time.sleep(float((request.parameters or {}).get("sleep", 0)))
        return request.inputs[0].data


class Slow(Model):
    """Takes SLOW_LOAD_SECONDS to load, so tests can watch readiness change."""

    def load(self):
        time.sleep(float(os.environ.get("SLOW_LOAD_SECONDS", "0")))
        return True

    def predict(self, request: InferRequest):
        return request.inputs[0].data


class Routed(Model):
    """A route of its own beside v1 and v2 (`POST /double`), and v2 doing the same work; both
    sleep for `sleep` seconds in a thread first."""

    predict_in_thread = True

    def predict(self, request: InferRequest):
        return self.double_values((request.parameters or {}).get("sleep", 0),
                                  request.inputs[0].data)

    @route("POST", "/double")
    async def double(self, request: RouteRequest):
        try:
            body = json.loads(request.body)
            values = np.asarray(body["values"], dtype=np.float64)
        except (ValueError, KeyError, TypeError):
            raise InvalidInput('send {"values": [numbers]}') from None
        result = await request.run(self.double_values, body.get("sleep", 0), values)
        return 200, json.dumps(result.tolist()).encode(), "application/json"

    @staticmethod
    def double_values(sleep: float, values: np.ndarray) -> np.ndarray:
        time.sleep(float(sleep))
        return values * 2


class Warm(Model):
    """Counts its calls: two warmup requests, made from its metadata, run before it is ready."""

    defaults = {"warmup": 2}

    def __init__(self, name: str):
        super().__init__(name)
        self.calls = 0

    def inputs(self):
        return [TensorSpec("x", "FP32", [-1])]

    def predict(self, request: InferRequest):
        self.calls += 1
        return np.array([self.calls], dtype=np.int64)


if __name__ == "__main__":
    args = parse_args(build_parser("custom_models"))
    ModelServer(args).start(
        [Echo("echo"), Stats("stats"), Broken("broken"), Pid("pid"), Slow("slow"),
         Batched("batched"), Sleepy("sleepy"), Routed("routed"), Warm("warm")]
    )

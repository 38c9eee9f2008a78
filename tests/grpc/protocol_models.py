"""Models for the protocol tests, served by one process (run as a script)."""

import os
import time

import numpy as np

from modelserver import InferRequest, InferResponse, Model, ModelServer, Tensor, TensorSpec
from modelserver.args import build_parser, parse_args


class Identity(Model):
    """Every input back as an output of the same name, and the request's parameters."""

    def predict(self, request: InferRequest) -> InferResponse:
        return InferResponse(
            [Tensor(t.name, t.datatype, list(t.data.shape), t.data) for t in request.inputs],
            parameters=request.parameters,
        )


class Summary(Model):
    """Three outputs from one FP32 input, row by row: lets clients pick outputs."""

    def inputs(self):
        return [TensorSpec("x", "FP32", [-1, -1])]

    def outputs(self):
        return [TensorSpec(n, "FP64", [-1]) for n in ("sum", "max", "min")]

    def predict(self, request: InferRequest):
        x = request.inputs[0].data.astype(np.float64)
        return {"sum": x.sum(axis=-1), "max": x.max(axis=-1), "min": x.min(axis=-1)}


class Labels(Model):
    """BYTES out: a label per row, and a per-output parameter."""

    def outputs(self):
        return [TensorSpec("label", "BYTES", [-1])]

    def predict(self, request: InferRequest) -> InferResponse:
        x = request.inputs[0].data
        labels = np.array([b"big" if row.sum() > 10 else "small" for row in x], dtype=object)
        return InferResponse([Tensor("label", "BYTES", [len(labels)], labels,
                                     {"unit": "label"})])


class Rows(Model):
    """Batches on its first dimension: metadata and config say so."""

    defaults = {"max_batch_size": 8}

    def inputs(self):
        return [TensorSpec("features", "FP32", [-1, 3]), TensorSpec("text", "BYTES", [-1])]

    def outputs(self):
        return [TensorSpec("total", "FP32", [-1])]

    def predict(self, request: InferRequest):
        return {"total": request.input("features").data.sum(axis=1)}


class Views(Model):
    """What each input's array is backed by: the name of the object at the end of its `.base`
    chain (an array that owns its data, or the request's bytes it is a view of)."""

    def predict(self, request: InferRequest):
        backing = []
        for tensor in request.inputs:
            array = tensor.data
            while isinstance(array.base, np.ndarray):
                array = array.base
            owner = array if array.base is None else array.base
            backing.append(f"{type(owner).__name__} writeable={tensor.data.flags.writeable}")
        return {"backing": np.array(backing, dtype=object)}


class Pid(Model):
    """The worker process that answered."""

    def predict(self, request: InferRequest):
        return np.array([os.getpid()], dtype=np.int64)


class Broken(Model):
    def predict(self, request: InferRequest):
        raise RuntimeError("boom")


class SlowLoad(Model):
    """Takes SLOW_LOAD_SECONDS to load, so tests can watch readiness turn."""

    def load(self):
        time.sleep(float(os.environ.get("SLOW_LOAD_SECONDS", "0")))
        return True

    def predict(self, request: InferRequest):
        return request.inputs[0].data


class Sleepy(Model):
    """Sleeps as long as the request's `sleep` parameter says, off the event loop."""

    predict_in_thread = True

    def predict(self, request: InferRequest):
        time.sleep(float((request.parameters or {}).get("sleep", 0)))
        return request.inputs[0].data


if __name__ == "__main__":
    args = parse_args(build_parser("protocol_models"))
    ModelServer(args).start([
        Identity("identity"), Summary("summary"), Labels("labels"), Rows("rows"),
        Views("views"), Pid("pid"), Broken("broken"), SlowLoad("slowload"), Sleepy("sleepy"),
    ])

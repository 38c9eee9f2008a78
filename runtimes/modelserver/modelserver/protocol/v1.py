"""KServe's v1 protocol: `{"instances": rows}` or `{"inputs": ...}` in, `{"predictions": ...}`
out. The default codec of `Model.decode_v1`/`encode_v1`; runtimes with a v1 dialect of their own
(TensorFlow Serving's) override those."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidInput
from ..types import InferRequest, InferResponse, RequestedOutput, Tensor, TensorSpec


def decode(body: Any, specs: list[TensorSpec], outputs: tuple[str, ...] | None) -> InferRequest:
    """The request a v1 body describes. Rows that are JSON objects become one input per key, so
    models with named features get them by name; otherwise the rows are one tensor, named
    after the model's single input (`specs`) or `input-0`."""
    if not isinstance(body, dict):
        raise InvalidInput("a v1 request must be a JSON object with 'instances' or 'inputs'")
    if "instances" in body:
        data = body["instances"]
        if not isinstance(data, list):
            raise InvalidInput("'instances' must be a list")
        rows_are_objects = bool(data) and all(isinstance(row, dict) for row in data)
        inputs = columns_of_rows(data) if rows_are_objects else [tensor(_name(specs), data)]
    elif "inputs" in body:
        data = body["inputs"]
        if isinstance(data, dict):
            inputs = [tensor(name, value) for name, value in data.items()]
        else:
            inputs = [tensor(_name(specs), data)]
    else:
        raise InvalidInput("a v1 request needs 'instances' or 'inputs'")
    requested = None if outputs is None else [RequestedOutput(name) for name in outputs]
    return InferRequest(inputs=inputs, outputs=requested, parameters=body.get("parameters"))


def encode(response: InferResponse) -> dict:
    """`{"predictions": ...}`: the one output as it is, or one object per row of several."""
    outputs = response.outputs
    if len(outputs) == 1:
        return {"predictions": outputs[0].data}
    rows = len(outputs[0].data) if outputs else 0
    return {"predictions": [{t.name: t.data[i] for t in outputs} for i in range(rows)]}


def tensor(name: str, data: Any) -> Tensor:
    try:
        array = np.asarray(data)
    except ValueError as exc:
        raise InvalidInput(f"input '{name}' is not a rectangular array: {exc}") from None
    if array.dtype == object:
        raise InvalidInput(f"input '{name}' is not a rectangular array of numbers or strings")
    return Tensor.from_numpy(name, array)


def columns_of_rows(rows: list[dict]) -> list[Tensor]:
    names = list(rows[0])
    if not names:
        raise InvalidInput("instances given as objects need at least one key")
    try:
        return [tensor(name, [row[name] for row in rows]) for name in names]
    except KeyError as exc:
        raise InvalidInput(f"every instance needs the same keys; one lacks {exc}") from None


def _name(specs: list[TensorSpec]) -> str:
    return specs[0].name if len(specs) == 1 else "input-0"

"""KServe's v1 protocol: `{"instances": rows}` or `{"inputs": ...}` in, `{"predictions": ...}`
out. The default codec of `Model.decode_v1`/`encode_v1`; runtimes with a v1 dialect of their own
(TensorFlow Serving's) override those.

As in KServe, a list under `inputs` is another name for `instances`, taken first when a body has
both; an object under `inputs` is columnar, one tensor per key. Rows are arrays (one tensor), or
JSON objects, one input per key (records): KServe's samples also send a list of records as one
row, and an object whose values are `{index: value}` (pandas' `dict` orient), and both are read
as pandas reads them, a key that some rows lack being missing (NaN) there."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidInput
from ..types import InferRequest, InferResponse, RequestedOutput, Tensor


def decode(body: Any, rows_input: str, outputs: tuple[str, ...] | None) -> InferRequest:
    """The request a v1 body describes. Rows that are JSON objects become one input per key, so
    models with named features get them by name; otherwise the rows are one tensor named
    `rows_input` (the model's single input, or `input-0`)."""
    if not isinstance(body, dict):
        raise InvalidInput("a v1 request must be a JSON object with 'instances' or 'inputs'")
    data = body.get("inputs")
    if isinstance(data, dict):
        inputs = [tensor(name, value) for name, value in data.items()]
    elif data is not None:
        inputs = tensors_of_rows(data, rows_input)
    elif "instances" in body:
        data = body["instances"]
        if not isinstance(data, list):
            raise InvalidInput("'instances' must be a list")
        inputs = tensors_of_rows(data, rows_input)
    else:
        raise InvalidInput("a v1 request needs 'instances' or 'inputs'")
    requested = None if outputs is None else [RequestedOutput(name) for name in outputs]
    return InferRequest(inputs=inputs, outputs=requested, parameters=body.get("parameters"))


def tensors_of_rows(rows: Any, rows_input: str) -> list[Tensor]:
    """Rows as tensors: one per key when they are records, else one named after the input."""
    if isinstance(rows, list) and rows:
        first = rows[0]
        if isinstance(first, dict):
            return columns_of_rows(_records(rows))
        if isinstance(first, list) and first and isinstance(first[0], dict):
            return columns_of_rows(_records([r for part in rows for r in _listed(part)]))
    return [tensor(rows_input, rows)]


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
    if not rows:
        raise InvalidInput("the instances hold no rows")
    names = list(rows[0])
    if not names:
        raise InvalidInput("instances given as objects need at least one key")
    try:
        if all(len(row) == len(names) for row in rows):  # then the same keys, or a KeyError
            return [tensor(name, [row[name] for row in rows]) for name in names]
    except KeyError:
        pass
    names = list(dict.fromkeys(name for row in rows for name in row))
    _dense_enough(len(rows), len(names), sum(len(row) for row in rows), "instances")
    return [_sparse_column(name, [row.get(name) for row in rows]) for name in names]


def _dense_enough(rows: int, columns: int, given: int, what: str) -> None:
    """Records whose keys differ make a table of rows x every key seen, the rest missing: a
    small body could ask for a huge one. Refused when most of it would be missing."""
    if rows * columns > 2 * given + 1024:
        raise InvalidInput(f"the {what} hold {given} values for {rows} rows and {columns} "
                           "different keys: too few rows have the same keys to make a table")


def _sparse_column(name: str, values: list) -> Tensor:
    """A column some rows lack: missing (NaN) there, as in a DataFrame built from the records;
    only numbers have a missing value."""
    if None not in values:
        return tensor(name, values)
    try:
        return Tensor.from_numpy(name, np.array(values, dtype=np.float64))
    except (TypeError, ValueError):
        raise InvalidInput(f"input '{name}' is missing from some instances; only numeric inputs "
                           "may be left out (missing, NaN)") from None


def _records(objects: list) -> list[dict]:
    """Objects as records; objects of `{index: value}` per key hold one record per index."""
    for item in objects:
        if not isinstance(item, dict):
            raise InvalidInput("every instance must be a JSON object when the first one is")
    first = objects[0]
    if not first or not all(isinstance(v, dict) for v in first.values()):
        return objects
    return [record for item in objects for record in _indexed(item)]


def _indexed(item: dict) -> list[dict]:
    columns = item.values()
    if not all(isinstance(column, dict) for column in columns):
        raise InvalidInput("every instance must hold {index: value} objects when the first does")
    index = dict.fromkeys(i for column in columns for i in column)
    _dense_enough(len(index), len(item), sum(len(column) for column in columns),
                  "{index: value} objects")
    return [{name: column.get(i) for name, column in item.items()} for i in index]


def _listed(part: Any) -> list:
    if not isinstance(part, list):
        raise InvalidInput("every instance must be a list of JSON objects when the first one is")
    return part


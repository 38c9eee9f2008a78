"""TensorFlow Serving's REST request and response formats, as KServe's TensorFlow runtime (TF
Serving itself) speaks them on `/v1/models/<name>:predict`.

Request: `{"signature_name": ..., "instances": [...]}` (row format: one entry per example, an
object keyed by input name when the signature has several inputs) or `{"inputs": ...}`
(columnar: the tensor itself, or an object of tensors by input name). String values are JSON
strings, or `{"b64": "<base64>"}` for binary data. A list of objects under `inputs`, which is no
tensor, is KServe's other name for `instances`: rows, answered as rows.

Response: `{"predictions": ...}` to the row format (one entry per example, an object keyed by
output name when the signature has several outputs) and `{"outputs": ...}` to the columnar one.
String outputs whose name ends in `_bytes` come back as `{"b64": ...}`, others as text."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from modelserver import InvalidInput, Tensor

from modelserver.runtime.conform import Spec, listing

def is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def decode(body: dict, inputs: list[Spec], what: str) -> list[Tensor]:
    """The request's tensors; `what` names the signature in messages."""
    has_rows, has_columns = "instances" in body, "inputs" in body
    if has_rows == has_columns:
        raise InvalidInput("a request needs exactly one of 'instances' (row format) or 'inputs' "
                           "(columnar format)")
    if has_rows:
        return _decode_rows(body["instances"], inputs, what)
    if _are_records(body["inputs"]):
        return _decode_rows(body["inputs"], inputs, what)
    return _decode_columns(body["inputs"], inputs, what)


def row_format(body: dict) -> bool:
    """Whether the request is in the row format, and so its answer: `instances`, or KServe's
    records under `inputs`."""
    return "instances" in body or _are_records(body.get("inputs"))


def _are_records(columns: Any) -> bool:
    """A list of JSON objects under `inputs` (other than `{"b64": ...}` strings), which TF Serving
    refuses as a tensor: KServe's other name for `instances`, read as rows."""
    return (isinstance(columns, list) and bool(columns) and isinstance(columns[0], dict)
            and not is_b64(columns[0]))


def _decode_rows(instances: Any, specs: list[Spec], what: str) -> list[Tensor]:
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list, one entry per example")
    first = instances[0]
    if isinstance(first, dict) and not is_b64(first):
        names = list(first)
        for instance in instances:
            if not isinstance(instance, dict) or instance.keys() != first.keys():
                raise InvalidInput("every instance must be an object with the same input names: "
                                   f"{', '.join(names)}")
        return [_tensor(name, [instance[name] for instance in instances], specs, what)
                for name in names]
    if len(specs) != 1:
        raise InvalidInput(f"{what} takes {len(specs)} inputs, {listing(specs)}: send each "
                           "instance as an object keyed by input name")
    return [_tensor(specs[0].name, instances, specs, what)]


def _decode_columns(columns: Any, specs: list[Spec], what: str) -> list[Tensor]:
    if isinstance(columns, dict) and not is_b64(columns):
        if not columns:
            raise InvalidInput("'inputs' has no tensors")
        return [_tensor(name, value, specs, what) for name, value in columns.items()]
    if len(specs) != 1:
        raise InvalidInput(f"{what} takes {len(specs)} inputs, {listing(specs)}: send 'inputs' "
                           "as an object keyed by input name")
    return [_tensor(specs[0].name, columns, specs, what)]


def _tensor(name: str, value: Any, specs: list[Spec], what: str) -> Tensor:
    spec = next((s for s in specs if s.name == name), None)
    if spec is None:
        raise InvalidInput(f"{what} has no input '{name}'; it takes {listing(specs)}")
    where = f"input '{name}'"
    array = _bytes_array(value, where) if spec.datatype == "BYTES" else _number_array(value, where)
    return Tensor.from_numpy(name, array)


def _number_array(value: Any, where: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise InvalidInput(f"{where} is not a rectangular array") from None
    if array.dtype == object:
        raise InvalidInput(f"{where} must be a rectangular array of numbers")
    return array


def _bytes_array(value: Any, where: str) -> np.ndarray:
    flat, shape = _flatten(value, where)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _flatten(value: Any, where: str) -> tuple[list[bytes], list[int]]:
    if not isinstance(value, list):
        return [_bytes_of(value, where)], []
    if not value:
        return [], [0]
    parts = [_flatten(item, where) for item in value]
    shape = parts[0][1]
    if any(part[1] != shape for part in parts):
        raise InvalidInput(f"{where} is not a rectangular array")
    return [x for part in parts for x in part[0]], [len(value), *shape]


def _bytes_of(value: Any, where: str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if is_b64(value):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise InvalidInput(f"{where}: 'b64' must hold base64 text") from None
    raise InvalidInput(f"{where} takes strings or {{\"b64\": ...}} objects, got "
                       f"{type(value).__name__}")


# -- responses ----------------------------------------------------------------------------------
def encode(outputs: list[Tensor], columnar: bool) -> dict:
    """The answer in the request's format: columnar to 'inputs', row to 'instances'."""
    if columnar:
        if len(outputs) == 1:
            return {"outputs": _json(outputs[0])}
        return {"outputs": {t.name: _json(t) for t in outputs}}
    if len(outputs) == 1:
        return {"predictions": _json(outputs[0])}
    rows = {t.data.shape[0] if t.data.ndim else None for t in outputs}
    if len(rows) != 1 or None in rows:
        sizes = ", ".join(f"'{t.name}' {list(t.data.shape)}" for t in outputs)
        raise InvalidInput("the row ('instances') format needs every output to have one entry "
                           f"per example, but the outputs' shapes are {sizes}: send 'inputs' "
                           "(columnar format) instead")
    columns = {t.name: _json(t) for t in outputs}
    return {"predictions": [{name: column[i] for name, column in columns.items()}
                            for i in range(rows.pop())]}


def _json(tensor: Tensor) -> Any:
    """What orjson writes: numeric arrays as they are, strings as nested lists."""
    data = tensor.data
    if data.dtype != object and data.dtype.kind not in "SU":
        return data.item() if data.ndim == 0 else data
    binary = tensor.name.endswith("_bytes")
    flat = [_text(x, binary) for x in data.reshape(-1).tolist()]
    if data.ndim == 0:
        return flat[0]
    nested = np.empty(len(flat), dtype=object)
    nested[:] = flat
    return nested.reshape(data.shape).tolist()


def _text(value: Any, binary: bool) -> Any:
    if isinstance(value, str):
        value = value.encode()
    if not binary:
        try:
            return value.decode()
        except UnicodeDecodeError:  # not text after all: send it intact rather than mangled
            pass
    return {"b64": base64.b64encode(value).decode()}

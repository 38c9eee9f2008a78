"""TensorFlow Serving's REST request and response formats, as KServe's TensorFlow runtime (TF
Serving itself) speaks them on `/v1/models/<name>:predict`.

Request: `{"signature_name": ..., "instances": [...]}` (row format: one entry per example, an
object keyed by input name when the signature has several inputs) or `{"inputs": ...}`
(columnar: the tensor itself, or an object of tensors by input name). String values are JSON
strings, or `{"b64": "<base64>"}` for binary data. A list of objects under `inputs`, which is no
tensor, is KServe's other name for `instances`: rows, answered as rows.

Response: `{"predictions": ...}` to the row format (one entry per example, an object keyed by
output name when the signature has several outputs) and `{"outputs": ...}` to the columnar one.
String outputs whose name ends in `_bytes` come back as `{"b64": ...}`, others as text.

`:classify` and `:regress` take `{"signature_name": ..., "context": {...}, "examples": [...]}`,
each example an object of features (a value or a list of values: integers, floats, strings or
`{"b64": ...}`), made into `tf.train.Example` protos for a signature saved for that method, and
answer `{"results": ...}`: per example, `[label, score]` pairs (classify) or one value (regress).
`GET .../metadata` answers the SavedModel's SignatureDefs as TF Serving does."""

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


# -- classify and regress -----------------------------------------------------------------------
METHODS = {"classify": "tensorflow/serving/classify", "regress": "tensorflow/serving/regress"}
# The context goes into every example: a small body could otherwise ask for a huge tensor.
MAX_CONTEXT_COPIES_BYTES = 64 << 20


def examples(body: dict, name: str) -> Tensor:
    """The request's examples as serialized `tf.train.Example` protos, a BYTES tensor named
    `name`. Context features go into every example, as TF Serving merges them."""
    listed = body.get("examples")
    if not isinstance(listed, list) or not listed:
        raise InvalidInput("'examples' must be a non-empty list of objects of features")
    context = body.get("context")
    shared = b"" if context is None else _example(context, "'context'").SerializeToString()
    if len(shared) * len(listed) > MAX_CONTEXT_COPIES_BYTES:
        raise InvalidInput(f"the context ({len(shared)} bytes) merged into each of "
                           f"{len(listed)} examples would be over "
                           f"{MAX_CONTEXT_COPIES_BYTES >> 20} MiB: send fewer examples a request")
    serialized = [shared + _example(item, f"example {i}").SerializeToString()
                  for i, item in enumerate(listed)]
    array = np.empty(len(serialized), dtype=object)
    array[:] = serialized
    return Tensor.from_numpy(name, array)


def _example(features: Any, where: str):
    from tensorflow.core.example import example_pb2

    if not isinstance(features, dict):
        raise InvalidInput(f"{where} must be an object of features")
    example = example_pb2.Example()
    for name, value in features.items():
        _fill(example.features.feature[name], value if isinstance(value, list) else [value],
              f"feature '{name}' of {where}")
    return example


def _fill(feature, values: list, where: str) -> None:
    """One kind per feature, decided by its values as TF Serving does: JSON integers and
    booleans are int64, other numbers float, strings and `{"b64": ...}` bytes."""
    kinds = {_kind(value, where) for value in values}
    if len(kinds) > 1:
        raise InvalidInput(f"{where} mixes {' and '.join(sorted(kinds))} values")
    kind = kinds.pop() if kinds else "float_list"
    if kind == "bytes_list":
        feature.bytes_list.value.extend(_bytes_of(v, where) for v in values)
    elif kind == "int64_list":
        if any(not -2**63 <= v < 2**63 for v in values):
            raise InvalidInput(f"{where} has an integer out of int64's range")
        feature.int64_list.value.extend(int(v) for v in values)
    else:
        feature.float_list.value.extend(values)


def _kind(value: Any, where: str) -> str:
    if isinstance(value, bool | int):
        return "int64_list"
    if isinstance(value, float):
        return "float_list"
    if isinstance(value, str) or is_b64(value):
        return "bytes_list"
    raise InvalidInput(f"{where} takes numbers, strings or {{\"b64\": ...}} objects, or a list "
                       f"of them; got {type(value).__name__}")


def classifications(outputs: list[Tensor]) -> dict:
    """`{"results": [[[label, score], ...], ...]}` from a classify signature's `classes` and
    `scores` (either may be missing: an empty label, or no score, as in TF Serving)."""
    by_name = {t.name: t.data for t in outputs}
    classes, scores = by_name.get("classes"), by_name.get("scores")
    if classes is None and scores is None:
        raise InvalidInput("the classify signature answers neither 'classes' nor 'scores'")
    given = scores if scores is not None else classes
    shape = (given.shape[0] if given.ndim else 1, -1)  # [examples, classes]
    labels = (np.full(given.shape, "", dtype=object) if classes is None else classes).reshape(shape)
    values = (np.zeros(given.shape) if scores is None else scores).reshape(shape)
    return {"results": [[[_text(label, False), float(score)] for label, score in zip(*pair)]
                        for pair in zip(labels.tolist(), values.tolist())]}


def regressions(outputs: list[Tensor]) -> dict:
    """`{"results": [value, ...]}`, one value per example, from a regress signature."""
    by_name = {t.name: t.data for t in outputs}
    values = by_name.get("outputs")
    if values is None or values.size != len(values):
        raise InvalidInput("the regress signature must answer 'outputs', one value per example")
    return {"results": values.reshape(-1).astype(float).tolist()}


# -- metadata -----------------------------------------------------------------------------------
def metadata(name: str, version: str, signature_defs: dict) -> dict:
    """TF Serving's GetModelMetadataResponse as JSON: the model's SignatureDefs, field names as
    in the protocol buffers, defaults written out."""
    from google.protobuf import json_format

    defs = {key: json_format.MessageToDict(value, preserving_proto_field_name=True,
                                           always_print_fields_with_no_presence=True)
            for key, value in signature_defs.items()}
    return {"model_spec": {"name": name, "signature_name": "", "version": version},
            "metadata": {"signature_def": {"signature_def": defs}}}

"""The Open Inference Protocol's JSON encoding of infer requests and responses."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from ..datatypes import from_numpy, to_numpy
from ..errors import InvalidInput
from ..types import InferRequest, InferResponse, RequestedOutput, Tensor

DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
# numpy's own limit of dimensions (NPY_MAXDIMS): 64 since numpy 2, 32 before (which old
# scikit-learn builds need).
MAX_DIMS = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=DUMPS_OPTIONS, default=_jsonable)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return jsonable_array(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def jsonable_array(array: np.ndarray) -> Any:
    """orjson writes numeric arrays natively; strings and bytes go through Python lists, nested
    as the array is (a v1 answer keeps its shape). A 0-d array is its one value."""
    if array.dtype.kind in "biuf" and array.dtype.isnative:
        return np.ascontiguousarray(array) if array.ndim else array.item()
    if array.dtype.kind == "S" or array.dtype == object:
        flat = [_jsonable(x) if isinstance(x, (bytes, np.generic)) else x for x in array.ravel()]
        if array.ndim == 1:
            return flat
        if array.ndim == 0:
            return flat[0]
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    return array.tolist()


def _params(obj: dict, where: str) -> dict | None:
    params = obj.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise InvalidInput(f"{where} 'parameters' must be an object")
    return params


# Bodies this large are parsed by simdjson, whose numbers go straight into a buffer with no Python
# object each: a 1000x100 FP32 tensor (2 MB of JSON) decoded in about a third of the time orjson
# and numpy's conversion of its list took. Below it, orjson alone is quicker.
LARGE_BODY = 16 * 1024
# Datatypes whose data simdjson reads as one buffer, and the buffer's element type.
_BUFFERS = {"FP16": "d", "FP32": "d", "FP64": "d", "INT8": "i", "INT16": "i", "INT32": "i",
            "INT64": "i", "UINT8": "u", "UINT16": "u", "UINT32": "u", "UINT64": "u"}
_BUFFER_DTYPES = {"d": np.dtype(np.float64), "i": np.dtype(np.int64), "u": np.dtype(np.uint64)}


def decode_body(body: bytes | memoryview) -> InferRequest:
    """An infer request's JSON body. A large one whose tensors hold plain numbers takes the
    quick way; anything else (and every error) the general one."""
    if len(body) >= LARGE_BODY:
        request = _decode_large(body)
        if request is not None:
            return request
    if not body:
        raise InvalidInput("the request has no body")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    return decode_request(parsed)


def _decode_large(body: bytes | memoryview) -> InferRequest | None:
    """None when the body is not the plain case (numbers where numbers go, in range)."""
    import simdjson

    try:
        doc = _parser().parse(body)
    except Exception:  # not JSON, or JSON simdjson does not take (integers past 64 bits):
        return None  # the general way says what is wrong, or takes it
    inputs = doc.get("inputs") if isinstance(doc, simdjson.Object) else None
    if not isinstance(inputs, simdjson.Array) or not len(inputs):
        return None
    tensors = []
    for item in inputs:
        if not isinstance(item, simdjson.Object):
            return None
        kind = _BUFFERS.get(item.get("datatype"))
        data = item.get("data")
        if kind is None or not isinstance(data, simdjson.Array):
            tensors.append(decode_input(item.as_dict()))
            continue
        head = {key: _python(item[key]) for key in item.keys() if key != "data"}
        try:
            flat = np.frombuffer(data.as_buffer(of_type=kind), dtype=_BUFFER_DTYPES[kind])
        except (TypeError, ValueError, RuntimeError):  # not all numbers of that kind, or out of
            return None  # range
        if len(flat) != len(data):  # nested: the general way checks that it is rectangular
            return None
        array = _narrowed(flat, to_numpy(head.get("datatype")))
        if array is None:
            return None
        tensors.append(decode_input({**head, "data": array}))
    rest = {key: _python(doc[key]) for key in doc.keys() if key != "inputs"}
    return request_of(rest, tensors)


def _python(value: Any) -> Any:
    as_python = getattr(value, "as_dict", None) or getattr(value, "as_list", None)
    return as_python() if as_python is not None else value


def _narrowed(array: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """The buffer in the tensor's own type; None if a value does not fit an integer type."""
    if dtype.kind in "iu" and dtype != array.dtype and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            return None
    return array.astype(dtype, copy=False)


_PARSER = None


def _parser():
    """One parser for the process: requests are decoded one at a time, on the event loop."""
    global _PARSER
    if _PARSER is None:
        import simdjson

        _PARSER = simdjson.Parser()
    return _PARSER


def decode_request(body: Any) -> InferRequest:
    if not isinstance(body, dict):
        raise InvalidInput("an infer request must be a JSON object")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("'inputs' must be a non-empty list")
    return request_of(body, [decode_input(item) for item in inputs])


def request_of(body: dict, tensors: list[Tensor]) -> InferRequest:
    """The request a JSON body describes, given its inputs already decoded."""
    if len({t.name for t in tensors}) != len(tensors):
        raise InvalidInput("input names must be unique")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    return InferRequest(
        inputs=tensors,
        id=request_id,
        outputs=decode_outputs(body.get("outputs")),
        parameters=_params(body, "request"),
    )


def decode_outputs(outputs: Any) -> list[RequestedOutput] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise InvalidInput("'outputs' must be a list")
    requested = []
    for item in outputs:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput("each requested output must be an object with a 'name'")
        requested.append(RequestedOutput(item["name"], _params(item, "output")))
    return requested


def decode_shape(shape: Any, name: str) -> list[int]:
    if not isinstance(shape, list) or not all(
        type(d) is int and d >= 0 for d in shape  # noqa: E721 - bool is not a dimension
    ):
        raise InvalidInput(f"input '{name}': 'shape' must be a list of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise InvalidInput(f"input '{name}' has {len(shape)} dimensions; at most {MAX_DIMS}")
    return shape


def decode_input(item: Any) -> Tensor:
    if not isinstance(item, dict):
        raise InvalidInput("each input must be a JSON object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput("each input needs a 'name'")
    datatype = item.get("datatype")
    dtype = to_numpy(datatype)
    shape = decode_shape(item.get("shape"), name)
    if "data" not in item:
        raise InvalidInput(f"input '{name}' has no 'data'")
    data = item["data"]
    array = _bytes_array(data, name) if datatype == "BYTES" else _numeric_array(data, dtype, name)
    return Tensor(name, datatype, shape, reshape(array, shape, name), _params(item, "input"))


def reshape(array: np.ndarray, shape: list[int], name: str) -> np.ndarray:
    expected = math.prod(shape)
    if array.size != expected:
        raise InvalidInput(
            f"input '{name}' has {array.size} elements but shape {shape} needs {expected}"
        )
    return array.reshape(shape)


def _first_leaf(data: Any) -> Any:
    while isinstance(data, list) and data:
        data = data[0]
    return data


def _numeric_array(data: Any, dtype: np.dtype, name: str) -> np.ndarray:
    if isinstance(data, np.ndarray):  # decoded already, in its type
        return data
    if isinstance(_first_leaf(data), (str, dict, type(None))):
        raise InvalidInput(f"input '{name}': data must be numbers of datatype {from_numpy(dtype)}")
    try:
        return np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"input '{name}': data does not fit {from_numpy(dtype)}: {exc}") from None


def _bytes_array(data: Any, name: str) -> np.ndarray:
    try:
        nested = np.array(data, dtype=object)
    except ValueError as exc:
        raise InvalidInput(f"input '{name}' is not a rectangular array: {exc}") from None
    flat = nested.reshape(-1)
    out = np.empty(flat.size, dtype=object)
    for i, element in enumerate(flat):
        if not isinstance(element, str):
            raise InvalidInput(f"input '{name}': BYTES data must be strings")
        out[i] = element.encode()
    return out.reshape(nested.shape)


def encode_response(response: InferResponse) -> bytes:
    body = response_head(response)
    body["outputs"] = [encode_output(t) for t in response.outputs]
    return dumps(body)


def response_head(response: InferResponse) -> dict[str, Any]:
    """A response's fields besides its outputs, as JSON carries them."""
    body: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version is not None:
        body["model_version"] = response.model_version
    if response.id is not None:
        body["id"] = response.id
    if response.parameters:
        body["parameters"] = response.parameters
    return body


def encode_output(tensor: Tensor) -> dict:
    out = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.data.shape),
        "data": jsonable_array(tensor.data.reshape(-1)),
    }
    if tensor.parameters:
        out["parameters"] = tensor.parameters
    return out

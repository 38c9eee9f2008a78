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

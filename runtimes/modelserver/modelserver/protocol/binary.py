"""Tensors as raw bytes: the binary tensor data extension of v2 REST, and the raw contents of
v2 gRPC.

A tensor's raw form is its elements, row-major and little-endian; a BYTES element is its
length as a 4-byte little-endian integer, then its bytes. Numeric tensors decode with
`np.frombuffer`: no copy and no Python objects per element, so a decoded array is a read-only
view of the request body.

REST (Triton's binary tensor data extension): a request whose `Inference-Header-Content-Length`
header is set carries that many bytes of JSON, then the raw data of every input whose
`parameters.binary_data_size` is set, in input order. A response carries outputs in raw form
when the request's `binary_data_output` parameter or the output's own `binary_data` parameter
asks for it: the JSON then says each one's `binary_data_size`, and the raw data follows it, in
output order, with the JSON's length in the `Inference-Header-Content-Length` response header.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Container

import numpy as np
import orjson

from ..datatypes import TO_NUMPY, to_numpy
from ..errors import InvalidInput, PayloadTooLarge, ServingError
from ..types import InferRequest, InferResponse, Tensor
from . import v2json

HEADER_LENGTH = b"inference-header-content-length"
CONTENT_ENCODING = b"content-encoding"
OCTET_STREAM = b"application/octet-stream"

_LENGTH = struct.Struct("<I")


class UnsupportedEncoding(ServingError):
    status = 415

# Little-endian whatever the host: the protocol's byte order.
_LITTLE = {name: dtype.newbyteorder("<") for name, dtype in TO_NUMPY.items() if name != "BYTES"}


# -- raw tensors ---------------------------------------------------------------------------------
def from_raw(raw: bytes | memoryview, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """A tensor from its raw form; numeric data is a read-only view of `raw`, not a copy."""
    if datatype == "BYTES":
        return v2json.reshape(deserialize_bytes(raw, name), shape, name)
    dtype = _LITTLE.get(datatype)
    if dtype is None:
        to_numpy(datatype)  # raises the error for an unknown datatype
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(f"input '{name}' has {len(raw)} bytes of data but shape {shape} of "
                           f"{datatype} needs {expected}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def to_raw(tensor: Tensor) -> bytes:
    """A tensor's raw form, in the datatype it declares."""
    data = tensor.data
    if tensor.datatype == "BYTES" or data.dtype.kind in "OSU":
        return serialize_bytes(data)
    dtype = _LITTLE.get(tensor.datatype, data.dtype)
    if data.dtype != dtype:
        data = data.astype(dtype)
    return data.tobytes()  # row-major, whatever the array's own layout


def deserialize_bytes(raw: bytes | memoryview, name: str) -> np.ndarray:
    """Length-prefixed elements as a 1-D object array of `bytes`."""
    view = memoryview(raw)
    items = []
    offset, end = 0, len(view)
    unpack = _LENGTH.unpack_from
    while offset < end:
        if offset + 4 > end:
            raise InvalidInput(f"input '{name}': BYTES data ends inside an element's length")
        (size,) = unpack(view, offset)
        offset += 4
        if offset + size > end:
            raise InvalidInput(f"input '{name}': a BYTES element of {size} bytes runs past the "
                               "end of the data")
        items.append(view[offset:offset + size].tobytes())
        offset += size
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def serialize_bytes(array: np.ndarray) -> bytes:
    pack = _LENGTH.pack
    parts = []
    for item in array.ravel():
        if not isinstance(item, bytes):
            item = item.encode() if isinstance(item, str) else str(item).encode()
        parts.append(pack(len(item)))
        parts.append(item)
    return b"".join(parts)


# -- REST requests -------------------------------------------------------------------------------
def decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    """A body sent with `Content-Encoding: gzip` or `deflate`, as tritonclient can send it."""
    name = encoding.strip().lower()
    if name in (b"", b"identity"):
        return body
    if name == b"gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif name == b"deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise UnsupportedEncoding(f"content encoding {encoding.decode('latin-1')!r} is not "
                                  "supported; use gzip or deflate")
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the request body is not valid {name.decode()}: {exc}") from None
    if len(data) > limit:
        raise PayloadTooLarge(f"the decompressed request body is over the limit of {limit} bytes")
    return data


def decode_request(body: bytes, header_length: bytes) -> InferRequest:
    """A request in the binary tensor data extension: JSON, then raw input data."""
    try:
        json_size = int(header_length)
    except ValueError:
        raise InvalidInput("Inference-Header-Content-Length must be an integer") from None
    if not 0 < json_size <= len(body):
        raise InvalidInput(f"Inference-Header-Content-Length is {json_size} but the body has "
                           f"{len(body)} bytes")
    view = memoryview(body)
    try:
        header = orjson.loads(view[:json_size])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request's JSON header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidInput("an infer request must be a JSON object")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("'inputs' must be a non-empty list")
    offset = json_size
    tensors = []
    for item in inputs:
        params = item.get("parameters") if isinstance(item, dict) else None
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            tensors.append(v2json.decode_input(item))
            continue
        if type(size) is not int or size < 0:  # noqa: E721 - bool is not a size
            raise InvalidInput(f"input '{item.get('name')}': binary_data_size must be a "
                               "non-negative integer")
        if offset + size > len(body):
            raise InvalidInput(f"input '{item.get('name')}' has binary_data_size {size} but "
                               f"only {len(body) - offset} bytes of data remain")
        tensors.append(_binary_input(item, view[offset:offset + size]))
        offset += size
    if offset != len(body):
        raise InvalidInput(f"the body has {len(body) - offset} bytes after the last input's data")
    return v2json.request_of(header, tensors)


def _binary_input(item: dict, raw: memoryview) -> Tensor:
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput("each input needs a 'name'")
    if "data" in item:
        raise InvalidInput(f"input '{name}' has both 'data' and binary_data_size")
    datatype = item.get("datatype")
    to_numpy(datatype)
    shape = v2json.decode_shape(item.get("shape"), name)
    params = {k: v for k, v in item["parameters"].items() if k != "binary_data_size"}
    return Tensor(name, datatype, shape, from_raw(raw, datatype, shape, name), params or None)


def binary_outputs(request: InferRequest) -> Container[str] | None:
    """The names of the outputs the response carries in raw form, taking the parameters that
    ask for it out of the request; None for a plain JSON response (the common case, decided
    without a lookup when the request has no parameters)."""
    params = request.parameters
    every = False
    if params and "binary_data_output" in params:
        every = params.pop("binary_data_output") is True
        if not params:
            request.parameters = None
    raw: set[str] = set()
    plain: set[str] = set()
    for output in request.outputs or ():
        oparams = output.parameters
        if oparams and "binary_data" in oparams:
            (raw if oparams.pop("binary_data") is True else plain).add(output.name)
            if not oparams:
                output.parameters = None
    if every:
        return _AllBut(plain)
    return raw or None


class _AllBut(frozenset):
    """Every name but these."""

    def __contains__(self, name: object) -> bool:
        return not super().__contains__(name)


def encode_response(response: InferResponse, wanted: Container[str]) -> tuple[bytes, int]:
    """The JSON header (with `binary_data_size` on the raw outputs) and the raw data after it,
    and the JSON header's length."""
    body = v2json.response_head(response)
    outputs = []
    chunks = []
    for tensor in response.outputs:
        if tensor.name in wanted:
            raw = to_raw(tensor)
            out = {"name": tensor.name, "datatype": tensor.datatype,
                   "shape": list(tensor.data.shape),
                   "parameters": {**(tensor.parameters or {}), "binary_data_size": len(raw)}}
            chunks.append(raw)
        else:
            out = v2json.encode_output(tensor)
        outputs.append(out)
    body["outputs"] = outputs
    header = v2json.dumps(body)
    return b"".join([header, *chunks]), len(header)

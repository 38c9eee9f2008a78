"""MLServer's content types on v2 requests, for every runtime and transport.

KServe serves v2 scikit-learn, XGBoost and MLflow models with MLServer by default, so v2 clients
often build their requests with MLServer's codecs (`mlserver.codecs`), which say how to read a
tensor in `parameters.content_type`:

- request-level `pd`: one input per DataFrame column. The tabular runtimes take one input per
  feature already (by name, or in order for a model fit on a plain array), so nothing is left to
  decode; `np` and `str` (one tensor) neither.
- input-level `np` and `str`: numbers as they are; BYTES as text, which is how BYTES reach the
  tabular runtimes already.
- input-level `base64`: BYTES elements that are base64 text, decoded here to the raw bytes
  (and kept as bytes by the tabular runtimes).
- input-level `datetime`: ISO 8601 text, decoded here to numpy datetime64 values (the tensor
  stays BYTES in name).

Other content types (`pd_json`, `hf`, ...) are left as sent. A request that used any content type
gets its outputs marked as MLServer's runtimes mark theirs: `parameters.content_type` `np`.

The request-level content type is taken out of the request's parameters once read, so such
requests still merge into batches."""

from __future__ import annotations

import base64
import binascii

import numpy as np

from ..errors import InvalidInput
from ..types import InferRequest, InferResponse, Tensor

CONTENT_TYPE = "content_type"
BINARY = "base64"  # what a tensor's content type is after its base64 text was decoded


def decode(request: InferRequest) -> bool:
    """Decodes the request's inputs in place by their content types; whether it used any."""
    used = False
    params = request.parameters
    if params and CONTENT_TYPE in params:
        params.pop(CONTENT_TYPE)
        if not params:
            request.parameters = None
        used = True
    for tensor in request.inputs:
        kind = tensor.parameters.get(CONTENT_TYPE) if tensor.parameters else None
        if kind is None:
            continue
        used = True
        if kind == "base64":
            tensor.data = _map_bytes(tensor, _from_base64, "base64 text")
        elif kind == "datetime":
            tensor.data = _datetimes(tensor)
    return used


def mark(response: InferResponse) -> None:
    """Marks each output as MLServer's runtimes do (NumpyCodec's `np`), keeping any content type
    an output already has."""
    for tensor in response.outputs:
        if not tensor.parameters:
            tensor.parameters = {CONTENT_TYPE: "np"}
        elif CONTENT_TYPE not in tensor.parameters:
            tensor.parameters = {**tensor.parameters, CONTENT_TYPE: "np"}


def is_binary(tensor: Tensor) -> bool:
    """Whether a BYTES tensor holds raw bytes (decoded base64), not text."""
    return bool(tensor.parameters) and tensor.parameters.get(CONTENT_TYPE) == BINARY


def _text_elements(tensor: Tensor, what: str) -> list:
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input '{tensor.name}' has content type "
                           f"{tensor.parameters[CONTENT_TYPE]} but datatype {tensor.datatype}; "
                           f"{what} comes as BYTES")
    return tensor.data.reshape(-1).tolist()


def _map_bytes(tensor: Tensor, convert, what: str) -> np.ndarray:
    out = np.empty(tensor.data.size, dtype=object)
    for i, element in enumerate(_text_elements(tensor, what)):
        try:
            out[i] = convert(element)
        except ValueError:
            raise InvalidInput(f"input '{tensor.name}' has content type "
                               f"{tensor.parameters[CONTENT_TYPE]} but element {i} is not "
                               f"{what}") from None
    return out.reshape(tensor.data.shape)


def _from_base64(element: bytes) -> bytes:
    try:
        return base64.b64decode(element, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def _datetimes(tensor: Tensor) -> np.ndarray:
    elements = _text_elements(tensor, "ISO 8601 text")
    try:
        values = np.array([e.decode("ascii") if isinstance(e, bytes) else e for e in elements],
                          dtype="datetime64[us]")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"input '{tensor.name}' has content type datetime but holds text "
                           f"that is not an ISO 8601 date and time: {exc}") from None
    return values.reshape(tensor.data.shape)

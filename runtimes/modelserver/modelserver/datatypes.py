"""Open Inference Protocol datatypes and their numpy equivalents."""

import numpy as np

from .errors import InvalidInput

TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

_FROM_NUMPY = {dtype: name for name, dtype in TO_NUMPY.items() if name != "BYTES"}


def to_numpy(datatype: str) -> np.dtype:
    try:
        return TO_NUMPY[datatype]
    except (KeyError, TypeError):
        raise InvalidInput(
            f"unknown datatype {datatype!r}; expected one of {', '.join(TO_NUMPY)}"
        ) from None


def from_numpy(dtype: np.dtype) -> str:
    """The protocol datatype of a numpy dtype; strings and objects travel as BYTES."""
    name = _FROM_NUMPY.get(dtype)
    if name is not None:
        return name
    if dtype.kind in "OUS":
        return "BYTES"
    raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol datatype")

"""Fit a request's tensors to a model's declared inputs: names, datatypes and shapes.

Numbers are cast to the declared type when no value changes meaning: any integer or float to a
float input, integers (and floats holding whole numbers) in range to an integer input. Anything
else (text for numbers, numbers for text, booleans for numbers) is a 400 that says what the model
expects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInput
from ..types import Tensor, kserve_index
from ..datatypes import from_numpy

FLOAT_TYPES = {"FP16", "FP32", "FP64", "BF16"}


@dataclass(frozen=True, slots=True)
class Spec:
    """A declared tensor. `shape` None: any rank; a None dimension: any size."""

    name: str
    datatype: str  # the Open Inference Protocol datatype (BYTES for strings, BF16 for bfloat16)
    dtype: np.dtype  # the numpy dtype the framework takes (object for strings)
    shape: tuple[int | None, ...] | None

    @property
    def v2_shape(self) -> list[int]:
        return [-1] if self.shape is None else [-1 if d is None else int(d) for d in self.shape]

    def describe(self) -> str:
        return f"{self.datatype} {format_shape(self.v2_shape) if self.shape is not None else '[...]'}"


def format_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def datatype_of(array: np.ndarray) -> str:
    try:
        return from_numpy(array.dtype)
    except ValueError:
        return str(array.dtype).upper()


def match_inputs(tensors: list[Tensor], specs: list[Spec], what: str) -> dict[str, np.ndarray]:
    """The request's arrays by input name, each cast and checked against its spec.

    `what` names the model (and signature) in messages: "model 'm'". KServe's name `input-N`,
    when the model has no input of that name, is its N-th input."""
    by_name = {spec.name: spec for spec in specs}
    given = {}
    for tensor in tensors:
        spec = by_name.get(tensor.name)
        if spec is None:
            index = kserve_index(tensor.name, "input-")
            if index is None or index >= len(specs):
                raise InvalidInput(f"{what} has no input '{tensor.name}'; it takes "
                                   f"{listing(specs)}")
            spec = specs[index]
        if spec.name in given:
            raise InvalidInput(f"{what} got input '{spec.name}' twice")
        given[spec.name] = conform(tensor.data, spec, f"input '{tensor.name}' of {what}")
    missing = [spec for spec in specs if spec.name not in given]
    if missing:
        raise InvalidInput(f"{what} needs input{'s' if len(missing) > 1 else ''} "
                           f"{listing(missing)}; the request has "
                           f"{', '.join(repr(t.name) for t in tensors) or 'none'}")
    return given


def listing(specs: list[Spec]) -> str:
    return ", ".join(f"'{spec.name}' ({spec.describe()})" for spec in specs) or "no inputs"


def conform(array: np.ndarray, spec: Spec, where: str) -> np.ndarray:
    array = cast(array, spec, where)
    check_shape(array.shape, spec, where)
    return array


def check_shape(shape: tuple[int, ...], spec: Spec, where: str) -> None:
    if spec.shape is None:
        return
    if len(shape) != len(spec.shape) or any(
        want is not None and want != got for want, got in zip(spec.shape, shape)
    ):
        raise InvalidInput(f"{where} expects shape {format_shape(spec.v2_shape)}, got "
                           f"{format_shape(shape)}")


def cast(array: np.ndarray, spec: Spec, where: str) -> np.ndarray:
    source, target = array.dtype, spec.dtype
    if spec.datatype == "BYTES":
        return _as_bytes(array, where)
    if source == target:
        return array
    wrong = InvalidInput(f"{where} expects {spec.describe()}, got {datatype_of(array)}")
    if spec.datatype in FLOAT_TYPES:
        if source.kind not in "iuf":
            raise wrong
    elif target.kind in "iu":
        if source.kind == "f":
            if array.size and not np.all(np.isfinite(array) & (np.trunc(array) == array)):
                raise InvalidInput(f"{where} expects {spec.describe()}: integers, got "
                                   f"{datatype_of(array)} values with fractions")
        elif source.kind not in "iu":
            raise wrong
        if not np.can_cast(source, target) and array.size:
            info = np.iinfo(target)
            if array.min() < info.min or array.max() > info.max:
                raise InvalidInput(f"{where} expects {spec.describe()}: values from {info.min} "
                                   f"to {info.max}, got {array.min()} to {array.max()}")
    elif target.kind == "b" or source.kind not in "iufb":
        raise wrong
    return array.astype(target)


def _as_bytes(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype.kind in "US":
        flat = [x.encode() if isinstance(x, str) else bytes(x) for x in array.reshape(-1).tolist()]
    elif array.dtype == object:
        flat = []
        for x in array.reshape(-1):
            if isinstance(x, bytes):
                flat.append(x)
            elif isinstance(x, str):
                flat.append(x.encode())
            else:
                raise InvalidInput(f"{where} expects BYTES (strings), got {type(x).__name__} "
                                   "values")
        if all(a is b for a, b in zip(flat, array.reshape(-1))):
            return array
    else:
        raise InvalidInput(f"{where} expects BYTES (strings), got {datatype_of(array)}")
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)

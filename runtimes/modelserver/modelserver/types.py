"""The data plane's own request and response types: numpy arrays end to end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .datatypes import from_numpy
from .errors import InvalidInput


@dataclass(slots=True)
class TensorSpec:
    """A declared input or output, as model metadata reports it. -1 is a variable dimension."""

    name: str
    datatype: str
    shape: list[int]

    def as_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


@dataclass(slots=True)
class Tensor:
    """A named tensor. `data` already has `shape`; BYTES tensors hold `bytes` objects."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    parameters: dict[str, Any] | None = None

    @classmethod
    def from_numpy(cls, name: str, array: Any, parameters: dict | None = None) -> Tensor:
        array = np.asarray(array)
        return cls(name, from_numpy(array.dtype), list(array.shape), array, parameters)


def kserve_index(name: str, prefix: str) -> int | None:
    """N of KServe's tensor names, `input-N` and `output-N` (`prefix` "input-" or "output-"),
    which its runtimes use and its clients send; None for other names."""
    digits = name[len(prefix):]
    if name.startswith(prefix) and digits.isdigit() and digits.isascii():
        return int(digits)
    return None


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: dict[str, Any] | None = None
    # The name the answer carries when the request named the output otherwise (KServe's
    # `output-N`, see Model.name_outputs).
    answer_as: str | None = None


@dataclass(slots=True)
class InferRequest:
    inputs: list[Tensor]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] | None = None
    model_name: str = ""

    def input(self, name: str) -> Tensor:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        raise InvalidInput(f"missing input '{name}'")

    def as_numpy(self) -> dict[str, np.ndarray]:
        return {tensor.name: tensor.data for tensor in self.inputs}

    @property
    def output_names(self) -> list[str] | None:
        return None if self.outputs is None else [o.name for o in self.outputs]


@dataclass(slots=True)
class InferResponse:
    outputs: list[Tensor]
    model_name: str = ""
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = field(default=None)

    def output(self, name: str) -> Tensor:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise KeyError(name)


# A custom route's answer: (status, body, content type).
Reply = tuple[int, bytes, str]


@dataclass(slots=True)
class RouteRequest:
    """What a custom route's handler gets: the body and headers (names lower-case), and `run`,
    which runs `fn(*args)` as the request's inference stage (`await request.run(fn, *args)`)."""

    body: bytes
    headers: Mapping[str, str]
    run: Callable[..., Awaitable[Any]]

"""Tabular models: rows of features, as scikit-learn, XGBoost, LightGBM and MLflow's column
signatures take them.

A tabular model takes `width` features per row, named when it was fit on a DataFrame. A request
gives them either as one [rows, width] matrix, in the features' order, or as one 1-D [rows]
input per feature: by name when the model has names, else in the request's order (as MLServer's
`pd` requests send a DataFrame's columns). BYTES arrive as bytes and models were fit on str, so
text is decoded on the way (`as_text`), but for raw bytes (MLServer's `base64` content type,
see protocol/content_types.py). The metadata of such a model reports one input per named
feature, each with its own datatype (BYTES for text, INT64 for integers), or one matrix.

pandas is imported only when a DataFrame is built: the core starts without it."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInput
from ..protocol.content_types import is_binary
from ..types import InferRequest, Tensor, TensorSpec

NUMERIC_KINDS = "fiub"


@dataclass(frozen=True, slots=True)
class Features:
    """A tabular model's features: `names` (None when it was fit on a plain array), `width`
    (None when unknown) and each one's datatype for metadata (`datatypes`, by position; FP64
    when not given). `model` names the model in messages."""

    model: str
    names: tuple[str, ...] | None = None
    width: int | None = None
    datatypes: tuple[str, ...] = ()
    # The names as a set, for the lookups each request makes (a tuple's are linear).
    known: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "known", frozenset(self.names or ()))

    @classmethod
    def of(cls, model: str, names: Iterable[Any] | None, width: int | None = None,
           datatypes: Sequence[str] | Mapping[str, str] = (), default: str = "FP64",
           overrides: Sequence[Mapping[str, Any]] | None = None) -> Features:
        """Features from what a fitted model stores. `datatypes` by position or by name
        (missing ones are `default`); `overrides` (settings.json's `inputs`) win by name, and
        naming a feature the model does not have is a ValueError."""
        names = None if names is None else tuple(str(n) for n in names)
        if names is not None:
            width = len(names)
        count = width or 0
        if isinstance(datatypes, Mapping):
            types = [datatypes.get(key, default) for key in names or ()] or [default] * count
        else:
            types = list(datatypes) + [default] * (count - len(datatypes))
        if overrides:
            types = _overridden(model, names, types, overrides)
        return cls(model, names, width, tuple(types[:count] if count else types))

    # -- metadata -------------------------------------------------------------------------------
    def specs(self) -> list[TensorSpec]:
        """One [-1] input per named feature, else one [-1, width] matrix (BYTES when its
        columns differ in type)."""
        if self.names is not None:
            return [TensorSpec(name, datatype, [-1])
                    for name, datatype in zip(self.names, self.datatypes)]
        kinds = set(self.datatypes)
        datatype = kinds.pop() if len(kinds) == 1 else "BYTES" if kinds else "FP64"
        return [TensorSpec("input-0", datatype, [-1, self.width or -1])]

    # -- requests -------------------------------------------------------------------------------
    def read(self, request: InferRequest, required: Sequence[str] | None = None,
             text: bool = True) -> np.ndarray | dict[str, np.ndarray]:
        """The request as a [rows, width] matrix, or as 1-D columns by feature name (in the
        features' order; by position, "0", "1", ..., for a model without names). `required`:
        the named features a request may not leave out (all of them by default). `text`: BYTES
        as str (False leaves them bytes, for models that take binary columns)."""
        inputs = request.inputs
        if len(inputs) == 1:
            only = inputs[0]
            if not (only.name in self.known and only.data.ndim == 1):
                return self.matrix(only.name, only.data,
                                   text and not (only.parameters and is_binary(only)))
        if self.names is None:
            return self._positional(inputs, text)
        binary = {t.name for t in inputs if is_binary(t)}
        return self.columns({t.name: t.data for t in inputs}, required, text, binary)

    def matrix(self, name: str, array: np.ndarray, text: bool = True) -> np.ndarray:
        """One input as the model's rows: 2-D, `width` wide (a 1-D input for a model of one
        feature is its one column)."""
        ndim = array.ndim
        if ndim == 1 and self.width == 1:
            array, ndim = array.reshape(-1, 1), 2
        if ndim != 2:
            width = self.width if self.width is not None else "features"
            raise InvalidInput(f"model '{self.model}' expects a 2-D [rows, {width}] input, got "
                               f"shape {list(array.shape)}")
        if self.width is not None and array.shape[1] != self.width:
            raise InvalidInput(f"model '{self.model}' expects {self.width} features per row, "
                               f"got {array.shape[1]}")
        return as_text(array) if text and array.dtype.kind == "O" else array

    def columns(self, given: Mapping[str, np.ndarray], required: Sequence[str] | None = None,
                text: bool = True, binary: Collection[str] = ()) -> dict[str, np.ndarray]:
        """Named inputs as 1-D columns of equal length, in the features' order; `binary`:
        the BYTES columns that hold raw bytes, not text."""
        names = self.names
        unknown = [name for name in given if name not in self.known]
        missing = [name for name in (names if required is None else required)
                   if name not in given]
        if unknown or missing:
            problems = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unknown {', '.join(unknown)}"] if unknown else [])
            raise InvalidInput(
                f"model '{self.model}' expects inputs {', '.join(names)}; {'; '.join(problems)} "
                f"(send one input per feature, or one [rows, {len(names)}] input)")
        return self._lined_up(((name, given[name]) for name in names if name in given), text,
                              binary)

    def _positional(self, tensors: list[Tensor], text: bool) -> dict[str, np.ndarray]:
        if any(t.data.ndim != 1 and t.data.shape[1:] != (1,) for t in tensors):
            raise InvalidInput(f"model '{self.model}' takes one [rows, {self.width or 'n'}] "
                               f"input, got {len(tensors)}")
        if self.width is not None and len(tensors) != self.width:
            raise InvalidInput(f"model '{self.model}' expects {self.width} features per row, "
                               f"got {len(tensors)} inputs")
        return self._lined_up(((str(i), t.data) for i, t in enumerate(tensors)), text,
                              {str(i) for i, t in enumerate(tensors) if is_binary(t)})

    @staticmethod
    def _lined_up(pairs: Iterable[tuple[str, np.ndarray]], text: bool,
                  binary: Collection[str]) -> dict[str, np.ndarray]:
        columns: dict[str, np.ndarray] = {}
        first = None
        for name, array in pairs:
            column = column_of(name, array)
            if text and name not in binary:
                column = as_text(column)
            if first is None:
                first = name
            elif len(column) != len(columns[first]):
                raise InvalidInput(f"feature columns do not line up: '{name}' has "
                                   f"{len(column)} rows, '{first}' has {len(columns[first])}")
            columns[name] = column
        return columns

    def frame(self, data: np.ndarray | Mapping[str, np.ndarray]):
        """What `read` gave, as a DataFrame with the features' names as columns."""
        import pandas as pd

        if isinstance(data, np.ndarray):
            return pd.DataFrame(data, columns=list(self.names) if self.names else None)
        if self.names is None:
            return pd.DataFrame(dict(enumerate(data.values())))
        return pd.DataFrame(data)


    def category_frame(self, columns: Mapping[str, np.ndarray], categorical: Sequence[bool],
                       dtype: np.dtype):
        """Columns as a DataFrame: categorical ones as pandas categories (XGBoost and LightGBM
        re-code them to the categories stored in the model, by value), the others as numbers in
        `dtype`."""
        import pandas as pd

        frame = {}
        for (name, column), is_category in zip(columns.items(), categorical):
            if is_category:
                frame[name] = pd.Categorical(column)
            else:
                require_numbers(f"input '{name}'", column)
                frame[name] = column.astype(dtype, copy=False)
        return pd.DataFrame(frame)


# -- arrays ---------------------------------------------------------------------------------------
def column_of(name: Any, array: np.ndarray) -> np.ndarray:
    """A [rows] or [rows, 1] input as a 1-D column."""
    if array.ndim == 2 and array.shape[1] == 1:
        return array.reshape(-1)
    if array.ndim != 1:
        raise InvalidInput(f"input '{name}' must be 1-D [rows], got shape {list(array.shape)}")
    return array


def as_text(array: np.ndarray) -> np.ndarray:
    """BYTES tensors arrive as bytes; models were fit on str."""
    if array.dtype.kind == "O" and array.size and isinstance(array.flat[0], bytes):
        return np.array([b.decode("utf-8", "replace") if isinstance(b, bytes) else b
                         for b in array.reshape(-1)], dtype=object).reshape(array.shape)
    return array


def require_numbers(what: str, array: np.ndarray) -> None:
    """`what` ("input 'x'") must hold numbers, not text."""
    if array.dtype.kind not in NUMERIC_KINDS:
        raise InvalidInput(f"{what} must be numbers (FP32, FP64, INT or BOOL), got BYTES")


def number_matrix(data: np.ndarray | Mapping[str, np.ndarray], dtype: np.dtype) -> np.ndarray:
    """What `Features.read` gave, as one matrix of numbers in `dtype` (a column of text is a
    400); a matrix of another numeric dtype is kept as it is."""
    if isinstance(data, np.ndarray):
        require_numbers("the input", data)
        return data
    columns = list(data.items())
    rows = len(columns[0][1]) if columns else 0
    matrix = np.empty((rows, len(columns)), dtype=dtype)
    for i, (name, column) in enumerate(columns):
        require_numbers(f"input '{name}'", column)
        matrix[:, i] = column
    return matrix


def datatype_of_values(values: Any) -> str:
    """The v2 datatype of a column of example values, a numpy array or a pandas Series: BYTES
    for text and other objects, INT64 for integers, FP64 for floats, BOOL."""
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        dtype = np.asarray(values).dtype
    kind = getattr(dtype, "kind", "O")
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    return "BYTES"


def _overridden(model: str, names: tuple[str, ...] | None, types: list[str],
                overrides: Sequence[Mapping[str, Any]]) -> list[str]:
    """settings.json's datatypes by feature name; a model without names has one input,
    `input-0`, whose datatype is every feature's."""
    keys = names if names is not None else ("input-0",)
    types = list(types)
    for item in overrides:
        if item["name"] not in keys:
            raise ValueError(f"settings.json: 'inputs' names '{item['name']}', which model "
                             f"'{model}' does not take; it takes {', '.join(keys)}")
        if names is None:
            types = [item["datatype"]] * max(len(types), 1)
        else:
            types[names.index(item["name"])] = item["datatype"]
    return types

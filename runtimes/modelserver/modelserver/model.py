"""The model API: subclass `Model`, implement `load` and `predict`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .datatypes import TO_NUMPY
from .errors import InvalidInput, NotFound, ServingError
from .protocol import v1
from .settings import ModelSettings
from .types import (InferRequest, InferResponse, Reply, RequestedOutput, Tensor, TensorSpec,
                    kserve_index)


class Model:
    """A servable model.

    `load()` runs once, off the event loop, before the model takes traffic; `self.settings` is
    set by then. `predict()` gets an `InferRequest` whose inputs are numpy arrays and returns an
    `InferResponse`, a mapping of output name to array, or a single array (named after the first
    declared output). It may be a coroutine. `preprocess`/`postprocess` wrap it. v1 requests are
    turned into the same `InferRequest` by `decode_v1`, and the response back by `encode_v1`;
    runtimes with a v1 dialect of their own (TensorFlow Serving's, say) override those two.
    """

    version: str = "1"
    platform: str = ""
    # The storage_uri a repository load request fetched this model's files from; None when the
    # files were there already (put there by whoever runs the server).
    fetched_from: str | None = None
    # The runtime's own defaults for its settings (see settings.py), e.g. {"max_batch_size": 128}
    # for a row-wise predict; flags and settings.json win over them.
    defaults: ClassVar[Mapping[str, Any]] = {}
    # The runtime's own flags, as argparse keyword arguments by flag name (KServe's --nthread,
    # say): their values reach every model as `settings.parameters[name]`.
    flags: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # Run predict in a thread of the model's own pool, so the event loop keeps parsing requests
    # meanwhile: worth it for frameworks that release the GIL while they compute (xgboost,
    # torch, TensorFlow), or whose predict may take long.
    predict_in_thread: ClassVar[bool] = False

    def __init__(self, name: str):
        self.name = name
        self.ready = False
        self.settings = ModelSettings()

    @classmethod
    def can_load(cls, folder: Path) -> bool:
        """Whether `folder` holds a model this class loads; runtimes override it so a model
        repository can tell which runtime serves which folder."""
        return False

    # -- lifecycle ------------------------------------------------------------------------------
    def load(self) -> bool | None:
        """Load weights. Return False (or raise) if the model cannot serve."""
        return True

    def unload(self) -> None:
        self.ready = False

    # -- metadata -------------------------------------------------------------------------------
    def inputs(self) -> list[TensorSpec]:
        return []

    def outputs(self) -> list[TensorSpec]:
        return []

    def example_request(self) -> InferRequest | None:
        """A request the model takes, for warming it up: zeros (empty strings for BYTES) shaped
        as its metadata says, a variable dimension as 1; None when it declares no inputs.
        Runtimes with an example of their own, or tighter shapes, override it."""
        specs = self.inputs()
        if not specs:
            return None
        return InferRequest([Tensor.from_numpy(spec.name, _zeros(spec)) for spec in specs])

    # -- inference ------------------------------------------------------------------------------
    def preprocess(self, request: InferRequest) -> InferRequest:
        return request

    def predict(self, request: InferRequest) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.predict")

    def postprocess(self, response: InferResponse) -> InferResponse:
        return response

    # -- v1 (KServe) protocol -------------------------------------------------------------------
    def decode_v1(self, body: Any, verb: str = "predict") -> InferRequest:
        """`{"instances": rows}` or `{"inputs": tensor-or-columns}` as an InferRequest. `verb`
        is the path's (`:predict`, or another a dialect has, as TF Serving's `:classify`)."""
        if verb != "predict":
            raise NotFound(f"model '{self.name}' answers :predict, not :{verb}")
        return v1.decode(body, self._v1_rows_input(), self.settings.outputs)

    def _v1_rows_input(self) -> str:
        """What v1 rows are named as one tensor: the model's single input, else `input-0`;
        worked out at the first request (a loaded model's inputs do not change)."""
        name = self.__dict__.get("_rows_input")
        if name is None:
            specs = self.inputs()
            name = self._rows_input = specs[0].name if len(specs) == 1 else "input-0"
        return name

    def encode_v1(self, response: InferResponse, body: Any, verb: str = "predict") -> dict:
        """The v1 answer; `body` is the request decode_v1 got, for dialects whose answer takes
        the request's form."""
        return v1.encode(response)

    def v1_status(self) -> dict:
        """What `GET /v1/models/{name}` answers besides KServe's name and readiness, in a v1
        dialect that says more (TF Serving's model_version_status)."""
        return {}

    def v1_metadata(self) -> dict:
        """`GET /v1/models/{name}/metadata`, in a v1 dialect that has it (TF Serving's)."""
        raise NotFound(f"model '{self.name}' has no v1 metadata; its metadata is at "
                       f"/v2/models/{self.name}")

    # -- shared by the data plane ---------------------------------------------------------------
    def name_outputs(self, request: InferRequest) -> None:
        """KServe's runtimes name their outputs `output-0`, `output-1`, ... and its clients ask
        for them by those names: a requested `output-N` that this model has no output of that
        name is its N-th default output (the v1 outputs from the settings, then the rest it
        declares), computed under its own name and answered under the requested one."""
        for want in request.outputs:  # a loop, not any(): most requests pass straight through
            if want.name.startswith(KSERVE_OUTPUT):
                break
        else:
            return
        declared = [spec.name for spec in self.outputs()]
        defaults = [*(self.settings.outputs or ()), *declared]
        defaults = list(dict.fromkeys(defaults))  # in order, once each
        for want in request.outputs:
            index = kserve_index(want.name, KSERVE_OUTPUT)
            if index is not None and want.name not in declared and index < len(defaults):
                want.name, want.answer_as = defaults[index], want.name

    def make_response(self, result: Any, request: InferRequest) -> InferResponse:
        """Normalise predict's result and keep only the outputs the request asked for."""
        if isinstance(result, InferResponse):
            response = result
        elif isinstance(result, Mapping):
            response = InferResponse([Tensor.from_numpy(k, v) for k, v in result.items()])
        else:
            specs = self.outputs()
            name = specs[0].name if specs else "output-0"
            response = InferResponse([Tensor.from_numpy(name, result)])
        if request.outputs is not None:
            response.outputs = _select(response.outputs, request.outputs, self.name)
        response.model_name = self.name
        response.model_version = self.version
        response.id = request.id
        return response

    @classmethod
    def routes(cls) -> dict[tuple[str, str], Route]:
        """The REST routes this class answers beside KServe v1 and v2, by (method, path)."""
        return _routes_of(cls)


# -- custom routes --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Route:
    """A REST route a model method answers (see `route`)."""

    method: str
    path: str
    handler: str  # the method's name
    inference: bool  # counted, limited and timed as an inference request
    error: Callable[[ServingError], Reply] | None  # the route's own error body


def route(method: str, path: str, *, inference: bool = True,
          error: Callable[[ServingError], Reply] | None = None):
    """Makes a model method the handler of `method path` (MLflow's `POST /invocations`, say).

    The handler is `async def handler(self, request: RouteRequest) -> Reply`, where a Reply is
    `(status, body bytes, content type)`. With `inference` (the default) the data plane treats
    the route as an inference request: queue limit, deadline, in-flight count, statistics,
    metrics and tracing, with `await request.run(fn, *args)` as the inference stage (in the
    model's threads when it predicts in a thread). Errors are `ServingError`s, answered as
    `{"error": message}` unless `error` renders them in the route's own format. The route is
    served when exactly one served model answers it."""

    def mark(function):  # a method may answer several routes: stack the decorators
        function.__routes__ = (*getattr(function, "__routes__", ()),
                               (method, path, inference, error))
        return function

    return mark


@cache
def _routes_of(cls: type) -> dict[tuple[str, str], Route]:
    found = {}
    for name in dir(cls):
        for method, path, inference, error in getattr(getattr(cls, name, None), "__routes__", ()):
            found[(method, path)] = Route(method, path, name, inference, error)
    return found


def _zeros(spec: TensorSpec) -> np.ndarray:
    shape = [1 if d < 0 else d for d in spec.shape]
    if spec.datatype == "BYTES":
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype=TO_NUMPY.get(spec.datatype, np.dtype(np.float32)))


KSERVE_OUTPUT = "output-"


def _select(outputs: list[Tensor], requested: list[RequestedOutput], model: str) -> list[Tensor]:
    by_name = {t.name: t for t in outputs}
    selected = []
    for want in requested:
        tensor = by_name.get(want.name)
        if tensor is None:
            index = kserve_index(want.name, KSERVE_OUTPUT)
            if index is not None and index < len(outputs):  # a model that declares no outputs
                tensor = replace(outputs[index], name=want.name)
            else:
                raise InvalidInput(f"model '{model}' has no output '{want.name}'; it has "
                                   f"{', '.join(by_name) or 'none'}")
        if want.answer_as is not None and tensor.name != want.answer_as:
            tensor = replace(tensor, name=want.answer_as)
        if want.parameters:
            tensor.parameters = {**(tensor.parameters or {}), **want.parameters}
        selected.append(tensor)
    return selected

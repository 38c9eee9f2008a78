"""The model API: subclass `Model`, implement `load` and `predict`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .errors import InvalidInput
from .types import InferRequest, InferResponse, RequestedOutput, Tensor, TensorSpec


class Model:
    """A servable model.

    `load()` runs once, off the event loop, before the model takes traffic. `predict()` gets an
    `InferRequest` whose inputs are numpy arrays and returns an `InferResponse`, a mapping of
    output name to array, or a single array (named after the first declared output). It may be a
    coroutine. `preprocess`/`postprocess` wrap it. v1 requests are turned into the same
    `InferRequest` by `decode_v1`, and the response back by `encode_v1`; runtimes with a v1 dialect
    of their own (TensorFlow Serving's, say) override those two.
    """

    version: str = "1"
    platform: str = ""
    # Outputs a v1 request asks for; None means whatever predict returns.
    v1_outputs: list[str] | None = None
    # Dynamic batching: when > 0, predict is row-wise along the first dimension of every input
    # and output, so concurrent requests are merged into one call of up to this many rows.
    # Metadata shapes then lead with -1. 0 (the default) never merges requests.
    max_batch_size: int = 0
    # Seconds a batch may wait for more rows; 0 takes whatever queued while the last call ran.
    max_batch_delay: float = 0.0
    # Run predict in a worker thread so the event loop keeps parsing requests meanwhile: worth it
    # for frameworks that release the GIL while they compute (xgboost, torch, TensorFlow).
    predict_in_thread: bool = False
    # Extra REST routes the runtime answers beside KServe v1 and v2 (MLflow's /invocations, say):
    # path -> {method: handler}. A handler is `async def handler(dataplane, body: bytes,
    # headers: dict[str, str])` (header names lower-case) returning (status, body) for JSON or
    # (status, body, [(b"content-type", ...)]). Built-in paths win over these.
    routes: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, name: str):
        self.name = name
        self.ready = False
        self.inflight = 0  # requests inside the data plane now; unloading waits for them
        self.settings: dict[str, Any] = {}  # from the repository's settings.json, if any

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

    # -- inference ------------------------------------------------------------------------------
    def preprocess(self, request: InferRequest) -> InferRequest:
        return request

    def predict(self, request: InferRequest) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.predict")

    def postprocess(self, response: InferResponse) -> InferResponse:
        return response

    # -- v1 (KServe) protocol -------------------------------------------------------------------
    def decode_v1(self, body: Any) -> InferRequest:
        """`{"instances": rows}` or `{"inputs": tensor-or-columns}` as an InferRequest.

        Rows that are JSON objects become one input per key, so models with named features get
        them by name."""
        if not isinstance(body, dict):
            raise InvalidInput("a v1 request must be a JSON object with 'instances' or 'inputs'")
        if "instances" in body:
            data = body["instances"]
            if not isinstance(data, list):
                raise InvalidInput("'instances' must be a list")
            rows_are_objects = bool(data) and all(isinstance(row, dict) for row in data)
            inputs = _columns_of_rows(data) if rows_are_objects else [self._v1_tensor(data)]
        elif "inputs" in body:
            data = body["inputs"]
            if isinstance(data, dict):
                inputs = [_v1_array(name, value) for name, value in data.items()]
            else:
                inputs = [self._v1_tensor(data)]
        else:
            raise InvalidInput("a v1 request needs 'instances' or 'inputs'")
        outputs = None if self.v1_outputs is None else [RequestedOutput(n) for n in self.v1_outputs]
        return InferRequest(inputs=inputs, outputs=outputs, parameters=body.get("parameters"))

    def encode_v1(self, response: InferResponse, body: Any) -> dict:
        """The v1 answer; `body` is the request decode_v1 got, for dialects whose answer takes
        the request's form."""
        outputs = response.outputs
        if len(outputs) == 1:
            return {"predictions": outputs[0].data}
        rows = len(outputs[0].data) if outputs else 0
        return {"predictions": [{t.name: t.data[i] for t in outputs} for i in range(rows)]}

    def _v1_tensor(self, data: Any) -> Tensor:
        specs = self.inputs()
        return _v1_array(specs[0].name if len(specs) == 1 else "input-0", data)

    # -- shared by the data plane ---------------------------------------------------------------
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


def _select(outputs: list[Tensor], requested: list, model: str) -> list[Tensor]:
    by_name = {t.name: t for t in outputs}
    selected = []
    for want in requested:
        tensor = by_name.get(want.name)
        if tensor is None:
            raise InvalidInput(
                f"model '{model}' has no output '{want.name}'; it has {', '.join(by_name) or 'none'}"
            )
        if want.parameters:
            tensor.parameters = {**(tensor.parameters or {}), **want.parameters}
        selected.append(tensor)
    return selected


def _v1_array(name: str, data: Any) -> Tensor:
    try:
        array = np.asarray(data)
    except ValueError as exc:
        raise InvalidInput(f"input '{name}' is not a rectangular array: {exc}") from None
    if array.dtype == object:
        raise InvalidInput(f"input '{name}' is not a rectangular array of numbers or strings")
    return Tensor.from_numpy(name, array)


def _columns_of_rows(rows: list[dict]) -> list[Tensor]:
    names = list(rows[0])
    if not names:
        raise InvalidInput("instances given as objects need at least one key")
    try:
        return [_v1_array(name, [row[name] for row in rows]) for name in names]
    except KeyError as exc:
        raise InvalidInput(f"every instance needs the same keys; one lacks {exc}") from None

"""The one data plane: every transport and protocol calls into this."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..ops import metrics
from . import stats
from .batching import Batcher
from ..errors import InvalidInput, ModelFailed, ServingError, Timeout, Unavailable
from ..model import Model
from .repository import ModelRepository
from ..types import InferRequest, InferResponse

log = logging.getLogger(__name__)


def fetch(uri: str, folder) -> None:
    from modelstorage import StorageError, download

    try:
        download(uri, folder)
    except StorageError as exc:
        raise InvalidInput(f"could not fetch {uri}: {exc}") from None

SERVER_NAME = "modelserver"


@dataclass(slots=True)
class Limits:
    max_queue: int = 1000  # requests inside one model at once; past it, 503
    max_tensor_elements: int = 100_000_000
    request_timeout: float = 120.0  # seconds; 0 for none


class DataPlane:
    def __init__(self, repository: ModelRepository, peers_ready: Callable[[], bool] | None = None,
                 limits: Limits | None = None):
        self.repository = repository
        self.limits = limits or Limits()
        self.draining = False  # set at SIGTERM: not ready any more, in-flight work finishes
        # With several worker processes, the server is ready only once every one of them is.
        self.peers_ready = peers_ready
        self.extensions: list[str] = []
        self.executor = ThreadPoolExecutor(thread_name_prefix="predict")
        self._batchers: dict[Model, Batcher] = {}

    # -- health and metadata --------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return (not self.draining and self.repository.all_ready()
                and (self.peers_ready is None or self.peers_ready()))

    def server_metadata(self) -> dict:
        return {"name": SERVER_NAME, "version": __version__, "extensions": self.extensions}

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return self.repository.get(name, version).ready

    def model_metadata(self, name: str, version: str | None = None) -> dict:
        model = self.repository.get(name, version)
        return {
            "name": model.name,
            "versions": [model.version],
            "platform": model.platform,
            "inputs": [spec.as_dict() for spec in model.inputs()],
            "outputs": [spec.as_dict() for spec in model.outputs()],
        }

    # -- model repository ---------------------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        return self.repository.index(ready_only)

    async def load_model(self, name: str, parameters: dict | None = None) -> None:
        """Load (or reload) `<model_dir>/<name>`, first fetching `storage_uri` into it if given."""
        uri = (parameters or {}).get("storage_uri")
        if uri is not None:
            folder = self.repository.folder_for_download(name)
            await asyncio.get_running_loop().run_in_executor(None, fetch, uri, folder)
        try:
            await self.repository.load_from_disk(name)
        except ServingError:
            raise
        except Exception as exc:
            raise ModelFailed(f"failed to load model '{name}': {exc}") from None

    async def unload_model(self, name: str) -> None:
        await self.repository.unload(name)

    # -- inference ------------------------------------------------------------------------------
    async def infer(
        self, name: str, request: InferRequest, version: str | None = None
    ) -> InferResponse:
        model = self.repository.ready_model(name, version)
        return await self._run(model, request)

    async def predict_v1(self, name: str, body: Any) -> dict:
        model = self.repository.ready_model(name)
        response = await self._run(model, model.decode_v1(body))
        return model.encode_v1(response, body)

    async def _run(self, model: Model, request: InferRequest) -> InferResponse:
        limits = self.limits
        if model.inflight >= limits.max_queue:
            raise Unavailable(f"model '{model.name}' has {model.inflight} requests waiting, its "
                              "limit; try again later")
        elements = sum(tensor.data.size for tensor in request.inputs)
        if elements > limits.max_tensor_elements:
            raise InvalidInput(f"the request has {elements} tensor elements, over the limit of "
                               f"{limits.max_tensor_elements}")
        request.model_name = model.name
        model.inflight += 1
        try:
            if limits.request_timeout:
                async with asyncio.timeout(limits.request_timeout):
                    return await self._infer(model, request)
            return await self._infer(model, request)
        except TimeoutError:
            raise Timeout(f"model '{model.name}' did not answer within "
                          f"{limits.request_timeout:g}s") from None
        finally:
            model.inflight -= 1

    async def _infer(self, model: Model, request: InferRequest) -> InferResponse:
        try:
            request = model.preprocess(request)
            batcher = self._batcher(model)
            if batcher is None:
                response = await self._execute(model, request)
            else:
                outputs = await batcher.submit(request)
                response = model.make_response(InferResponse(outputs), request)
            return model.postprocess(response)
        except ServingError:
            raise
        except Exception as exc:
            log.exception("model '%s' failed", model.name)
            raise ModelFailed(f"model '{model.name}' failed: {type(exc).__name__}: {exc}") from None

    async def _execute(self, model: Model, request: InferRequest) -> InferResponse:
        """One predict call: inline, in a worker thread, or awaited, as the model prefers."""
        started = time.perf_counter()
        if model.predict_in_thread:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self.executor, model.predict, request)
        else:
            result = model.predict(request)
        if inspect.isawaitable(result):
            result = await result
        rows = request.inputs[0].data.shape[:1] if request.inputs else ()
        seconds, rows = time.perf_counter() - started, rows[0] if rows else 1
        metrics.record_inference(model.name, rows, seconds)
        stats.record_execution(model.name, rows, seconds)
        return model.make_response(result, request)

    def _batcher(self, model: Model) -> Batcher | None:
        if model.max_batch_size <= 0:
            return None
        batcher = self._batchers.get(model)
        if batcher is None:
            batcher = Batcher(model.name, model.max_batch_size, model.max_batch_delay,
                              lambda request: self._execute(model, request))
            self._batchers[model] = batcher
        return batcher

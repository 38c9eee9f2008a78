"""How the data plane runs one served model version: admission (its queue limit and the tensor
limit), the deadline, the in-flight count, preprocess, batching or a lone framework call in the
model's own threads, postprocess, and the stage timestamps of every request."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from math import ceil
from time import perf_counter
from typing import Any, Protocol

from ..errors import InvalidInput, ModelFailed, ModelNotReady, ServingError, Timeout, Unavailable
from ..model import Model, Route
from ..ops.cpus import available_cpus
from ..ops.metrics import ModelMetrics
from ..protocol import content_types, v2json
from ..types import InferRequest, InferResponse, Reply, RouteRequest
from .batching import Batcher, run_alone
from .call import Call
from .stats import ModelStats

log = logging.getLogger(__name__)


class Codec(Protocol):
    """A transport's codec for one request: its body to an InferRequest, and the response to
    what the transport sends."""

    def decode(self, model: Model) -> InferRequest: ...

    def encode(self, response: InferResponse) -> Any: ...


class Runner:
    def __init__(self, model: Model, metrics: ModelMetrics, max_tensor_elements: int):
        self.model = model
        self.name = model.name
        self.version = model.version
        self.settings = settings = model.settings
        self.metrics = metrics
        self.stats = ModelStats()
        self.max_tensor_elements = max_tensor_elements
        self.inflight = 0  # requests inside now; unloading waits for them
        self.running: dict[object, float] = {}  # calls in the model's threads: their starts
        self.finished = float("-inf")  # when the last such call returned
        self.warming = False  # warmup requests are counted nowhere
        # A pool of the model's own (sized as the standard pool, from the CPUs the container
        # has rather than the node's): a model whose predict hangs holds only its own threads.
        self.pool_size = min(32, ceil(available_cpus()) + 4)
        self.executor = (ThreadPoolExecutor(self.pool_size, f"predict-{model.name}")
                         if model.predict_in_thread else None)
        self.batcher = (Batcher(settings.batch_rows, settings.max_batch_delay, self._execute,
                                self._executed)
                        if settings.batch_rows > 0 else None)
        # The base class's preprocess and postprocess return their argument: skipped.
        self._preprocess = _overridden(model, "preprocess")
        self._postprocess = _overridden(model, "postprocess")

    # -- inference ------------------------------------------------------------------------------
    async def infer(self, call: Call, codec: Codec) -> Any:
        """Decode, run and encode one request within the model's limits and deadline."""
        self._admit()
        self.inflight += 1
        try:
            call.decoding = perf_counter()
            request = codec.decode(self.model)
            typed = content_types.decode(request)  # MLServer's codecs' requests
            if request.outputs:
                self.model.name_outputs(request)
            self._check_size(request)
            request.model_name = self.name
            response = await self._within_deadline(self._predict(request, call))
            if typed:
                content_types.mark(response)
            reply = codec.encode(response)
            call.encoded = perf_counter()
            return reply
        finally:
            self.inflight -= 1

    async def _predict(self, request: InferRequest, call: Call) -> InferResponse:
        model = self.model
        try:
            if self._preprocess is not None:
                request = await _maybe_await(self._preprocess(request))
            call.queued = perf_counter()
            if self.batcher is not None:
                # Selected and named for this request already, as make_response selects them.
                outputs = await self.batcher.submit(request, call)
                response = InferResponse(outputs, model.name, model.version, request.id)
            else:
                response = await run_alone(self._execute, self._executed, request, call)
            if self._postprocess is not None:
                response = await _maybe_await(self._postprocess(response))
            return response
        except ServingError:
            raise
        except Exception as exc:
            raise self._failed(exc) from None

    async def _execute(self, request: InferRequest) -> InferResponse:
        """One framework call: inline, in the model's threads, or awaited, as it prefers."""
        result = await self._call(self.model.predict, request)
        return self.model.make_response(result, request)

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        if self.executor is not None:
            result = await asyncio.get_running_loop().run_in_executor(
                self.executor, self._timed, function, args)
        else:
            result = function(*args)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _timed(self, function: Callable[..., Any], args: tuple) -> Any:
        """In a model thread: `function(*args)`, known to be running while it runs (a request
        that timed out stops waiting for it; the thread does not stop)."""
        token = object()
        self.running[token] = perf_counter()
        try:
            return function(*args)
        finally:
            del self.running[token]
            self.finished = perf_counter()

    def stuck(self) -> str | None:
        """Why the model cannot serve, if calls in its threads hang: every thread holds a call
        past the request deadline, or (batching, one call at a time) the batch call has run
        past it while nothing else finished. New requests would only wait for nothing."""
        timeout = self.settings.request_timeout_seconds
        now = perf_counter()
        # A call that finished within the deadline rules both out (and keeps this cheap for
        # every request while calls come and go).
        if not timeout or now - self.finished < timeout:
            return None
        running = self.running.copy()  # one step under the GIL, though threads change it
        overdue = [started for started in running.values() if now - started > timeout]
        if not overdue:
            return None
        if len(overdue) < self.pool_size and (self.batcher is None
                                              or self.finished > min(overdue)):
            return None
        return (f"calls of its framework have run for up to {now - min(overdue):.0f}s without "
                "finishing")

    def _executed(self, rows: int, merge: float, infer: float, split: float) -> None:
        if self.warming:
            return
        self.stats.execution(rows, merge, infer, split)
        self.metrics.batch_rows.observe(rows)

    # -- warmup ---------------------------------------------------------------------------------
    async def warm_up(self) -> None:
        """Run the model's warmup requests (settings.warmup) through this runner, as requests
        run (preprocess, batching, its threads, postprocess), counted nowhere. Request bodies
        given in the settings must succeed; requests made from the model's example may not (a
        model may refuse zeros): the first user then pays instead."""
        warmup = self.settings.warmup
        if not warmup:
            return
        given = isinstance(warmup, tuple)
        self.warming = True
        try:
            for number in range(1, (len(warmup) if given else warmup) + 1):
                try:
                    request = (v2json.decode_request(warmup[number - 1]) if given
                               else self.model.example_request())
                    if request is None:
                        log.info("model '%s' declares no inputs: no warmup", self.name)
                        return
                    request.model_name = self.name
                    await self._within_deadline(self._predict(request, Call("", "", "")))
                except ServingError as exc:
                    if given:
                        raise ValueError(f"warmup request {number} failed: {exc.message}") \
                            from None
                    log.info("model '%s': a warmup request made from its metadata failed (%s); "
                             "list warmup requests in its settings.json", self.name, exc.message)
                    return
            log.info("model '%s' warmed up (%d request(s))", self.name, number)
        finally:
            self.warming = False

    # -- custom routes --------------------------------------------------------------------------
    async def route(self, call: Call, route: Route, body: bytes, headers: dict[str, str]) -> Reply:
        """A model method's own route; an inference route runs like an infer request, with the
        handler's `request.run(...)` as its inference stage."""
        handler = getattr(self.model, route.handler)
        if not route.inference:
            return await handler(RouteRequest(body, headers, self._call))
        self._admit()
        self.inflight += 1
        try:
            call.decoding = perf_counter()
            request = RouteRequest(body, headers, partial(self._run_for, call))
            try:
                reply = await self._within_deadline(handler(request))
            except (ServingError, TimeoutError):
                raise
            except Exception as exc:
                raise self._failed(exc) from None
            call.encoded = perf_counter()
            return reply
        finally:
            self.inflight -= 1

    async def _run_for(self, call: Call, function: Callable[..., Any], *args: Any) -> Any:
        call.queued = call.running = perf_counter()
        try:
            result = await self._call(function, *args)
        except ServingError:
            raise
        except Exception as exc:
            raise self._failed(exc) from None
        call.ran = perf_counter()
        self._executed(1, 0.0, call.ran - call.running, 0.0)
        return result

    # -- limits ---------------------------------------------------------------------------------
    def _admit(self) -> None:
        if self.running and (reason := self.stuck()):
            raise ModelNotReady(self.name, reason)
        if self.inflight >= self.settings.max_queue_size:
            raise Unavailable(f"model '{self.name}' has {self.inflight} requests waiting, its "
                              "limit; try again later")

    def _check_size(self, request: InferRequest) -> None:
        elements = sum(tensor.data.size for tensor in request.inputs)
        if elements > self.max_tensor_elements:
            raise InvalidInput(f"the request has {elements} tensor elements, over the limit of "
                               f"{self.max_tensor_elements}")

    async def _within_deadline(self, work: Awaitable[Any]) -> Any:
        timeout = self.settings.request_timeout_seconds
        if not timeout:
            return await work
        try:
            async with asyncio.timeout(timeout):
                return await work
        except TimeoutError:
            raise Timeout(f"model '{self.name}' did not answer within {timeout:g}s") from None

    def _failed(self, exc: Exception) -> ModelFailed:
        log.error("model '%s' failed", self.name, exc_info=exc)
        return ModelFailed(f"model '{self.name}' failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False)


def _overridden(model: Model, method: str) -> Callable[[Any], Any] | None:
    own = getattr(type(model), method)
    return None if own is getattr(Model, method) else getattr(model, method)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value

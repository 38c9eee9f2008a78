"""Framework calls: one request alone, or concurrent requests to a row-wise model merged along
the first dimension (dynamic batching).

A batch is whatever queued while the previous one ran, and while the event loop stayed busy
after it (plus up to `max_batch_delay` of waiting, when set), so a lone request is never held
back. Only requests whose inputs agree in name, dtype and every dimension but the first are
merged, and only if they carry no parameters. If a merged call fails, its requests run one by
one, so a bad request fails alone.

Each framework call sets the `running`/`ran` timestamps of the calls it serves and reports
itself once to `executed(rows, merge, infer, split)` (seconds), for the statistics."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import numpy as np

from ..types import InferRequest, InferResponse, Tensor
from .call import Call

Execute = Callable[[InferRequest], Awaitable[InferResponse]]
Executed = Callable[[int, float, float, float], None]
# After a call, the batcher keeps yielding to the event loop while the loop is busy (reading,
# parsing, accepting gRPC calls), so requests already on their way join the next batch. grpc.aio
# takes in one call per loop turn, so its calls arrive spread over many turns: settling took gRPC
# iris at c=64 from 2,900 to 5,000-5,500 req/s here, and RandomForest at c=8 from 1,400 to 1,550.
# Two quiet turns in a row (an idle turn takes 3-5 µs), a full batch or SETTLE_LIMIT end it; at
# low load the loop is quiet at once.
QUIET_TURN = 15e-6
QUIET_TURNS = 2
SETTLE_LIMIT = 0.002


async def run_alone(execute: Execute, executed: Executed, request: InferRequest,
                    call: Call) -> InferResponse:
    """One request, one framework call."""
    call.running = perf_counter()
    response = await execute(request)
    call.ran = perf_counter()
    executed(rows_of(request), 0.0, call.ran - call.running, 0.0)
    return response


def rows_of(request: InferRequest) -> int:
    shape = request.inputs[0].data.shape if request.inputs else ()
    return shape[0] if shape else 1


@dataclass(slots=True)
class _Pending:
    request: InferRequest
    call: Call
    key: Any
    rows: int
    future: asyncio.Future


def batch_key(request: InferRequest) -> tuple[Any, int] | None:
    """What must match for requests to merge, and this request's rows; None if it can't."""
    if request.parameters:
        return None
    rows = None
    parts = []
    for tensor in request.inputs:
        shape = tensor.data.shape
        if not shape or (rows is not None and shape[0] != rows):
            return None
        rows = shape[0]
        parts.append((tensor.name, tensor.datatype, tensor.data.dtype, shape[1:]))
    outputs = request.outputs
    if rows is None or (outputs is not None and any(o.parameters for o in outputs)):
        return None
    names = None if outputs is None else tuple((o.name, o.answer_as) for o in outputs)
    return (tuple(parts), names), rows


class Batcher:
    def __init__(self, max_rows: int, delay: float, execute: Execute, executed: Executed):
        self.max_rows = max_rows
        self.delay = delay
        self.execute = execute
        self.executed = executed
        self.pending: deque[_Pending] = deque()
        self.pending_rows = 0  # their rows, kept as they come and go
        self.drainer: asyncio.Task | None = None

    async def submit(self, request: InferRequest, call: Call) -> list[Tensor]:
        keyed = batch_key(request)
        if keyed is None or keyed[1] >= self.max_rows:
            return (await run_alone(self.execute, self.executed, request, call)).outputs
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append(_Pending(request, call, keyed[0], keyed[1], future))
        self.pending_rows += keyed[1]
        if self.drainer is None:
            self.drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.pending:
                if self.delay and self.pending_rows < self.max_rows:
                    await asyncio.sleep(self.delay)
                await self._run(self._take())
                await self._settle()
        finally:
            self.drainer = None

    async def _settle(self) -> None:
        deadline = perf_counter() + SETTLE_LIMIT
        quiet = 0
        while quiet < QUIET_TURNS and self.pending_rows < self.max_rows:
            turn = perf_counter()
            if turn > deadline:
                return
            await asyncio.sleep(0)
            quiet = quiet + 1 if perf_counter() - turn < QUIET_TURN else 0

    def _take(self) -> list[_Pending]:
        """The oldest request, and the later ones that can merge with it, up to max_rows."""
        first = self.pending.popleft()
        batch, rows, rest = [first], first.rows, deque()
        while self.pending:
            item = self.pending.popleft()
            if item.key == first.key and rows + item.rows <= self.max_rows:
                batch.append(item)
                rows += item.rows
            else:
                rest.append(item)
        self.pending = rest
        self.pending_rows -= rows
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        if len(batch) > 1 and await self._run_merged(batch):
            return
        for item in batch:  # alone, or one by one after a merged call failed
            try:
                response = await run_alone(self.execute, self.executed, item.request, item.call)
                _resolve(item.future, response.outputs)
            except Exception as exc:
                if not item.future.done():
                    item.future.set_exception(exc)

    async def _run_merged(self, batch: list[_Pending]) -> bool:
        started = perf_counter()
        first = batch[0].request
        inputs = [
            _concat(tensor, [item.request.inputs[i].data for item in batch])
            for i, tensor in enumerate(first.inputs)
        ]
        merged = InferRequest(inputs, outputs=first.outputs, model_name=first.model_name)
        running = perf_counter()
        try:
            response = await self.execute(merged)
        except Exception:
            return False
        ran = perf_counter()
        parts = _split(response.outputs, [item.rows for item in batch])
        if parts is None:  # not row-wise after all
            return False
        for item, outputs in zip(batch, parts):
            item.call.running, item.call.ran = running, ran
            _resolve(item.future, outputs)
        self.executed(sum(item.rows for item in batch), running - started, ran - running,
                      perf_counter() - ran)
        return True


def _resolve(future: asyncio.Future, outputs: list[Tensor]) -> None:
    if not future.done():  # the client may have gone
        future.set_result(outputs)


def _concat(like: Tensor, arrays: list[np.ndarray]) -> Tensor:
    data = np.concatenate(arrays)
    return Tensor(like.name, like.datatype, list(data.shape), data, like.parameters)


def _split(outputs: list[Tensor], rows: list[int]) -> list[list[Tensor]] | None:
    total = sum(rows)
    bounds = np.cumsum(rows)[:-1]
    parts: list[list[Tensor]] = [[] for _ in rows]
    for tensor in outputs:
        if tensor.data.ndim == 0 or tensor.data.shape[0] != total:
            return None
        for part, piece in zip(parts, np.split(tensor.data, bounds)):
            part.append(Tensor(tensor.name, tensor.datatype, list(piece.shape), piece,
                               tensor.parameters))
    return parts

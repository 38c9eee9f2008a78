"""Dynamic batching: concurrent requests to one model merged along the first dimension.

A batch is whatever queued while the previous one ran, and while the event loop stayed busy
after it (plus up to `max_batch_delay` of waiting, when set), so a lone request is never held
back. Only requests whose inputs agree in name, dtype and every dimension but the first are
merged, and only if they carry no parameters. If a merged call fails, its requests run one by
one, so a bad request fails alone."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ops import metrics
from . import stats
from ..types import InferRequest, InferResponse, Tensor

Execute = Callable[[InferRequest], Awaitable[InferResponse]]
# After a call, the batcher keeps yielding to the event loop while the loop is busy (reading,
# parsing, accepting gRPC calls), so requests already on their way join the next batch. grpc.aio
# takes in one call per loop turn, so its calls arrive spread over many turns: settling took gRPC
# iris at c=64 from 2,900 to 5,000-5,500 req/s here, and RandomForest at c=8 from 1,400 to 1,550.
# Two quiet turns in a row (an idle turn takes 3-5 µs), a full batch or SETTLE_LIMIT end it; at
# low load the loop is quiet at once.
QUIET_TURN = 15e-6
QUIET_TURNS = 2
SETTLE_LIMIT = 0.002


@dataclass(slots=True)
class _Pending:
    request: InferRequest
    key: Any
    rows: int
    future: asyncio.Future
    enqueued: float


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
    names = None if outputs is None else tuple(o.name for o in outputs)
    return (tuple(parts), names), rows


class Batcher:
    def __init__(self, model: str, max_rows: int, delay: float, execute: Execute):
        self.model = model
        self.max_rows = max_rows
        self.delay = delay
        self.execute = execute
        self.pending: deque[_Pending] = deque()
        self.drainer: asyncio.Task | None = None

    async def submit(self, request: InferRequest) -> list[Tensor]:
        keyed = batch_key(request)
        if keyed is None or keyed[1] >= self.max_rows:
            return (await self.execute(request)).outputs
        future = asyncio.get_running_loop().create_future()
        self.pending.append(_Pending(request, keyed[0], keyed[1], future, time.perf_counter()))
        if self.drainer is None:
            self.drainer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.pending:
                if self.delay and self._rows() < self.max_rows:
                    await asyncio.sleep(self.delay)
                await self._run(self._take())
                await self._settle()
        finally:
            self.drainer = None

    async def _settle(self) -> None:
        deadline = time.perf_counter() + SETTLE_LIMIT
        quiet = 0
        while quiet < QUIET_TURNS and self._rows() < self.max_rows:
            turn = time.perf_counter()
            if turn > deadline:
                return
            await asyncio.sleep(0)
            quiet = quiet + 1 if time.perf_counter() - turn < QUIET_TURN else 0

    def _rows(self) -> int:
        return sum(item.rows for item in self.pending)

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
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        for item in batch:
            metrics.record_queue(self.model, started - item.enqueued)
            stats.record_queue(self.model, started - item.enqueued)
        if len(batch) > 1:
            parts = await self._run_merged(batch)
            if parts is not None:
                for item, outputs in zip(batch, parts):
                    _resolve(item.future, outputs)
                return
        for item in batch:  # alone, or one by one after a merged call failed
            try:
                _resolve(item.future, (await self.execute(item.request)).outputs)
            except Exception as exc:
                if not item.future.done():
                    item.future.set_exception(exc)

    async def _run_merged(self, batch: list[_Pending]) -> list[list[Tensor]] | None:
        first = batch[0].request
        inputs = [
            _concat(tensor, [item.request.inputs[i].data for item in batch])
            for i, tensor in enumerate(first.inputs)
        ]
        merged = InferRequest(inputs, outputs=first.outputs, model_name=first.model_name)
        try:
            response = await self.execute(merged)
        except Exception:
            return None
        return _split(response.outputs, [item.rows for item in batch])


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
            return None  # not row-wise after all
        for part, piece in zip(parts, np.split(tensor.data, bounds)):
            part.append(Tensor(tensor.name, tensor.datatype, list(piece.shape), piece,
                               tensor.parameters))
    return parts

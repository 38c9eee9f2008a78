"""Bounded gRPC load: `concurrency` callers on grpc.aio, each sending one unary call after
another for `seconds`. Reports req/s, p50 and p99 like loadgen.

The request is serialized once and the reply is not parsed, so the client spends its time on
the calls themselves; only loopback targets are used."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc import aio

from loadgen import Result

MAX_MESSAGE = 256 * 1024 * 1024


def run(target: str, method: str, request: bytes, concurrency: int, seconds: float,
        processes: int = 1) -> Result:
    """`processes` > 1 splits the callers over that many client processes."""
    if processes <= 1:
        return asyncio.run(_load(target, method, request, concurrency, seconds))
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    share = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    with context.Pool(processes) as pool:
        parts = pool.starmap(_run_one, [(target, method, request, c, seconds) for c in share])
    latencies = sorted(x for part in parts for x in part[2])
    return _result(sum(p[0] for p in parts), max(p[1] for p in parts),
                   sum(p[3] for p in parts), latencies)


def _run_one(target, method, request, concurrency, seconds):
    return asyncio.run(_load(target, method, request, concurrency, seconds, raw=True))


async def _load(target: str, method: str, request: bytes, concurrency: int, seconds: float,
                raw: bool = False):
    options = [("grpc.max_send_message_length", MAX_MESSAGE),
               ("grpc.max_receive_message_length", MAX_MESSAGE)]
    async with aio.insecure_channel(target, options=options) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        await call(request, timeout=30)  # warm the connection
        latencies: list[float] = []
        errors = 0
        started = time.perf_counter()
        deadline = started + seconds

        async def caller() -> None:
            nonlocal errors
            clock = time.perf_counter
            while True:
                sent = clock()
                if sent >= deadline:
                    return
                try:
                    await call(request, timeout=30)
                except grpc.RpcError:
                    errors += 1
                    continue
                latencies.append(clock() - sent)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if raw:
        return len(latencies), elapsed, latencies, errors
    latencies.sort()
    return _result(len(latencies), elapsed, errors, latencies)


def _result(requests: int, elapsed: float, errors: int, latencies: list[float]) -> Result:
    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000

    return Result(requests=requests, seconds=elapsed, errors=errors, p50_ms=pct(0.5),
                  p99_ms=pct(0.99))

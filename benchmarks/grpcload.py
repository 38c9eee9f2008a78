"""Bounded gRPC load: `concurrency` unary calls in flight for `seconds` on one connection (as
tritonclient and perf_analyzer keep one channel). Reports req/s, p50 and p99 like loadgen.

h2load (nghttp2) when installed, as loadgen prefers wrk: a C client leaves the server the CPU
that a Python one would take on a small machine. h2load sees HTTP/2 statuses, not gRPC's, so
one call is checked through grpc first. Else `concurrency` callers on grpc.aio, each sending
one call after another. The request is serialized once and replies are not parsed; only
loopback targets are used."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
from grpc import aio

from loadgen import Result

MAX_MESSAGE = 256 * 1024 * 1024


def run(target: str, method: str, request: bytes, concurrency: int, seconds: float,
        processes: int = 1) -> Result:
    """`processes` > 1 splits the Python callers over that many client processes."""
    if shutil.which("h2load"):
        return _h2load(target, method, request, concurrency, seconds)
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


def _h2load(target: str, method: str, request: bytes, concurrency: int,
            seconds: float) -> Result:
    with grpc.insecure_channel(target) as channel:  # fails loudly if the call itself fails
        channel.unary_unary(method, request_serializer=None,
                            response_deserializer=None)(request, timeout=30)
    with tempfile.TemporaryDirectory() as tmp:
        body, log = Path(tmp) / "body", Path(tmp) / "log"
        # gRPC framing: not compressed, then the message length, big-endian.
        body.write_bytes(b"\0" + len(request).to_bytes(4, "big") + request)
        out = subprocess.run(
            ["h2load", "-c", "1", "-m", str(concurrency), "-D", str(max(1, round(seconds))),
             "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body),
             f"--log-file={log}", f"http://{target}{method}"],
            capture_output=True, text=True, timeout=seconds + 60).stdout
        rows = [line.split("\t") for line in log.read_text().splitlines()]
    ok = sorted(int(row[2]) / 1e6 for row in rows if row[1] == "200")
    elapsed = float(out.split("finished in ", 1)[1].split("s,", 1)[0])
    return _result(len(ok), elapsed, len(rows) - len(ok), ok)


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

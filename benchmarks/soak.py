"""`make soak`: mixed valid and invalid traffic at concurrency 64, RSS sampled throughout.

Valid requests must all succeed; invalid ones must all get their 4xx. Beside them, hostile
clients: some close every connection with a TCP reset after their answer (as load balancers and
killed clients do), one sends request heads larger than the server takes (431). The server's
resident memory after a warm-up is compared with the end. Bounded in time; loopback only."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROW = [6.8, 2.8, 4.8, 1.4]

# (method, path, body, expected status); the body of a valid request is checked too.
TRAFFIC = [
    ("POST", "/v1/models/iris:predict", json.dumps({"instances": [ROW] * 3}), 200),
    ("POST", "/v2/models/iris/infer", json.dumps({"id": "s", "inputs": [
        {"name": "input-0", "datatype": "FP32", "shape": [2, 4], "data": ROW * 2}]}), 200),
    ("GET", "/v2/models/iris", "", 200),
    ("GET", "/v2/health/ready", "", 200),
    ("POST", "/v2/models/iris/infer", "{not json", 400),
    ("POST", "/v2/models/iris/infer", json.dumps({"inputs": [
        {"name": "input-0", "datatype": "FP32", "shape": [3, 4], "data": ROW}]}), 400),
    ("POST", "/v1/models/iris:predict", json.dumps({"instances": [[1, 2]]}), 400),
    ("POST", "/v1/models/missing:predict", json.dumps({"instances": [ROW]}), 404),
    ("GET", "/v2/models/iris/infer", "", 405),
    ("POST", "/v2/models/iris/infer", json.dumps({"inputs": [
        {"name": "input-0", "datatype": "BYTES", "shape": [1], "data": ["x" * 5000]}]}), 400),
]


HUGE_HEAD = b"X-Huge: " + b"h" * (256 * 1024) + b"\r\n"  # four times the default limit


@dataclass
class Tally:
    sent: int = 0
    valid_failed: int = 0
    invalid_mishandled: int = 0
    resets: int = 0
    huge_heads_refused: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    rss_mb: list[float] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def client(host: str, port: int, deadline: float, tally: Tally, rng: random.Random):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < deadline:
            method, path, body, expected = rng.choice(TRAFFIC)
            payload = body.encode()
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                         f"application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                         + payload)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            answer = await reader.readexactly(length)
            tally.sent += 1
            tally.by_status[status] = tally.by_status.get(status, 0) + 1
            if status != expected:
                if expected == 200:
                    tally.valid_failed += 1
                else:
                    tally.invalid_mishandled += 1
            elif status != 200 and not answer.startswith(b'{"error":'):
                tally.invalid_mishandled += 1
    finally:
        writer.close()


def _request(host: str, method: str, path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + extra + b"\r\n" + body


async def resetting_client(host: str, port: int, deadline: float, tally: Tally) -> None:
    """One valid request per connection, then a TCP reset instead of a close."""
    _, path, body, _ = TRAFFIC[0]
    request = _request(host, "POST", path, body.encode())
    while time.monotonic() < deadline:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        if not (await reader.readline()).startswith(b"HTTP/1.1 200"):
            tally.valid_failed += 1
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        tally.resets += 1


async def huge_head_client(host: str, port: int, deadline: float, tally: Tally) -> None:
    """Request heads over the server's limit: each must get 431, not be read in full."""
    request = _request(host, "GET", "/v2/health/live", b"", HUGE_HEAD)
    while time.monotonic() < deadline:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        try:
            status = await reader.readline()
        except ConnectionResetError:  # refused before the whole head was even sent
            status = b"HTTP/1.1 431"
        if status.startswith(b"HTTP/1.1 431"):
            tally.huge_heads_refused += 1
        else:
            tally.invalid_mishandled += 1
        writer.transport.abort()


async def sample_rss(pid: int, deadline: float, tally: Tally) -> None:
    while time.monotonic() < deadline:
        tally.rss_mb.append(rss_mb(pid))
        await asyncio.sleep(1)


async def soak(host: str, port: int, pid: int, seconds: float, concurrency: int) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    rng = random.Random(0)
    await asyncio.gather(sample_rss(pid, deadline, tally),
                         *(client(host, port, deadline, tally, random.Random(rng.random()))
                           for _ in range(concurrency)),
                         *(resetting_client(host, port, deadline, tally) for _ in range(4)),
                         huge_head_client(host, port, deadline, tally))
    return tally


def report(tally: Tally, seconds: float, warmup: int) -> dict:
    steady = tally.rss_mb[warmup:] or tally.rss_mb
    return {"requests": tally.sent, "req_per_s": round(tally.sent / seconds),
            "valid_failed": tally.valid_failed, "invalid_mishandled": tally.invalid_mishandled,
            "resets": tally.resets, "huge_heads_refused": tally.huge_heads_refused,
            "statuses": dict(sorted(tally.by_status.items())),
            "rss_start_mb": round(steady[0], 1), "rss_end_mb": round(steady[-1], 1),
            "rss_max_mb": round(max(tally.rss_mb), 1)}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench import free_port, start_server

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    port = free_port()
    server = start_server(port, REPO / "examples" / "sklearn-iris", "iris")
    try:
        tally = asyncio.run(soak("127.0.0.1", port, server.pid, args.seconds, args.concurrency))
    finally:
        server.terminate()
        server.wait(30)
    print(json.dumps(report(tally, args.seconds, warmup=5), indent=1))


if __name__ == "__main__":
    main()

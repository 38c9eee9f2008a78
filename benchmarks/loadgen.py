"""Bounded HTTP load: wrk when installed, else a small asyncio client. Reports req/s, p50, p99.

Each run lasts `seconds` and stops by itself; only loopback targets are used."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

WRK_SCRIPT = """
wrk.method = "{method}"
wrk.headers["Content-Type"] = "{content_type}"
{extra_headers}
local f = io.open("{body_path}", "rb")
wrk.body = f:read("*all")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {{"requests": %d, "seconds": %f, "errors": %d, '
    .. '"p50_ms": %f, "p99_ms": %f}}\\n', summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


@dataclass
class Result:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run(url: str, body: bytes, concurrency: int, seconds: float,
        headers: dict[str, str] | None = None, method: str = "POST") -> Result:
    if shutil.which("wrk"):
        return _wrk(url, body, concurrency, seconds, headers or {}, method)
    return asyncio.run(_python_load(url, body, concurrency, seconds, headers or {}, method))


def _wrk(url, body, concurrency, seconds, headers, method) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body"
        body_path.write_bytes(body)
        content_type = headers.pop("Content-Type", "application/json")
        extra = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        script = Path(tmp) / "load.lua"
        script.write_text(WRK_SCRIPT.format(method=method, content_type=content_type,
                                            extra_headers=extra, body_path=body_path))
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
             "-s", str(script), url],
            capture_output=True, text=True, timeout=seconds + 60,
        ).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT "))
    return Result(**json.loads(line[len("RESULT "):]))


async def _python_load(url, body, concurrency, seconds, headers, method) -> Result:
    parts = urlsplit(url)
    head = [f"{method} {parts.path} HTTP/1.1", f"Host: {parts.netloc}",
            f"Content-Length: {len(body)}", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            errors += not status.startswith(b"HTTP/1.1 2")
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    pick = (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000)
    return Result(len(latencies), elapsed, errors, pick(0.5) if latencies else 0,
                  pick(0.99) if latencies else 0)
